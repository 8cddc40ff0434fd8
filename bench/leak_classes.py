"""Why each leaked face-frame leaked: every bystander face-frame left visible, classified, in-process.

    python bench/leak_classes.py [--only SUBSTR ...] [--set NAME=VALUE ...] [--const MODULE.CONST=VALUE ...] [--live]

Each clip goes through the file-mode pipeline with its 8-frame look-ahead replayed (as bench/recall_price.py,
the scorer's measure on the frames in memory). Every leaked face-frame (frame, annotated face) is put in one class:

- `covered`: a box blurred in that frame (a track's, a raw detection's or a backfill's) has IoU >= 0.3 with the
  face, yet it stays visible (too small or misplaced: the scorer counts a face whose half keeps its detail).
  Every row also gives `cover`, the fraction of the face's box under some blurred box (a neighbour's included).
- `late`: a track takes the face later but not yet; `gap` = frames to its start, `weak_gap` = frames since the
  face's first weak sighting (a detection >= the tracker's low bar at IoU >= 0.3): a backward cover reaching
  to the first weak sighting would hide those with weak_gap >= 0.
- `dropped`: a track held the face before this frame, none now.
- `weak`: detections >= the low bar touch the face in some frame, but no track ever takes it.
- `never`: no detection >= the low bar ever; probed at its median leaked frame (bench/misses.py: YuNet and
  CenterFace at 1x/2x, mirrored) for the best score any pass gives it.

A track "takes" a face in a frame when its box has IoU >= 0.3 with the face's box.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import lookahead as replay_bench
from bench import misses, recall_price, suite
from engine.config import Settings
from engine.faces import box_iou
from engine.pipeline import Pipeline
from engine.stages import lookahead as lookahead_module
from engine.stages.detectors import centerface, yunet
from evaluation.video import face_visibility

log = logging.getLogger("leak_classes")
TAKES_IOU = 0.3


LIVE = False  # --live: the live pipeline (tiles in turn, no second look, no look-ahead), every frame in order


def run_clip(clip: suite.Clip, settings: Settings) -> tuple[list, list, list, list, list]:
    """(greys, originals, anonymized frames, reports, raw detections per frame) in file mode (or live, `LIVE`)."""
    pipeline = Pipeline(settings)
    pipeline.offline = not LIVE
    finish = pipeline.detector.finish
    raw: list = []

    def recorded(*args, **kwargs):
        # `finish` ends every frame's detection: one frame at a time, or two at once in file mode (detect would
        # miss the latter: detectors/parallel.py calls the passes and `finish` directly).
        found = finish(*args, **kwargs)
        raw.append(found)
        return found

    pipeline.detector.finish = recorded
    cap = cv2.VideoCapture(str(suite.prepared(clip, suite.CACHE)))
    greys, frames, safes, reports = [], [], [], []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame.copy())
        greys.append(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY))
        safe, report = pipeline.process(frame, len(safes), 1 / 30)
        safes.append(safe)
        reports.append(report)
    pipeline.close()
    return greys, frames, safes, reports, raw


def replayed(greys, safes, reports, settings: Settings) -> tuple[list, dict[int, list[np.ndarray]]]:
    """The frames after the look-ahead, and the boxes it backfilled per frame."""
    anonymizer = replay_bench._Recording(settings)
    look = (lookahead_module.Lookahead(settings.lookahead_frames) if LIVE else
            lookahead_module.Lookahead(lookahead_module.FILE_LOOKAHEAD_FRAMES, lookahead_module.WEAK_BACK_FRAMES))
    out = []
    for safe, report in zip([s.copy() for s in safes], reports, strict=True):
        out += [s for s, _ in look.push(safe, report, anonymizer)]
    out += [s for s, _ in look.flush()]
    return out, anonymizer.drawn


def classify(clip: suite.Clip, settings: Settings, probes: tuple) -> list[dict]:
    by_frame: dict[int, list[dict]] = defaultdict(list)
    for face in json.loads(clip.gt.read_text())["faces"]:
        by_frame[face["frame"]].append(face)
    greys, frames, safes, reports, raw = run_clip(clip, settings)
    out, drawn = replayed(greys, safes, reports, settings)
    taken: dict[int, list[int]] = defaultdict(list)  # gt track -> frames a track takes it
    weak: dict[int, list[tuple[int, float]]] = defaultdict(list)  # gt track -> (frame, best raw score)
    leaks: list[tuple[int, dict]] = []
    for index, safe in enumerate(out):
        grey_out = cv2.cvtColor(safe.image, cv2.COLOR_BGR2GRAY)
        for face in by_frame.get(index, []):
            box = np.array(face["box"], np.float32)
            if any(box_iou(np.array(f.xyxy), box) >= TAKES_IOU for f in reports[index].faces):
                taken[face["track"]].append(index)
            scores = [float(s) for b, s in zip(raw[index].xyxy, raw[index].score, strict=True)
                      if box_iou(b, box) >= TAKES_IOU]
            if scores:
                weak[face["track"]].append((index, max(scores)))
            x1, y1, x2, y2 = (round(v) for v in face["box"])
            x1, y1 = max(0, x1), max(0, y1)
            if face["ignore"] or x2 - x1 < 10 or y2 - y1 < 10:
                continue
            if face_visibility(greys[index][y1:y2, x1:x2], grey_out[y1:y2, x1:x2]) >= 0.5:
                leaks.append((index, face))
    rows = []
    for index, face in leaks:
        rows.append(_row(clip, index, face, reports, drawn, taken[face["track"]], weak[face["track"]]))
    _probe_never(clip, frames, rows, probes)
    return rows


def _row(clip, index: int, face: dict, reports, drawn, taken: list[int], weak: list[tuple[int, float]]) -> dict:
    box = np.array(face["box"], np.float32)
    blurred = [np.array(f.xyxy) for f in reports[index].faces if not f.visible]
    blurred += [np.array(b) for b in reports[index].unclaimed] + list(drawn.get(index, []))
    row = {"clip": clip.name, "frame": index, "track": face["track"], "w": round(float(box[2] - box[0])),
           "best_weak": round(max((s for _, s in weak), default=0.0), 2)}
    first_weak = min((f for f, _ in weak), default=None)
    later = [f for f in taken if f > index]
    row["cover"] = round(_covered(box, blurred), 2)
    if any(box_iou(b, box) >= TAKES_IOU for b in blurred):
        row["class"] = "covered"
    elif later and not [f for f in taken if f < index]:
        row.update({"class": "late", "gap": min(later) - index,
                    "weak_gap": None if first_weak is None else index - first_weak})
    elif taken:
        row["class"] = "dropped"
    else:
        row["class"] = "weak" if weak else "never"
    return row


def _covered(box: np.ndarray, blurred: list[np.ndarray]) -> float:
    """The fraction of the face's box that some blurred box covers."""
    x1, y1 = int(box[0]), int(box[1])
    mask = np.zeros((max(1, int(box[3]) - y1), max(1, int(box[2]) - x1)), bool)
    for b in blurred:
        mask[max(0, int(b[1]) - y1):max(0, int(b[3]) - y1), max(0, int(b[0]) - x1):max(0, int(b[2]) - x1)] = True
    return float(mask.mean())


