"""What the look-ahead backfill buys and costs, for several buffer lengths N, in-process.

    python bench/lookahead.py [--n 0 4 6 8 12] [--only SUBSTR] [--set NAME=VALUE ...] [--growth 0.1]
    python bench/lookahead.py --tile-cycle 6 ...   (file mode's tile cadence to try; 6 is live mode's)
    python bench/lookahead.py --weak-back 8 ...    (how far back a face never seen confidently is hidden)

Every corpus clip (bench/suite.py) goes once through the pipeline at the given settings; its anonymized frames
and reports are then replayed through `Lookahead(N)` for each N (the backfill depends only on them). Per N:
leaked face-frames and the longest leak run of one annotated face (the scorer's measure, evaluation/video.py,
on the frames in memory: no encoding), and backfilled boxes that touch no annotated face (false blurs; WIDER
FACE leaves some faces unannotated, so an upper bound).
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import suite
from engine import pipeline as pipeline_module
from engine.config import Settings
from engine.pipeline import Pipeline
from engine.stages import lookahead as lookahead_module
from engine.stages.anonymize import Anonymizer, SafeFrame
from engine.stages.lookahead import Lookahead
from evaluation.video import face_visibility

log = logging.getLogger("lookahead")


class _Recording(Anonymizer):
    """The real anonymizer, noting every backfilled box per frame index."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.drawn: dict[int, list[np.ndarray]] = defaultdict(list)

    def backfill(self, safe: SafeFrame, boxes, keep=()) -> SafeFrame:
        boxes = list(boxes)
        self.drawn[safe.index] += boxes
        return super().backfill(safe, boxes, keep)


def _touches(box: np.ndarray, faces: list[dict]) -> bool:
    return any(min(box[2], g[2]) > max(box[0], g[0]) and min(box[3], g[3]) > max(box[1], g[1])
               for g in (f["box"] for f in faces))


def process(clip: suite.Clip, settings: Settings) -> tuple[list[np.ndarray], list[SafeFrame], list]:
    """(grey originals, anonymized frames, reports) of every frame of the clip."""
    pipeline = Pipeline(settings)
    pipeline.offline = True
    cap = cv2.VideoCapture(str(suite.prepared(clip, suite.CACHE)))
    greys, safes, reports = [], [], []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        greys.append(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY))
        safe, report = pipeline.process(frame, len(safes), 1 / 30)
        safes.append(safe)
        reports.append(report)
    pipeline.close()
    return greys, safes, reports


def replay(n: int, greys, safes, reports, by_frame: dict[int, list[dict]], settings: Settings) -> dict:
    anonymizer = _Recording(settings)
    lookahead = Lookahead(n, weak_frames=lookahead_module.WEAK_BACK_FRAMES)  # as file mode holds them
    copies = [s.copy() for s in safes]
    out: list[SafeFrame] = []
    for safe, report in zip(copies, reports, strict=True):
        out += [s for s, _ in lookahead.push(safe, report, anonymizer)]
    out += [s for s, _ in lookahead.flush()]
    leaked, scored, runs = 0, 0, defaultdict(int)
    worst = 0
    for index, safe in enumerate(out):
        grey_out = cv2.cvtColor(safe.image, cv2.COLOR_BGR2GRAY)
        seen = set()
        for face in by_frame.get(index, []):
            x1, y1, x2, y2 = (round(v) for v in face["box"])
            x1, y1 = max(0, x1), max(0, y1)
            if face["ignore"] or x2 - x1 < 10 or y2 - y1 < 10:
                continue
            scored += 1
            if face_visibility(greys[index][y1:y2, x1:x2], grey_out[y1:y2, x1:x2]) >= 0.5:
                leaked += 1
                seen.add(face["track"])
                runs[face["track"]] += 1
                worst = max(worst, runs[face["track"]])
        for track in [t for t in runs if t not in seen]:
            runs[track] = 0
    false = sum(not _touches(box, by_frame.get(i, [])) for i, boxes in anonymizer.drawn.items() for box in boxes)
    return {"leaked": leaked, "scored": scored, "worst_run": worst, "backfilled": lookahead.backfilled,
            "false_backfills": false}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, nargs="+", default=[0, 4, 6, 8, 12])
    parser.add_argument("--only", action="append")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--growth", type=float, help="GROWTH_PER_FRAME to try (each side, per frame back)")
    parser.add_argument("--tile-cycle", type=int, help="file mode's FILE_TILE_CYCLE to try")
    parser.add_argument("--weak-back", type=int, help="lookahead.WEAK_BACK_FRAMES to try (weak faces' reach back)")
    args = parser.parse_args(argv)
    if args.weak_back is not None:
        lookahead_module.WEAK_BACK_FRAMES = args.weak_back
    if args.tile_cycle is not None:
        pipeline_module.FILE_TILE_CYCLE = args.tile_cycle
    if args.growth is not None:
        lookahead_module.GROWTH_PER_FRAME = args.growth
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    settings = Settings(backend="onnxruntime").updated(dict(kv.split("=", 1) for kv in args.set))
    totals: dict[int, dict] = {n: defaultdict(int) for n in args.n}
    for clip in suite.corpus(args.only):
        by_frame: dict[int, list[dict]] = defaultdict(list)
        for face in json.loads(clip.gt.read_text())["faces"]:
            by_frame[face["frame"]].append(face)
        greys, safes, reports = process(clip, settings)
        for n in args.n:
            row = replay(n, greys, safes, reports, by_frame, settings)
            log.info("%-44s N=%-2d leaked %4d/%-5d worst run %2d  backfilled %5d  false %5d", clip.name[:44], n,
                     row["leaked"], row["scored"], row["worst_run"], row["backfilled"], row["false_backfills"])
            for k, v in row.items():
                totals[n][k] = max(totals[n][k], v) if k == "worst_run" else totals[n][k] + v
    for n, t in totals.items():
        log.info("TOTAL N=%-2d leaked %d/%d worst run %d backfilled %d false %d", n, t["leaked"], t["scored"],
                 t["worst_run"], t["backfilled"], t["false_backfills"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
