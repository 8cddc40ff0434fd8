"""Live mode's false blurs for two weak-candidate reaches (engine/stages/track.py CANDIDATE_DRIFT), in-process.

    python bench/live_false_blurs.py SUBSTR [SUBSTR ...]      (corpus clips whose name contains one)

Each clip through the live pipeline (tiles in turn, no second look, no corroborated starts; a 5 s deadline so
that a loaded machine does not blur whole frames), once per drift, clip by clip: tracked boxes blurred that touch
no annotated face, of all tracked boxes blurred.
"""

from __future__ import annotations

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
from engine.stages import track

log = logging.getLogger("live_false_blurs")
DRIFTS = (0.0, 0.1)


def run(clip: suite.Clip) -> tuple[int, int]:
    """(false blurs, tracked boxes blurred) of the clip in live mode."""
    gt = {}
    for f in json.loads(clip.gt.read_text())["faces"]:
        gt.setdefault(f["frame"], []).append(np.array(f["box"]))
    p = Pipeline(Settings(backend="onnxruntime", deadline_ms=5000))
    cap = cv2.VideoCapture(str(suite.prepared(clip, suite.CACHE)))
    false = boxes = i = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        _, rep = p.process(frame, i, 1/30)
        for f in rep.faces:
            if f.visible:
                continue
            boxes += 1
            b = f.xyxy
            false += not any(min(b[2], g[2]) > max(b[0], g[0]) and min(b[3], g[3]) > max(b[1], g[1])
                             for g in gt.get(i, []))
        i += 1
    p.close()
    return false, boxes


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    totals = {d: [0, 0] for d in DRIFTS}
    for clip in suite.corpus(sys.argv[1:]):
        for drift in DRIFTS:
            track.CANDIDATE_DRIFT = drift
            false, boxes = run(clip)
            totals[drift][0] += false
            totals[drift][1] += boxes
            log.info("%-40s drift %.1f false %4d of %5d", clip.name[:40], drift, false, boxes)
    log.info("TOTAL %s", totals)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
