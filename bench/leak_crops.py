"""Crops of the faces that leak, to look at by eye: one PNG per (clip, face, class), at its median leaked frame.

    python bench/leak_classes.py --only wider --json rows.json
    python bench/leak_crops.py rows.json DIR [--classes never weak dropped]

Each crop is the clip's frame (the suite's cached copy, before anonymizing) around the annotated box (green), with
1.5 face sizes of context, enlarged with nearest-neighbour pixels to about 300 px wide. Named
CLIP_TRACK_CLASS_fFRAME.png; printed with the face-frames leaked and the box's width.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import suite


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rows", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--classes", nargs="+", default=["never", "weak", "dropped"])
    args = parser.parse_args(argv)
    rows = json.loads(args.rows.read_text())
    clips = {c.name: c for c in suite.corpus(sorted({r["clip"] for r in rows}))}
    groups: dict[tuple[str, int, str], list[int]] = defaultdict(list)
    for r in rows:
        if r["class"] in args.classes:
            groups[(r["clip"], r["track"], r["class"])].append(r["frame"])
    args.out.mkdir(parents=True, exist_ok=True)
    for (name, track, cls), frames in sorted(groups.items()):
        clip = clips[name]
        gt = {(f["frame"], f["track"]): f["box"] for f in json.loads(clip.gt.read_text())["faces"]}
        mid = sorted(frames)[len(frames) // 2]
        cap = cv2.VideoCapture(str(suite.prepared(clip, suite.CACHE)))
        cap.set(cv2.CAP_PROP_POS_FRAMES, mid)
        ok, frame = cap.read()
        if not ok:
            continue
        x1, y1, x2, y2 = gt[(mid, track)]
        pad = max(1.5 * max(x2 - x1, y2 - y1), 40)
        cx1, cy1 = int(max(0, x1 - pad)), int(max(0, y1 - pad))
        cx2, cy2 = int(min(frame.shape[1], x2 + pad)), int(min(frame.shape[0], y2 + pad))
        crop = frame[cy1:cy2, cx1:cx2].copy()
        cv2.rectangle(crop, (int(x1 - cx1), int(y1 - cy1)), (int(x2 - cx1), int(y2 - cy1)), (0, 255, 0), 1)
        k = max(1, round(300 / crop.shape[1]))
        crop = cv2.resize(crop, None, fx=k, fy=k, interpolation=cv2.INTER_NEAREST)
        path = args.out / f"{name}_{track}_{cls}_f{mid}.png"
        cv2.imwrite(str(path), crop)
        print(path, len(frames), "face-frames", round(x2 - x1), "px")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
