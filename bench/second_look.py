"""What file mode's extra looks find and cost, detector only: the mirrored main pass and the second look at
small weak boxes (engine/stages/detectors/yunet.py, second_look.py).

    python bench/second_look.py [--only SUBSTR] [--every 4] [--set NAME=VALUE ...]

Every `--every`-th frame of each corpus clip through the file-mode YuNet detector (all tiles) without and with
the extra looks (`second_look` off / on), interleaved in one process. Per clip: annotated faces (not ignored,
>= 10 px) with a box >= 0.5 at IoU >= 0.3 (found), boxes >= 0.5 touching no annotated face, ignored ones
included (false; WIDER leaves a few faces unannotated, so an upper bound), and detection ms per frame (a ratio
within one run: the machine is shared). `--set` overrides a module constant of detectors/yunet.py (e.g.
SECOND_LOOK_BUDGET=0.25).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import suite
from engine.config import Settings
from engine.faces import box_iou
from engine.stages.detectors import yunet
from evaluation.video import MIN_SIZE

log = logging.getLogger("second_look")
START = 0.5  # the default confidence: a box this strong starts a face at once


def score_frame(dets, faces: list[dict]) -> tuple[int, int, int]:
    """(found, scored, false) for one frame's detections against its annotated faces."""
    strong = dets.xyxy[dets.score >= START]
    scored = [f for f in faces
              if not f["ignore"] and min(f["box"][2] - f["box"][0], f["box"][3] - f["box"][1]) >= MIN_SIZE]
    found = sum(any(box_iou(b, f["box"]) >= 0.3 for b in strong) for f in scored)
    false = sum(not any(min(b[2], g[2]) > max(b[0], g[0]) and min(b[3], g[3]) > max(b[1], g[1])
                        for g in (f["box"] for f in faces)) for b in strong)
    return found, len(scored), false


def measure(clip: suite.Clip, detector: yunet.YuNetDetector, every: int) -> dict[str, list[float]]:
    by_frame: dict[int, list[dict]] = defaultdict(list)
    for face in json.loads(clip.gt.read_text())["faces"]:
        by_frame[face["frame"]].append(face)
    cap = cv2.VideoCapture(str(suite.prepared(clip, suite.CACHE)))
    totals: dict[str, list[float]] = {"off": [0, 0, 0, 0.0], "on": [0, 0, 0, 0.0]}
    index = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        if index % every == 0:
            for mode in ("off", "on") if index % (2 * every) else ("on", "off"):
                detector.second_look = mode == "on"
                started = time.perf_counter()
                dets = detector.detect(frame, 0.2)
                ms = (time.perf_counter() - started) * 1000
                for k, v in enumerate((*score_frame(dets, by_frame.get(index, [])), ms)):
                    totals[mode][k] += v
        index += 1
    return totals


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append")
    parser.add_argument("--every", type=int, default=4)
    parser.add_argument("--set", action="append", default=[])
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for item in args.set:
        name, value = item.split("=", 1)
        setattr(yunet, name, type(getattr(yunet, name))(value))
    detector = yunet.create(Settings(backend="onnxruntime"))
    detector.tiles, detector.tile_cycle = True, 1
    grand = {"off": np.zeros(4), "on": np.zeros(4)}
    for clip in suite.corpus(args.only):
        totals = measure(clip, detector, args.every)
        log.info("%-44s found %4d -> %4d of %4d | false %4d -> %4d | ms %7.0f -> %7.0f", clip.name[:44],
                 totals["off"][0], totals["on"][0], totals["off"][1], totals["off"][2], totals["on"][2],
                 totals["off"][3], totals["on"][3])
        for mode in grand:
            grand[mode] += np.array(totals[mode])
    log.info("%-44s found %4d -> %4d of %4d | false %4d -> %4d | ms %7.0f -> %7.0f", "total", grand["off"][0],
             grand["on"][0], grand["off"][1], grand["off"][2], grand["on"][2], grand["off"][3], grand["on"][3])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