def _probe_never(clip, frames, rows: list[dict], probes: tuple) -> None:
    """Best score any pass gives each never-detected face, at its median leaked frame."""
    by_track: dict[int, list[dict]] = defaultdict(list)
    for row in rows:
        if row["class"] == "never":
            by_track[row["track"]].append(row)
    gt = {(f["frame"], f["track"]): f["box"] for f in json.loads(clip.gt.read_text())["faces"]}
    for track, group in by_track.items():
        mid = group[len(group) // 2]["frame"]
        p = misses.probe(frames[mid], gt[(mid, track)], *probes)
        best = max(v for k, v in p.items() if k.startswith(("yn", "cf")))
        for row in group:
            row["probe_best"] = round(best, 2)
            row["probe"] = {k: round(v, 2) for k, v in p.items() if k.startswith(("yn", "cf"))}


def summarise(rows: list[dict]) -> None:
    for clip in sorted({r["clip"] for r in rows}):
        mine = [r for r in rows if r["clip"] == clip]
        log.info("%s: %d leaked face-frames, %s", clip, len(mine), dict(Counter(r["class"] for r in mine)))
        for cls in ("covered", "late", "dropped", "weak", "never"):
            group = [r for r in mine if r["class"] == cls]
            tracks = Counter(r["track"] for r in group)
            for track, n in sorted(tracks.items()):
                one = [r for r in group if r["track"] == track]
                extra = {k: one[0][k] for k in ("probe_best", "probe") if k in one[0]}
                if cls == "late":
                    extra["gaps"] = sorted(r["gap"] for r in one)
                    extra["weak_gaps"] = sorted(r["weak_gap"] for r in one if r["weak_gap"] is not None)
                extra["cover"] = sorted(r["cover"] for r in one)
                log.info("  %-8s track %3d: %2d frames, %d px, best weak %.2f %s", cls, track, n, one[0]["w"],
                         one[0]["best_weak"], extra)
    log.info("ALL: %d leaked face-frames, %s", len(rows), dict(Counter(r["class"] for r in rows)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--const", default="", help="MODULE.CONST=VALUE,... as in bench/recall_price.py")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--live", action="store_true", help="the live pipeline, every frame (5 s deadline)")
    args = parser.parse_args(argv)
    global LIVE
    LIVE = args.live
    if LIVE:
        args.set = ["deadline_ms=5000", *args.set]  # a loaded machine hides no frame whole: the detections alone
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    settings = Settings(backend="onnxruntime").updated(dict(kv.split("=", 1) for kv in args.set))
    _, _, constants = recall_price.parse("x:" + args.const)
    probes = (yunet.create(settings), centerface.create(settings))
    rows: list[dict] = []
    started = time.monotonic()
    with recall_price.patched(constants):
        for clip in suite.corpus(args.only):
            rows += classify(clip, settings, probes)
    summarise(rows)
    log.info("%.0f s", time.monotonic() - started)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
