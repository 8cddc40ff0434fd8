"""File-mode detector CPU a frame, this code against the code it replaced, interleaved frame by frame in one process.

    python bench/detector_ab.py CLIP [CLIP ...] [--frames 8] [--rounds 2] [--parts flip,nms,reuse,coverage]

Each frame of each clip is detected as file mode detects it (every 1080p tile, the mirrored main pass, the
second look) twice in turn: once with the replaced code (numpy's copy of the mirrored frame, the plain NMS
loop, the mirrored frame resized again for the mirrored pass, a tile's boxes checked one by one), once with
this code, alternating, so that both meet the same load on a shared machine. Reported: CPU ms a frame of the
whole process (onnxruntime's pool thread included), mean, median and worst, and whether both gave the very
same detections. `--parts` picks which replacements are switched (one at a time shows each one's share); the
parts not picked run this code in both.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

log = logging.getLogger("bench")


def _numpy_copy(image: np.ndarray) -> np.ndarray:
    """`yunet._derived` as it was: numpy's copy, 8.7 ms CPU for a mirrored 1080p view."""
    return np.ascontiguousarray(image)[:]


def _one_by_one(boxes: np.ndarray, others: np.ndarray) -> np.ndarray:
    """`yunet._coverage` as it was: `_covered_by` called for each box."""
    from engine.stages.detectors import yunet

    return np.array([yunet._covered_by(box, others) for box in boxes])


def switch(new: bool, parts: set[str]) -> None:
    from engine.stages import detect
    from engine.stages.detectors import yunet

    switch.saved = getattr(switch, "saved", (yunet._derived, detect.SWEEP_FROM, yunet._flip_commutes, yunet._coverage))
    derived, sweep_from, flip_commutes, coverage = switch.saved
    old = {part for part in parts if not new}
    yunet._derived = _numpy_copy if "flip" in old else derived
    detect.SWEEP_FROM = 10**9 if "nms" in old else sweep_from  # 10**9: the plain loop only
    yunet._flip_commutes = (lambda *size: False) if "reuse" in old else flip_commutes  # the mirrored frame resized
    yunet._coverage = _one_by_one if "coverage" in old else coverage


def run(clip: Path, frames: int, rounds: int, parts: set[str]) -> dict:
    import cv2

    from engine.config import Settings
    from engine.pipeline import FILE_TILE_CYCLE
    from engine.stages.detectors import yunet

    # One detector each: a detector keeps state from frame to frame (the second look's places looked at in vain),
    # so each must see every frame once, in order, for their detections to be comparable.
    detectors = {label: yunet.create(Settings()) for label in ("before", "after")}
    for detector in detectors.values():
        detector.tiles, detector.second_look, detector.tile_cycle = True, True, FILE_TILE_CYCLE
    cap = cv2.VideoCapture(str(clip))
    images = [image for image in (cap.read()[1] for _ in range(frames)) if image is not None]
    cpu: dict[str, list[float]] = {"before": [], "after": []}
    same = True
    for round_ in range(rounds + 1):  # the first round warms up (sessions, anchor grids) and is not counted
        for image in images:
            found = {}
            for label, detector in detectors.items():
                switch(label == "after", parts)
                started = time.process_time()
                found[label] = detector.detect(image, 0.2)
                if round_:
                    cpu[label].append((time.process_time() - started) * 1000)
            same &= all(np.array_equal(getattr(found["before"], k), getattr(found["after"], k))
                        for k in ("xyxy", "score", "landmarks"))
    switch(True, parts)
    return {label: {"mean": round(float(np.mean(v)), 1), "median": round(float(np.median(v)), 1),
                    "worst": round(float(np.max(v)), 1)} for label, v in cpu.items()} | {"same_detections": same}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("clips", nargs="+", type=Path)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--parts", default="flip,nms,reuse,coverage")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for clip in args.clips:
        log.info("%s [%s]: %s", clip.name, args.parts, run(clip, args.frames, args.rounds, set(args.parts.split(","))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
