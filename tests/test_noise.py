"""A night street's sensor grain (engine/noise.py): file mode also looks at a noisy frame smoothed, and every path
smooths a grainy face before embedding it.

Real faces: the dev clip's last 75 frames with Gaussian noise (sigma 8, new every frame), as a robustness sweep made
them (stop 36). A dark woman half cut by the right edge from frame 211 scores 0.63 on the clean clip and 0.04 under
the noise: without the smoothed look 56 of her face-frames went out in the sweep, from her first (35 here). The
whole clip at night (every value x0.35, then sigma-8 grain): the performer was shown in 77 % of his face-frames,
100 % since his grainy faces are smoothed before they are embedded (stop 37).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from engine.config import Settings
from engine.faces import box_iou
from engine.noise import NOISY_SIGMA, face_noise_sigma, noise_sigma
from engine.recognition.recognize import align_face, create_embedder, create_landmarker, sharpness
from facebank.enrol import Enroller
from tests.conftest import PERFORMER_PHOTO, REPO, need_data, score_independently

FIRST = 200  # the clip from this frame on: the woman appears at 211


def _noisy_copy(source: Path, out: Path, sigma: float, first: int = 0, gain: float = 1.0, seed: int = 8) -> int:
    """`source` from frame `first`, times `gain`, with fresh Gaussian noise on every frame (seeded), x264 at crf 12."""
    cap = cv2.VideoCapture(str(source))
    width, height = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    fps = cap.get(cv2.CAP_PROP_FPS)
    encoder = subprocess.Popen(["ffmpeg", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "bgr24", "-s",
                                f"{width}x{height}", "-r", f"{fps}", "-i", "pipe:0", "-c:v", "libx264", "-crf", "12",
                                "-pix_fmt", "yuv420p", str(out)], stdin=subprocess.PIPE)
    rng = np.random.default_rng(seed)
    index = written = 0
    while (read := cap.read())[0]:
        if index >= first:
            grain = rng.normal(0.0, sigma, read[1].shape)
            encoder.stdin.write(np.clip(read[1] * gain + grain, 0, 255).astype(np.uint8).tobytes())
            written += 1
        index += 1
    encoder.stdin.close()
    assert encoder.wait() == 0
    return written


@pytest.mark.skipif(not shutil.which("ffmpeg"), reason="needs ffmpeg")
def test_a_face_in_sensor_grain_is_hidden_from_its_first_frame(dev_clip, dev_gt, tmp_path):
    clip, gt = tmp_path / "grain.mp4", tmp_path / "grain.gt.json"
    frames = _noisy_copy(dev_clip, clip, 8.0, FIRST)
    whole = json.loads(dev_gt.read_text())
    faces = [{**face, "frame": face["frame"] - FIRST} for face in whole["faces"] if face["frame"] >= FIRST]
    gt.write_text(json.dumps({**whole, "frames": frames, "faces": faces}))
    out = tmp_path / "out.mp4"
    done = subprocess.run([sys.executable, "-m", "blurcast", "run", str(clip), "-o", str(out), "--no-facebank"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    report = score_independently(clip, out, gt, tmp_path)
    # 35 of her face-frames went out without the smoothed look (measured with NOISY_SIGMA set out of reach); 5 now,
    # in one run: better, not yet the bar (docs/measurements.md, stop 36)
    figures = {key: report[key] for key in ("bystander_visible", "worst_leak_run", "worst_leak_track")}
    assert report["bystander_visible"] <= 6 and report["worst_leak_run"] <= 6, figures


def test_the_grain_is_measured_and_a_clean_frame_is_not_called_noisy(dev_clip):
    frame = cv2.VideoCapture(str(dev_clip)).read()[1]
    assert noise_sigma(frame) < 1.0
    grain = np.random.default_rng(1).normal(0.0, 8.0, frame.shape)
    noisy = np.clip(frame + grain, 0, 255).astype(np.uint8)
    # sigma 8 in each colour reads as about 5 in grey (0.67 of it: the channels' noise averages), less where a dark
    # frame clips it at black
    assert 4.0 < noise_sigma(noisy) < 5.5
    assert noise_sigma(noisy) > NOISY_SIGMA > noise_sigma(frame)
    assert noise_sigma(np.zeros((2, 2, 3), np.uint8)) == 0.0, "too small to measure: not noisy"


def _at_night(frame: np.ndarray, seed: int) -> np.ndarray:
    """A night street as the sweep made it: every value x0.35, then Gaussian grain of sigma 8."""
    grain = np.random.default_rng(seed).normal(0.0, 8.0, frame.shape)
    return np.clip(frame * 0.35 + grain, 0, 255).astype(np.uint8)


def test_a_grainy_face_is_smoothed_before_it_is_embedded_and_matches_the_streamer_better(dev_clip, dev_gt):
    """Every path aligns through `Landmarker.align`: a clean face is embedded as it is, a grainy one smoothed, which
    brings a small performer at night nearer his clean photo (the sweep's wide shot, 43 px: 0.28 -> 0.35)."""
    need_data(PERFORMER_PHOTO)
    settings = Settings()
    landmarker, embedder = create_landmarker(settings), create_embedder(settings)
    photo = Enroller(settings).enrol(PERFORMER_PHOTO).embedding
    truth = json.loads(dev_gt.read_text())["faces"]
    his = {f["frame"]: f["box"] for f in truth if f["label"] == "allow" and not f.get("ignore")}
    capture, frames = cv2.VideoCapture(str(dev_clip)), {}
    index = 0
    while (read := capture.read())[0]:
        if index in his and index % 3 == 0:
            frames[index] = read[1]
        index += 1
    raw_cos, smooth_cos = [], []
    for index, frame in frames.items():
        box = np.asarray(his[index], np.float32)
        found = landmarker.detector.detect(frame, 0.5)
        j = int(np.argmax([box_iou(b, box) for b in found.xyxy])) if len(found) else -1
        if j < 0 or box_iou(found.xyxy[j], box) < 0.3:
            continue
        clean = landmarker.align(frame, found.xyxy[j], found.landmarks[j])
        assert face_noise_sigma(frame, found.xyxy[j]) < NOISY_SIGMA
        np.testing.assert_array_equal(clean, align_face(frame, landmarker(frame, found.xyxy[j], found.landmarks[j])))
        night = _at_night(frame, index)
        assert face_noise_sigma(night, found.xyxy[j]) > NOISY_SIGMA
        marks = landmarker(night, found.xyxy[j], found.landmarks[j])
        raw = align_face(night, marks)
        smoothed, sharp = landmarker.align_and_measure(night, found.xyxy[j], found.landmarks[j])
        assert sharp == sharpness(raw), "sharpness is measured before the smoothing: the enrolment bar's measure"
        raw_cos.append(float(embedder.embed_aligned(raw[None])[0] @ photo))
        smooth_cos.append(float(embedder.embed_aligned(smoothed[None])[0] @ photo))
    assert len(raw_cos) >= 30
    raw_cos, smooth_cos = np.array(raw_cos), np.array(smooth_cos)
    # measured: his 50 faces at night 0.475 on average unsmoothed, 0.502 smoothed; better in 38 of 50
    assert smooth_cos.mean() >= raw_cos.mean() + 0.015, (raw_cos.mean(), smooth_cos.mean())
    assert (smooth_cos > raw_cos).mean() >= 0.55


@pytest.mark.skipif(not shutil.which("ffmpeg"), reason="needs ffmpeg")
def test_the_streamer_stays_visible_at_night(dev_clip, dev_gt, tmp_path):
    """The whole dev clip at night, the performer enrolled from his clean photo: shown in 100 % of his face-frames
    with this grain (77 % before his grainy faces were smoothed for recognition; 5 other seeds: 83-93 -> 96-100 %).
    Its bystander leak is the dark woman's (a detection miss, docs/measurements.md stop 36), not asserted here."""
    need_data(PERFORMER_PHOTO)
    clip = tmp_path / "night.mp4"
    _noisy_copy(dev_clip, clip, 8.0, gain=0.35, seed=1)
    out = tmp_path / "out.mp4"
    done = subprocess.run([sys.executable, "-m", "blurcast", "run", str(clip), "-o", str(out), "--no-facebank",
                           "--allow", str(PERFORMER_PHOTO)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    report = score_independently(clip, out, dev_gt, tmp_path)
    assert report["allow_visible"] >= 0.95, report["allow_visible"]

