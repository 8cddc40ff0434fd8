"""Live mode's leaks and false blurs under variants of the pipeline's constants, in-process, every frame in order.

    python bench/live_variants.py [--variant NAME:module.ATTR=VALUE,...] SUBSTR [SUBSTR ...]

Each variant patches module constants (`pipeline.LIVE_SCENE_MOTION=0`, `track.REPEAT_START_SCORE=0.35`; modules
under engine/ and engine/stages/) before its pipeline is made; the variant `now:` is the code as it is. Every clip
whose name contains a SUBSTR goes through the live pipeline (tiles in turn, no second look, no look-ahead) with a
5 s deadline, so that a loaded machine blurs no whole frame and drops none: what differs is the variant alone.
Per clip and variant:
- leaked: bystander face-frames left visible, scored as `evaluation/video.py` does (visibility >= its bar);
- false blurs: tracked boxes blurred that touch no annotated face (on WIDER an upper bound: it leaves faces out);
  raw / false_raw: raw detections blurred on their own (no track's box yet), and those touching no annotated face.
`live.coast=1` coasts every other frame (live mode far behind: engine/pipeline.py) and holds one frame back, as the
runner does; `live.lookahead=N` holds N frames (the look-ahead slider); `live.drop=N` drops N frames after each one
kept (1: what live mode did far behind before coasting; 3: a live crowd, where the engine keeps ~8 fps of 30), each
frame kept counted for the N + 1 frame periods it stays on screen. `regions`: boxes anonymized a frame kept (mean).
Default variants: `before` (live as until stop 23: no corroborated starts, no scene motion) and `now`.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import suite
from engine.config import Settings
from engine.faces import FrameReport
from engine.pipeline import Pipeline
from engine.stages.anonymize import SafeFrame
from engine.stages.lookahead import Lookahead
from evaluation.video import _score_face

log = logging.getLogger("live_variants")
DEFAULT_VARIANTS = ["before:pipeline.LIVE_CORROBORATED_STARTS=0,pipeline.LIVE_SCENE_MOTION=0", "now:"]


LIVE_KNOBS = ("coast", "lookahead", "drop")  # live.KNOB=VALUE in a variant: run()'s own arguments


def parse_variant(text: str) -> tuple[str, list[tuple[str, str, float]]]:
    name, _, assignments = text.partition(":")
    patches = []
    for item in filter(None, assignments.split(",")):
        target, _, value = item.partition("=")
        module, _, attr = target.rpartition(".")
        patches.append((module, attr, float(value)))
    return name, patches


@contextmanager
def patched(patches: list[tuple[str, str, float]]):
    saved = []
    try:
        for module_name, attr, value in patches:
            if module_name == "live":
                continue  # run()'s own knobs
            module = _module(module_name)
            old = getattr(module, attr)  # a typo fails here, not silently
            saved.append((module, attr, old))
            setattr(module, attr, type(old)(value))
        yield
    finally:
        for module, attr, old in reversed(saved):
            setattr(module, attr, old)


def _module(name: str):
    for prefix in ("engine.", "engine.stages.", "engine.stages.detectors."):
        try:
            return importlib.import_module(prefix + name)
        except ModuleNotFoundError:
            continue
    raise ValueError(f"no module engine[.stages[.detectors]].{name}")


def run(clip: suite.Clip, coast: bool = False, lookahead: int = 0, drop: int = 0) -> dict:
    """`coast`: every other frame coasted (live mode far behind, engine/pipeline.py), which the runner pairs with
    a look-ahead of at least one frame; `lookahead`: frames held back before scoring, as the runner holds them;
    `drop`: frames dropped after each one processed, as a machine that keeps up with 1 in drop + 1 does: each frame
    processed is on screen for drop + 1 frame periods, so its face-frames count that often (leaked and in all)."""
    gt: dict[int, list[dict]] = {}
    for face in json.loads(clip.gt.read_text())["faces"]:
        gt.setdefault(face["frame"], []).append(face)
    pipeline = Pipeline(Settings(deadline_ms=5000, lookahead_frames=lookahead))
    pipeline.coast_alternate = coast
    held = Lookahead(max(lookahead, int(coast)))
    cap = cv2.VideoCapture(str(suite.prepared(clip, suite.CACHE)))
    figures = {"leaked": 0, "faces": 0, "false_blurs": 0, "blurred": 0, "frames": 0, "coasted": 0,
               "false_raw": 0, "raw": 0, "regions": 0}
    raws: dict[int, np.ndarray] = {}
    reports: dict[int, FrameReport] = {}
    index = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        if index % (drop + 1):
            index += 1
            continue
        raws[index] = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        safe, reports[index] = pipeline.process(frame, index, (drop + 1) / 30)
        for released, tag in held.push(safe, reports[index], pipeline.anonymizer, index):
            _score(released, raws.pop(tag), reports.pop(tag), gt.get(tag, []), figures, drop + 1)
        index += 1
    for released, tag in held.flush(pipeline.anonymizer):
        _score(released, raws.pop(tag), reports.pop(tag), gt.get(tag, []), figures, drop + 1)
    pipeline.close()
    figures["regions"] = round(figures["regions"] / max(figures["frames"], 1), 1)
    return figures


def _score(safe: SafeFrame, raw: np.ndarray, report: FrameReport, truth: list[dict], figures: dict,
           shown: int = 1) -> None:
    """`shown`: frame periods this output frame stays on screen (2 when the next frame was dropped)."""
    out = cv2.cvtColor(safe.image, cv2.COLOR_BGR2GRAY)
    figures["frames"] += 1
    figures["coasted"] += report.coasted
    figures["regions"] += len(report.faces) + len(report.unclaimed)
    for face in truth:
        if face.get("label") == "allow":
            continue
        visible, _ = _score_face(raw, out, face)
        if visible is not None:
            figures["faces"] += shown
            figures["leaked"] += shown * bool(visible)
    boxes = np.array([f["box"] for f in truth], np.float32).reshape(-1, 4)
    for f in report.faces:
        if f.visible:
            continue
        figures["blurred"] += 1
        b = f.xyxy
        figures["false_blurs"] += not _touches(b, boxes)
    for b in report.unclaimed:  # raw detections blurred on their own (no track's box): one-frame blurs
        figures["raw"] += 1
        figures["false_raw"] += not _touches(b, boxes)


def _touches(b, boxes: np.ndarray) -> bool:
    return bool(((np.minimum(b[2], boxes[:, 2]) > np.maximum(b[0], boxes[:, 0]))
                 & (np.minimum(b[3], boxes[:, 3]) > np.maximum(b[1], boxes[:, 1]))).any())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", action="append", help="NAME:module.ATTR=VALUE,... (repeatable)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("only", nargs="+")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    variants = [parse_variant(v) for v in (args.variant or DEFAULT_VARIANTS)]
    rows = []
    for clip in suite.corpus(args.only):
        for name, patches in variants:
            knobs = {attr: value for module, attr, value in patches if module == "live" and attr in LIVE_KNOBS}
            with patched(patches):
                result = run(clip, coast=bool(knobs.get("coast", 0)), lookahead=int(knobs.get("lookahead", 0)),
                             drop=int(knobs.get("drop", 0)))
            rows.append({"clip": clip.name, "variant": name, **result})
            log.info("%-55s %-8s %s", clip.name, name, json.dumps(result))
    for name, _ in variants:
        mine = [r for r in rows if r["variant"] == name]
        log.info("TOTAL %-8s leaked %d of %d face-frames, false blurs %d of %d blurred boxes, raw %d of %d", name,
                 sum(r["leaked"] for r in mine), sum(r["faces"] for r in mine),
                 sum(r["false_blurs"] for r in mine), sum(r["blurred"] for r in mine),
                 sum(r["false_raw"] for r in mine), sum(r["raw"] for r in mine))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
