"""Which faces the engine leaves visible, and which detector pass would find them, in-process.

    python bench/misses.py [--only SUBSTR] [--crops DIR] [--min-frames 1]

Every photo clip of the corpus (WIDER FACE 1080p renders and the annotated crowd photos, bench/suite.py) goes
through the pipeline in file mode (no look-ahead: this is about what the detector never finds). Each annotated
face left visible in at least `--min-frames` frames (the scorer's measure, evaluation/video.py) is then
probed at its median leaked frame: a crop around it (3 face sizes of
context) through YuNet and CenterFace at 1x and 2x, and YuNet on the mirrored crop; the best score of a box
at IoU >= 0.3 with the face is printed, beside WIDER's own flags (blur, occlusion, pose) where known.
`--crops` writes each missed face with its context as a PNG (for looking at by eye; never commit them).
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

from bench import suite, widerface_clips
from engine.config import Settings
from engine.faces import box_iou
from engine.pipeline import Pipeline
from engine.stages.detectors import centerface, yunet
from evaluation.video import MIN_SIZE, face_visibility

log = logging.getLogger("misses")
PROBE_MIN = 0.05  # scores this low are noise, but show how far from the bar a face is


def leaked_frames(clip: suite.Clip, settings: Settings) -> tuple[dict[int, list[tuple[int, list]]], int, int]:
    """Per annotated track: (frame, box) of every frame it was left visible; and leaked / scored face-frames."""
    by_frame: dict[int, list[dict]] = defaultdict(list)
    for face in json.loads(clip.gt.read_text())["faces"]:
        by_frame[face["frame"]].append(face)
    pipeline = Pipeline(settings)
    pipeline.offline = True
    cap = cv2.VideoCapture(str(clip.video))
    leaks: dict[int, list[tuple[int, list]]] = defaultdict(list)
    scored = index = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        safe, _ = pipeline.process(frame.copy(), index, 1 / 30)
        g_in, g_out = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), cv2.cvtColor(safe.image, cv2.COLOR_BGR2GRAY)
        for face in by_frame.get(index, []):
            x1, y1, x2, y2 = (round(v) for v in face["box"])
            x1, y1 = max(0, x1), max(0, y1)
            if face["ignore"] or x2 - x1 < MIN_SIZE or y2 - y1 < MIN_SIZE:
                continue
            scored += 1
            if face_visibility(g_in[y1:y2, x1:x2], g_out[y1:y2, x1:x2]) >= 0.5:
                leaks[face["track"]].append((index, face["box"]))
        index += 1
    pipeline.close()
    return leaks, sum(len(v) for v in leaks.values()), scored


def read_frame(video: Path, index: int) -> np.ndarray:
    cap = cv2.VideoCapture(str(video))
    cap.set(cv2.CAP_PROP_POS_FRAMES, index)
    ok, frame = cap.read()
    if not ok:
        raise RuntimeError(f"cannot read frame {index} of {video}")
    return frame


def best_score(dets, box: np.ndarray) -> float:
    scores = [float(s) for b, s in zip(dets.xyxy, dets.score, strict=True) if box_iou(b, box) >= 0.3]
    return max(scores, default=0.0)


def probe(frame: np.ndarray, box: list[float], yn: yunet.YuNetDetector, cf: centerface.CenterFaceDetector) -> dict:
    """Best score near the face for each pass, on a crop with 3 face sizes of context."""
    x1, y1, x2, y2 = box
    size = max(x2 - x1, y2 - y1)
    pad = max(3 * size, 48)
    h, w = frame.shape[:2]
    cx1, cy1 = int(max(0, x1 - pad)), int(max(0, y1 - pad))
    cx2, cy2 = int(min(w, x2 + pad)), int(min(h, y2 + pad))
    crop = frame[cy1:cy2, cx1:cx2]
    local = np.array([x1 - cx1, y1 - cy1, x2 - cx1, y2 - cy1], np.float32)
    mirrored = np.array([crop.shape[1] - local[2], local[1], crop.shape[1] - local[0], local[3]], np.float32)
    flipped = np.ascontiguousarray(crop[:, ::-1])
    return {
        "yn1": best_score(yn._detect_at(crop, 1.0, PROBE_MIN), local),
        "yn2": best_score(yn._detect_at(crop, 2.0, PROBE_MIN), local),
        "ynf1": best_score(yn._detect_at(flipped, 1.0, PROBE_MIN), mirrored),
        "ynf2": best_score(yn._detect_at(flipped, 2.0, PROBE_MIN), mirrored),
        "cf1": best_score(cf._detect_at(crop, 1.0, PROBE_MIN), local),
        "cf2": best_score(cf._detect_at(crop, 2.0, PROBE_MIN), local),
        "crop": crop, "local": local,
    }


def wider_flags(clip: suite.Clip) -> dict[int, dict]:
    """WIDER's own attributes per track (track = 1-based index of the box) for the WIDER renders."""
    meta_all = json.loads((widerface_clips.WIDER / "wider_face_val_gt_subset.json").read_text())
    for name, meta in meta_all.items():
        if widerface_clips.clip_name(name) in clip.name:
            return {k + 1: {"src_w": meta["boxes_xywh"][k][2], "blur": meta["blur"][k], "occl": meta["occlusion"][k],
                            "pose": meta["pose"][k]} for k in range(len(meta["boxes_xywh"]))}
    return {}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append")
    parser.add_argument("--crops", type=Path)
    parser.add_argument("--min-frames", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    settings = Settings(backend="onnxruntime")
    yn, cf = yunet.create(settings), centerface.create(settings)
    rows = []
    for clip in suite.corpus(args.only):
        if not (clip.name.startswith("wider_") or clip.name.startswith("photo_")):
            continue
        leaks, leaked, scored = leaked_frames(clip, settings)
        log.info("%s: %d of %d face-frames left visible, %d faces", clip.name, leaked, scored, len(leaks))
        flags = wider_flags(clip)
        for track, frames in sorted(leaks.items()):
            if len(frames) < args.min_frames:
                continue
            index, box = frames[len(frames) // 2]
            p = probe(read_frame(clip.video, index), box, yn, cf)
            row = {"clip": clip.name[:28], "track": track, "frames": len(frames), "frame": index,
                   "w": round(box[2] - box[0]), "h": round(box[3] - box[1]),
                   **flags.get(track, {}), **{k: round(v, 2) for k, v in p.items() if k.startswith(("yn", "cf"))}}
            rows.append(row)
            log.info("%s", " ".join(f"{k}={v}" for k, v in row.items()))
            if args.crops:
                args.crops.mkdir(parents=True, exist_ok=True)
                crop = p["crop"].copy()
                cv2.rectangle(crop, tuple(int(v) for v in p["local"][:2]), tuple(int(v) for v in p["local"][2:]),
                              (0, 0, 255), 1)
                name = args.crops / f"{clip.name[:24]}_t{track}_f{index}.png"
                cv2.imwrite(str(name), cv2.resize(crop, None, fx=2, fy=2))
    summarise(rows)
    return 0


def summarise(rows: list[dict]) -> None:
    """How many missed face-frames each pass would reach at a few score bars."""
    total = sum(r["frames"] for r in rows)
    log.info("missed faces %d, face-frames %d", len(rows), total)
    for key in ("yn1", "yn2", "ynf1", "ynf2", "cf1", "cf2"):
        for bar in (0.2, 0.3, 0.5):
            hit = [r for r in rows if r[key] >= bar]
            log.info("%-4s >= %.1f: %3d faces, %4d face-frames", key, bar, len(hit), sum(r["frames"] for r in hit))
    if rows and "occl" in rows[0]:
        for flag in ("blur", "occl", "pose"):
            counts = defaultdict(int)
            for r in rows:
                counts[r.get(flag)] += r["frames"]
            log.info("face-frames by WIDER %s: %s", flag, dict(counts))


if __name__ == "__main__":
    raise SystemExit(main())
