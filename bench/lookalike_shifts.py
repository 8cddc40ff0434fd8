"""The look-alike of walking-and-pause over one-pixel shifts of the clip, per backend of the stream's detector.

    python bench/lookalike_shifts.py [--backends onnxruntime,auto]

tests/test_recognition.py's scenario (the man enrolled from his soft GIF frame, every face embedded every frame,
the live pipeline's rules): how many bystander face-frames are left visible, and the share of the man's frames
shown, with the clip shifted by 0-2 px nine ways. Pixel noise alone moves such counts; the tail over the shifts is
what decided whether `auto` may put the stream's YuNet on OpenVINO bf16 (engine/models/backends.py, OPENVINO_AUTO).
`auto` here is the code's own choice; `onnxruntime` forces it for every network.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engine.config import Settings  # noqa: E402
from engine.pipeline import Pipeline  # noqa: E402
from engine.recognition.gallery import Gallery  # noqa: E402
from engine.recognition.identify_facebank import FacebankIdentifier, Policy  # noqa: E402
from engine.recognition.recognize import create_embedder, create_landmarker  # noqa: E402
from evaluation.recognition import default_data_dir  # noqa: E402
from tests.helpers import pairwise_iou  # noqa: E402

log = logging.getLogger("lookalike_shifts")
GT = REPO / "bench" / "corpus" / "intel_face-demographics-walking-and-pause.gt.json"
SHIFTS = [(0, 0), (1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (-1, -1), (2, 0), (0, 2)]


def _label(box: np.ndarray, faces: list[dict]) -> str:
    """The ground-truth label of the face the box overlaps most (IoU > 0.3, as the test), else "none"."""
    if not faces:
        return "none"
    ious = pairwise_iou(box[None].astype(np.float32), np.asarray([f["box"] for f in faces], np.float32))[0]
    best = int(np.argmax(ious))
    return faces[best]["label"] if ious[best] > 0.3 else "none"


def run(frames: list[np.ndarray], gt: dict, settings: Settings, shift: tuple[int, int]) -> dict:
    landmarker = create_landmarker(settings)
    enrol = gt["enrol"]  # enrolled from the clip as it is; the stream is then shifted
    found = landmarker.detector.refine(frames[enrol["frame"]], np.asarray(enrol["box"], np.float32))
    face = landmarker.align(frames[enrol["frame"]], found.xyxy[0], found.landmarks[0])
    gallery = Gallery.from_people({"man": create_embedder(settings).embed_aligned(face[None])})
    identifier = FacebankIdentifier(create_embedder(settings), lambda: gallery, Policy(budget_per_frame=4.0, burst=8))
    pipeline = Pipeline(settings, identifier=identifier)
    truth: dict[int, list[dict]] = defaultdict(list)
    for f in gt["faces"]:
        truth[f["frame"]].append(f)
    man, bystanders = [], []
    dx, dy = shift
    for index, frame in enumerate(frames):
        pipeline.process(np.roll(frame, (dy, dx), axis=(0, 1)), index, 1 / gt["fps"])
        for track in pipeline.tracker.tracks:
            box = track.xyxy - np.array([dx, dy, dx, dy], np.float32)
            label = _label(box, truth[index]) if track.lost_frames == 0 else "lost"
            visible = track.identity.visible and track.lost_frames == 0
            (man if label == "allow" else bystanders if label == "bystander" else []).append(visible)
    detector = pipeline.detector.runner_name
    pipeline.close()
    return {"shift": shift, "detector": detector, "bystander_frames_visible": int(sum(bystanders)),
            "man_visible": round(float(np.mean(man)), 3)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="onnxruntime,auto")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    gt = json.loads(GT.read_text())
    video = default_data_dir() / "video_unannotated" / gt["video"]
    if not video.exists():
        log.error("corpus clip not found at %s (set BLURCAST_DATA)", video)
        return 2
    capture = cv2.VideoCapture(str(video))
    frames = [capture.read()[1] for _ in range(gt["frames"])]
    for backend in args.backends.split(","):
        rows = [run(frames, gt, Settings(backend=backend), shift) for shift in SHIFTS]
        for row in rows:
            log.info("%-12s %s", backend, json.dumps(row))
        counts = [r["bystander_frames_visible"] for r in rows]
        log.info("%-12s bystander face-frames visible per shift %s (mean %.1f, max %d); man visible mean %.3f",
                 backend, counts, np.mean(counts), max(counts), np.mean([r["man_visible"] for r in rows]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
