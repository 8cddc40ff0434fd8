"""What weak-face starts cost and buy: false blurs and leaks for one REPEAT_START_SCORE, in-process.

    python bench/false_blurs.py 0.3      (1.01 turns weak starts off)

Every corpus clip but the dev clip through the pipeline at default settings. A false blur is a blurred box
touching no annotated face (WIDER FACE leaves some faces unannotated, so its counts are an upper bound); a
leak is an annotated face left visible by the scorer's measure (evaluation/video.py).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import engine.stages.track as track
from bench import suite
from engine.config import Settings
from engine.pipeline import Pipeline
from evaluation.video import face_visibility

log = logging.getLogger("false_blurs")


def _touches(box: np.ndarray, faces: list[np.ndarray]) -> bool:
    return any(min(box[2], g[2]) > max(box[0], g[0]) and min(box[3], g[3]) > max(box[1], g[1]) for g in faces)


def _leaks(original: np.ndarray, output: np.ndarray, faces: list[dict]) -> tuple[int, int]:
    grey_in, grey_out = cv2.cvtColor(original, cv2.COLOR_BGR2GRAY), cv2.cvtColor(output, cv2.COLOR_BGR2GRAY)
    leaked = scored = 0
    for face in faces:
        x1, y1, x2, y2 = (round(v) for v in face["box"])
        x1, y1 = max(0, x1), max(0, y1)
        if face["ignore"] or x2 - x1 < 10 or y2 - y1 < 10:
            continue
        scored += 1
        leaked += face_visibility(grey_in[y1:y2, x1:x2], grey_out[y1:y2, x1:x2]) >= 0.5
    return leaked, scored


def measure(clip: suite.Clip) -> dict:
    by_frame: dict[int, list[dict]] = {}
    for face in json.loads(clip.gt.read_text())["faces"]:
        by_frame.setdefault(face["frame"], []).append(face)
    pipeline = Pipeline(Settings(backend="onnxruntime"))
    pipeline.offline = True
    cap = cv2.VideoCapture(str(suite.prepared(clip, suite.CACHE)))
    counts = {"frames": 0, "false_blurs": 0, "leaked": 0, "scored": 0}
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        index = counts["frames"]
        safe, report = pipeline.process(frame.copy(), index, 1 / 30)
        faces = by_frame.get(index, [])
        boxes = [np.array(f["box"]) for f in faces]
        counts["false_blurs"] += sum(not _touches(np.array(f.xyxy), boxes) for f in report.faces)
        leaked, scored = _leaks(frame, safe.image, faces)
        counts["leaked"] += leaked
        counts["scored"] += scored
        counts["frames"] += 1
    pipeline.close()
    return counts


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    track.REPEAT_START_SCORE = float(sys.argv[1]) if len(sys.argv) > 1 else track.REPEAT_START_SCORE
    total = {"frames": 0, "false_blurs": 0, "leaked": 0, "scored": 0}
    for clip in suite.corpus():
        if "hamilton" in clip.name:
            continue
        counts = measure(clip)
        log.info("%s %s", clip.name, counts)
        total = {k: total[k] + counts[k] for k in total}
    log.info("REPEAT_START_SCORE %s total %s", track.REPEAT_START_SCORE, total)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
