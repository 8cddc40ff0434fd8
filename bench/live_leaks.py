"""Bystander leaks of the live pipeline on corpus clips, per backend, in-process and every frame in order.

    python bench/live_leaks.py [--backends onnxruntime,auto] [--shifts 9] SUBSTR [SUBSTR ...]   (clips named so)

Live mode's detection (tiles in turn, no second look, no look-ahead, no corroborated starts) with a 5 s deadline, so
that a loaded machine blurs no whole frame and drops none: what differs between backends is the detections alone.
Each output frame is scored against the clip's ground truth as `evaluation/video.py` does (face visibility >= its bar).
`--shifts N` runs each clip N times, moved by 0-2 px (np.roll, the output rolled back before scoring): pixel noise
alone moves a crowd's count, so two backends are compared by their spread over the shifts, not by one run.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import suite
from engine.config import Settings
from engine.pipeline import Pipeline
from evaluation.video import _score_face

log = logging.getLogger("live_leaks")


SHIFTS = [(0, 0), (1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (-1, -1), (2, 0), (0, 2)]


def run(clip: suite.Clip, backend: str, shift: tuple[int, int] = (0, 0)) -> dict:
    gt: dict[int, list[dict]] = {}
    for face in json.loads(clip.gt.read_text())["faces"]:
        gt.setdefault(face["frame"], []).append(face)
    pipeline = Pipeline(Settings(backend=backend, deadline_ms=5000))
    cap = cv2.VideoCapture(str(suite.prepared(clip, suite.CACHE)))
    leaked = faces = index = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        raw = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        dx, dy = shift
        safe, _ = pipeline.process(np.roll(frame, (dy, dx), axis=(0, 1)), index, 1 / 30)
        out = cv2.cvtColor(np.roll(safe.image, (-dy, -dx), axis=(0, 1)), cv2.COLOR_BGR2GRAY)
        for face in gt.get(index, []):
            if face.get("label") == "allow":
                continue
            visible, _ = _score_face(raw, out, face)
            if visible is None:
                continue
            faces += 1
            leaked += bool(visible)
        index += 1
    runner = pipeline.detector.runner_name
    pipeline.close()
    return {"leaked": leaked, "faces": faces, "frames": index, "detector": runner}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="onnxruntime,auto")
    parser.add_argument("--shifts", type=int, default=1, help="runs per clip and backend, each moved 0-2 px")
    parser.add_argument("only", nargs="+")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for clip in suite.corpus(args.only):
        for backend in args.backends.split(","):
            counts = []
            for shift in SHIFTS[: args.shifts]:
                result = run(clip, backend, shift)
                counts.append(result["leaked"])
                log.info("%-40s %-12s %s %s", clip.name, backend, shift, json.dumps(result))
            if args.shifts > 1:
                log.info("%-40s %-12s leaked per shift %s: mean %.1f, max %d", clip.name, backend, counts,
                         np.mean(counts), max(counts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
