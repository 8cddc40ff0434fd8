"""A night street's sensor grain (engine/stages/detectors/noise.py): file mode also looks at a noisy frame smoothed.

Real faces: the dev clip's last 75 frames with Gaussian noise (sigma 8, new every frame), as a robustness sweep made
them (stop 36). A dark woman half cut by the right edge from frame 211 scores 0.63 on the clean clip and 0.04 under
the noise: without the smoothed look 56 of her face-frames went out in the sweep, from her first (35 here).
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

from engine.stages.detectors.noise import NOISY_SIGMA, noise_sigma
from tests.conftest import REPO, score_independently

FIRST = 200  # the clip from this frame on: the woman appears at 211


def _noisy_copy(source: Path, out: Path, sigma: float, first: int = 0) -> int:
    """`source` from frame `first`, with fresh Gaussian noise on every frame (seeded), x264 at crf 12."""
    cap = cv2.VideoCapture(str(source))
    width, height = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    fps = cap.get(cv2.CAP_PROP_FPS)
    encoder = subprocess.Popen(["ffmpeg", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "bgr24", "-s",
                                f"{width}x{height}", "-r", f"{fps}", "-i", "pipe:0", "-c:v", "libx264", "-crf", "12",
                                "-pix_fmt", "yuv420p", str(out)], stdin=subprocess.PIPE)
    rng = np.random.default_rng(8)
    index = written = 0
    while (read := cap.read())[0]:
        if index >= first:
            grain = rng.normal(0.0, sigma, read[1].shape)
            encoder.stdin.write(np.clip(read[1] + grain, 0, 255).astype(np.uint8).tobytes())
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
