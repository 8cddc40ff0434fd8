"""File-mode recall options priced: leaked face-frames against detection CPU, each variant in turn, in-process.

    python bench/recall_price.py --variant base: --variant dw1920:detect_width=1920 \
        --variant budget1:yunet.SECOND_LOOK_BUDGET=1.0 [--only SUBSTR ...] [--photo-far 1.0 1.3]

A variant is `LABEL:NAME=VALUE,...`, each NAME a setting (engine/config.py) or a module constant written
`MODULE.CONST` (yunet, second_look, track, pipeline, lookahead), set for that variant only. Every clip goes
through the file-mode pipeline once per variant, the variants interleaved clip by clip (the machine is shared:
load then touches them alike), and its frames are replayed through the 8-frame look-ahead as `blurcast run`
does. Per variant: leaked face-frames and the longest leak run (the scorer's measure on the frames in memory,
evaluation/video.py), false blurs (boxes the pipeline or the look-ahead blurred touching no annotated face:
WIDER leaves faces unannotated, so an upper bound there), and detection CPU seconds (process CPU time while the
detector runs: the frame loop waits for it, so this is the detector's own threads, onnxruntime's included).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections import defaultdict
from concurrent.futures import wait
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import lookahead as replay_bench
from bench import suite
from engine import pipeline as pipeline_module
from engine.config import Settings
from engine.pipeline import Pipeline
from engine.stages import anonymize as anonymize_module
from engine.stages import lookahead as lookahead_module
from engine.stages import track as track_module
from engine.stages.detectors import second_look as second_look_module
from engine.stages.detectors import yunet as yunet_module

log = logging.getLogger("recall_price")
MODULES = {"yunet": yunet_module, "second_look": second_look_module, "track": track_module,
           "pipeline": pipeline_module, "lookahead": lookahead_module, "anonymize": anonymize_module}


def parse(spec: str) -> tuple[str, dict[str, str], dict[tuple[str, str], str]]:
    """`LABEL:NAME=VALUE,...` -> (label, settings, {(module, constant): value})."""
    label, _, rest = spec.partition(":")
    settings: dict[str, str] = {}
    constants: dict[tuple[str, str], str] = {}
    for item in filter(None, rest.split(",")):
        name, value = item.split("=", 1)
        if "." in name:
            module, const = name.split(".", 1)
            if not hasattr(MODULES[module], const):
                raise SystemExit(f"{module} has no {const}")
            constants[(module, const)] = value
        else:
            settings[name] = value
    return label, settings, constants


@contextmanager
def patched(constants: dict[tuple[str, str], str]):
    saved = {}
    try:
        for (module, const), value in constants.items():
            old = getattr(MODULES[module], const)
            saved[(module, const)] = old
            setattr(MODULES[module], const, type(old)(float(value)) if isinstance(old, int | float) else value)
        yield
    finally:
        for (module, const), old in saved.items():
            setattr(MODULES[module], const, old)


def process(clip: suite.Clip, settings: Settings) -> tuple[list, list, list, float, float]:
    """(greys, safes, reports, detection CPU s, pipeline CPU s) of the clip in file mode."""
    pipeline = Pipeline(settings)
    pipeline.offline = True
    start = pipeline._start
    spent = [0.0]

    def timed(frame: np.ndarray):
        """A frame's detection, waited for here: file mode detects on other threads (detectors/parallel.py), and
        the process's CPU while this thread waits is theirs. Timing `detector.detect` counted nothing there."""
        started = time.process_time()
        future = start(frame)
        wait([future])
        spent[0] += time.process_time() - started
        return future

    pipeline._start = timed
    cap = cv2.VideoCapture(str(suite.prepared(clip, suite.CACHE)))
    greys, safes, reports = [], [], []
    total = 0.0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        greys.append(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY))
        started = time.process_time()
        safe, report = pipeline.process(frame, len(safes), 1 / 30)
        total += time.process_time() - started
        safes.append(safe)
        reports.append(report)
    pipeline.close()
    return greys, safes, reports, spent[0], total


def _touches(box, faces: list[dict]) -> bool:
    return any(min(box[2], g[2]) > max(box[0], g[0]) and min(box[3], g[3]) > max(box[1], g[1])
               for g in (f["box"] for f in faces))


def measure(clip: suite.Clip, settings: Settings, constants: dict) -> dict:
    by_frame: dict[int, list[dict]] = defaultdict(list)
    for face in json.loads(clip.gt.read_text())["faces"]:
        by_frame[face["frame"]].append(face)
    with patched(constants):
        greys, safes, reports, detect_cpu, cpu = process(clip, settings)
        row = replay_bench.replay(lookahead_module.FILE_LOOKAHEAD_FRAMES, greys, safes, reports, by_frame,
                                  settings)
    false = sum(not _touches(f.xyxy, by_frame.get(r.index, [])) for r in reports for f in r.faces if not f.visible)
    return {"leaked": row["leaked"], "scored": row["scored"], "worst_run": row["worst_run"],
            "false": false + row["false_backfills"], "detect_cpu": detect_cpu, "cpu": cpu, "frames": len(safes)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", action="append", required=True)
    parser.add_argument("--only", action="append")
    parser.add_argument("--photo-far", nargs=2, type=float, metavar=("FROM", "TO"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    variants = [parse(v) for v in args.variant]
    totals: dict[str, dict] = {label: defaultdict(float) for label, _, _ in variants}
    rows = []
    for clip in suite.corpus(args.only, tuple(args.photo_far) if args.photo_far else None):
        for label, changes, constants in variants:
            settings = Settings(backend="onnxruntime").updated(changes)
            row = {"clip": clip.name, "variant": label, **measure(clip, settings, constants)}
            rows.append(row)
            log.info("%-40s %-12s leaked %4d/%-5d run %2d false %5d detect CPU %6.1f s (%4.0f ms/frame) all %6.1f s",
                     clip.name[-40:], label, row["leaked"], row["scored"], row["worst_run"], row["false"],
                     row["detect_cpu"], 1000 * row["detect_cpu"] / max(row["frames"], 1), row["cpu"])
            t = totals[label]
            for k in ("leaked", "scored", "false", "detect_cpu", "cpu", "frames"):
                t[k] += row[k]
            t["worst_run"] = max(t["worst_run"], row["worst_run"])
    base = next(iter(totals.values()))
    for label, t in totals.items():
        log.info("TOTAL %-12s leaked %5d/%-6d worst run %2d false %6d detect CPU %7.1f s (x%.2f) all %7.1f s (x%.2f)",
                 label, t["leaked"], t["scored"], t["worst_run"], t["false"], t["detect_cpu"],
                 t["detect_cpu"] / max(base["detect_cpu"], 1e-9), t["cpu"], t["cpu"] / max(base["cpu"], 1e-9))
    if args.json:
        args.json.write_text(json.dumps({"variants": args.variant, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
