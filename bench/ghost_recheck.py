"""How often a fresh look (`YuNetDetector.refinds`) finds real weak faces again, and the boxes that are no face.

    python bench/ghost_recheck.py [--step 12] GT.json [GT.json ...]
    python bench/ghost_recheck.py ~/.cache/blurcast/corpus/photo_*_48f.gt.json ~/.cache/blurcast/corpus/wider_*.gt.json

A box that the main pass finds only weakly (0.2-0.6) beside a recognised face, larger than it and further off than a
pan's ghost, is taken for that face's ghost only when no fresh look finds it again (engine/faces.py,
GHOST_RECHECK_*). This measures what that costs: of the weak boxes on annotated faces (IoU >= 0.5 with a gt face that
is not `ignore`), the share found again, by width; of the weak boxes on nothing annotated (IoU < 0.2 with every gt
box), the same. Every `step`-th frame of each clip, detected at the engine's main-pass scale.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import defaultdict
from pathlib import Path

import cv2

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from engine.config import Settings  # noqa: E402
from engine.faces import box_iou  # noqa: E402
from engine.stages.detect import detection_scale  # noqa: E402
from engine.stages.detectors import yunet  # noqa: E402

DATA = Path(os.environ.get("BLURCAST_DATA", REPO.parent / "shared" / "data"))
WIDTHS = ((0, 30), (30, 60), (60, 10**6))


def video_of(gt_path: Path, gt: dict) -> Path:
    for folder in (gt_path.parent, Path.home() / ".cache" / "blurcast" / "corpus", DATA / "video_unannotated"):
        if (folder / gt["video"]).exists():
            return folder / gt["video"]
    raise SystemExit(f"{gt['video']} not found beside {gt_path}, in the suite's cache or in {DATA}")


def weak_boxes(gt_path: Path, step: int, detector) -> list[tuple[str, float, float, bool]]:
    """(kind, score, width, found again) of each weak main-pass box on a face or on nothing."""
    gt = json.loads(gt_path.read_text())
    by_frame = defaultdict(list)
    for face in gt["faces"]:
        by_frame[face["frame"]].append(face)
    capture, rows = cv2.VideoCapture(str(video_of(gt_path, gt))), []
    for index in range(gt["frames"]):
        grabbed, frame = capture.read()
        if not grabbed:
            break
        if index % step:
            continue
        found = detector._detect_at(frame, detection_scale(frame, detector.detect_width), 0.2)
        for box, score in zip(found.xyxy, found.score, strict=True):
            if score >= 0.6:
                continue
            best, face = max(((box_iou(box, f["box"]), f) for f in by_frame[index]), key=lambda t: t[0],
                             default=(0.0, None))
            kind = "face" if best >= 0.5 and not face["ignore"] else "nothing" if best < 0.2 else None
            if kind is not None:
                rows.append((kind, float(score), float(box[2] - box[0]), detector.refinds(frame, box)))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("gt", type=Path, nargs="+")
    parser.add_argument("--step", type=int, default=12, help="every step-th frame of each clip")
    args = parser.parse_args(argv)
    detector = yunet.create(Settings())
    rows = [row for path in args.gt for row in weak_boxes(path, args.step, detector)]
    print(f"{'weak boxes (0.2-0.6) on':26s} {'width px':>10s} {'found again':>12s}")
    for kind in ("face", "nothing"):
        for low, high in WIDTHS:
            part = [again for k, _, width, again in rows if k == kind and low <= width < high]
            label = f"{low}-{high}" if high < 10**6 else f"{low}+"
            print(f"{'a real face' if kind == 'face' else 'nothing annotated':26s} {label:>10s} "
                  f"{sum(part):5d} of {len(part):4d}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
