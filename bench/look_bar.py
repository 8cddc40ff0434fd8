"""The identifier's new-look check (`Policy.same_look`) measured: the same face against itself one and two detected
frames apart, and against another face (an id switch), on the annotated real clips.

    python bench/look_bar.py [SUBSTR ...] [--frames 300]

Each annotated clip (bench/corpus/*.gt.json and the dev clip) goes through the live detector frame by frame;
each detection matched to an annotated face (IoU >= 0.5, faces >= the identifier's `min_face_px`) gives the 16x16
patch the identifier watches (`identify_facebank._patch`, centred and sized by the landmarks). Printed per gap
(1 frame: every frame detected; 2: live mode coasting every other frame):
- same face: the patch's correlation with the same annotated face's patch `gap` frames before: below the bar, a
  false alarm (a shown streamer blurred until a fresh embedding vouches for him);
- another face: with another annotated face's patch `gap` frames before, as if the tracker had moved that face's
  id onto this one: at or above the bar, a switch the check misses (the embedding checks remain);
and the share of each at the bars around the policy's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from engine.config import Settings  # noqa: E402
from engine.faces import box_iou  # noqa: E402
from engine.recognition.identify_facebank import Policy, _patch  # noqa: E402
from engine.recognition.recognize import face_size  # noqa: E402
from engine.stages.detect import create_detector  # noqa: E402

DATA = Path(os.environ.get("BLURCAST_DATA", REPO.parent / "shared" / "data"))
BARS = (0.5, 0.45, 0.4, 0.35, 0.3, 0.25)


def clips(only: list[str]) -> list[tuple[Path, Path]]:
    """(gt, video) for every annotated clip whose name contains one of `only` (all when empty)."""
    found = [(DATA / "video_hamilton" / "gt.json", DATA / "video_hamilton")]
    found += [(gt, DATA / "video_unannotated") for gt in sorted((REPO / "bench" / "corpus").glob("*.gt.json"))]
    out = []
    for gt, folder in found:
        meta = json.loads(gt.read_text())
        if "video" not in meta:  # a photo rendered to a clip by bench/suite.py: no motion of its own
            continue
        name = gt.name if gt.parent.name != "video_hamilton" else "hamilton"
        video = folder / meta["video"]
        if video.exists() and (not only or any(s in name for s in only)):
            out.append((gt, video))
    return out


def patches(gt: Path, video: Path, detector, frames: int, min_px: float) -> dict[int, dict[int, np.ndarray]]:
    """frame -> annotated track -> the identifier's patch of the matching detection."""
    faces: dict[int, list[dict]] = {}
    for face in json.loads(gt.read_text())["faces"]:
        if not face.get("ignore"):
            faces.setdefault(face["frame"], []).append(face)
    capture, out, index = cv2.VideoCapture(str(video)), {}, 0
    while index < frames and (read := capture.read())[0]:
        frame = read[1]
        found = detector.detect(frame, 0.5)
        for face in faces.get(index, []):
            ious = [box_iou(box, face["box"]) for box in found.xyxy]
            if not ious or max(ious) < 0.5:
                continue
            landmarks = found.landmarks[int(np.argmax(ious))].reshape(5, 2)
            size = face_size(landmarks)
            if size >= min_px:
                out.setdefault(index, {})[face["track"]] = _patch(frame, landmarks.mean(0), size)
        index += 1
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("only", nargs="*")
    parser.add_argument("--frames", type=int, default=300)
    args = parser.parse_args(argv)
    policy, settings = Policy(), Settings()
    detector = create_detector(settings)
    same: dict[int, list[float]] = {1: [], 2: []}
    other: dict[int, list[float]] = {1: [], 2: []}
    for gt, video in clips(args.only):
        by_frame = patches(gt, video, detector, args.frames, policy.min_face_px)
        counts = {1: 0, 2: 0}
        for index, now in by_frame.items():
            for gap in (1, 2):
                before = by_frame.get(index - gap, {})
                for track, patch in now.items():
                    if track in before:
                        same[gap].append(float(patch @ before[track]))
                        counts[gap] += 1
                    other[gap] += [float(patch @ p) for t, p in before.items() if t != track]
        print(f"{gt.name[:44]:44s} same-face pairs: gap 1 {counts[1]}, gap 2 {counts[2]}", flush=True)
    for gap in (1, 2):
        s, o = np.array(same[gap]), np.array(other[gap])
        print(f"\ngap {gap}: same face n={len(s)}, p1 {np.percentile(s, 1):.2f} p5 {np.percentile(s, 5):.2f} "
              f"median {np.median(s):.2f}; another face n={len(o)}, median {np.median(o):.2f} "
              f"p95 {np.percentile(o, 95):.2f} p99 {np.percentile(o, 99):.2f}")
        for bar in BARS:
            print(f"  bar {bar:.2f}: same face flagged {100 * np.mean(s < bar):5.2f} %, "
                  f"another face missed {100 * np.mean(o >= bar):5.2f} %")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
