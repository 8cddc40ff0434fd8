"""Which face-frames leak under one run and not the other: two `bench/suite.py --keep` folders, face by face.

    python bench/suite.py --no-enrol --backend onnxruntime --keep A ...; ... --backend openvino --keep B ...
    python bench/leak_diff.py A B [--only SUBSTR ...] [--json out.json]

The suite reports a leak count per clip; a count can stay put while different faces leak, and a difference
of a few face-frames can be a face near the scorer's bar (visibility 0.5) in one run. Per blur-all clip kept
in both folders: bystander face-frames visible in both, in A only, in B only (with each such face's width and
its visibility in the other run), scored exactly as ../shared/tools/score_video.py scores them.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import cv2  # noqa: E402

from bench import suite  # noqa: E402

log = logging.getLogger("leak_diff")


def _scorer():
    spec = importlib.util.spec_from_file_location("score_video", suite.SCORER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def grey_frames(path: Path):
    cap = cv2.VideoCapture(str(path))
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        yield cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    cap.release()


def compare(clip: suite.Clip, a: Path, b: Path, scorer, visible_at: float = 0.5, min_size: int = 10) -> dict:
    """Bystander face-frames (allowlisted counted as bystanders: blur-all) visible in a, in b, in both."""
    video = suite.prepared(clip, suite.CACHE)
    gt = json.loads(clip.gt.read_text())
    by_frame = defaultdict(list)
    for face in gt["faces"]:
        by_frame[face["frame"]].append(face)
    counts = {"both": 0, "a_only": 0, "b_only": 0, "scored": 0}
    flips = []
    for i, (f_in, f_a, f_b) in enumerate(zip(grey_frames(video), grey_frames(a), grey_frames(b), strict=False)):
        for face in by_frame.get(i, []):
            x1, y1, x2, y2 = (round(v) for v in face["box"])
            x1, y1, x2, y2 = max(0, x1), max(0, y1), min(f_in.shape[1], x2), min(f_in.shape[0], y2)
            if face.get("ignore") or (x2 - x1) < min_size or (y2 - y1) < min_size:
                continue
            va = scorer.face_visibility(f_in[y1:y2, x1:x2], f_a[y1:y2, x1:x2])
            vb = scorer.face_visibility(f_in[y1:y2, x1:x2], f_b[y1:y2, x1:x2])
            counts["scored"] += 1
            if va >= visible_at and vb >= visible_at:
                counts["both"] += 1
            elif va >= visible_at or vb >= visible_at:
                key = "a_only" if va >= visible_at else "b_only"
                counts[key] += 1
                flips.append({"frame": i, "track": face["track"], "width": x2 - x1, "in": key,
                              "vis_a": round(va, 3), "vis_b": round(vb, 3)})
    tracks = {side: len({f["track"] for f in flips if f["in"] == side}) for side in ("a_only", "b_only")}
    return {"clip": clip.name, **counts, "tracks": tracks, "flips": flips}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    parser.add_argument("--only", action="append")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    scorer = _scorer()
    rows = []
    for clip in suite.corpus(args.only):
        name = f"{clip.name}.blur-all.blurcast.mp4"
        if not ((args.a / name).exists() and (args.b / name).exists()):
            continue
        row = compare(clip, args.a / name, args.b / name, scorer)
        rows.append(row)
        log.info("%-44s scored %6d  both %4d  A only %4d (%d tracks)  B only %4d (%d tracks)", clip.name[:44],
                 row["scored"], row["both"], row["a_only"], row["tracks"]["a_only"], row["b_only"],
                 row["tracks"]["b_only"])
    total = {k: sum(r[k] for r in rows) for k in ("scored", "both", "a_only", "b_only")}
    log.info("all: %s", total)
    if args.json:
        args.json.write_text(json.dumps({"a": str(args.a), "b": str(args.b), "total": total, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
