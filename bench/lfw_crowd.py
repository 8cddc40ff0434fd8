"""Faces in general, small: thousands of different people's faces at 16-48 px in 1080p clips, blurcast against deface.

    python bench/lfw_crowd.py [--people 2000] [--frames 12] [--degrade dark|lowrate|motion] [--no-deface] [--json F]

The corpus holds a few hundred people; held-out footage holds others. Here each of `--people` LFW people (their first
photo, every person of lfw-deepfunneled in name order, thinned evenly) is shrunk so that their face is one of
SIZES px wide, and the photos, whole (shoulders, background and all), are packed side by side into mosaics a little
larger than 1920x1080, rendered by bench/widerface_clips.py into clips that pan slowly over them (`--frames` at
30 fps, CRF 16). The ground truth is each photo's face as YuNet finds it at 2x its size (a ~200 px face: the
reference the small copy is held against), mapped through the same transforms as the pixels; a photo whose centre
face is not found there (score under 0.9, or off-centre) is left out and counted. Other faces in a photo (people
behind) are not annotated, so they count neither way.

Each clip goes through `blurcast run --no-facebank` and deface 1.5.0 (its defaults), scored black-box by
../shared/tools/score_video.py: the share of face-frames left visible, by face width, and the longest run.
`--degrade` first puts the clips through one of bench/suite.py's degradations (a phone's starved uplink, dusk with
sensor grain, a pan's smear).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import suite, widerface_clips  # noqa: E402

DATA = Path(os.environ.get("BLURCAST_DATA", REPO.parent / "shared" / "data"))
LFW = DATA / "recognition_lfw" / "lfw-deepfunneled"
SIZES = (16, 20, 24, 28, 32, 40, 48)  # face widths at 1080p, px: a street's bystanders, far to near
MOSAIC = (2000, 1130)  # a little over 1080p: the view pans 80 x 50 px over the clip
REFERENCE_SCALE = 2.0
log = logging.getLogger("lfw_crowd")


def people(count: int) -> list[Path]:
    """The first photo of `count` LFW people, spread evenly over the names."""
    folders = sorted(p for p in LFW.iterdir() if p.is_dir())
    picked = [folders[int(i)] for i in np.linspace(0, len(folders) - 1, min(count, len(folders)))]
    return [sorted(folder.glob("*.jpg"))[0] for folder in picked]


def reference_face(detector, image: np.ndarray) -> np.ndarray | None:
    """The photo's centre face (x1, y1, x2, y2) as YuNet finds it at REFERENCE_SCALE; None if it finds none there."""
    big = cv2.resize(image, None, fx=REFERENCE_SCALE, fy=REFERENCE_SCALE, interpolation=cv2.INTER_CUBIC)
    found = detector.detect(big, 0.5)
    if not len(found):
        return None
    centres = (found.xyxy[:, :2] + found.xyxy[:, 2:]) / 2
    offset = np.linalg.norm(centres - np.array(big.shape[1::-1]) / 2, axis=1)
    best = int(np.argmin(offset))
    if found.score[best] < 0.9 or offset[best] > 0.15 * big.shape[1]:
        return None
    return found.xyxy[best] / REFERENCE_SCALE


Mosaic = tuple[np.ndarray, list[list[float]], list[int]]


def mosaics(photos: list[tuple[np.ndarray, np.ndarray]]) -> list[Mosaic]:
    """Photos, each with its face box, shrunk so the faces take SIZES in turn, packed in rows (shelves) into mosaics
    of MOSAIC px; each mosaic with its faces' boxes (x, y, w, h) and their sizes."""
    out: list[Mosaic] = []
    canvas, boxes, sizes, x, y, shelf = None, [], [], 0, 0, 0
    for k, (image, face) in enumerate(photos):
        size = SIZES[k % len(SIZES)]
        scale = size / float(face[2] - face[0])
        small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        h, w = small.shape[:2]
        if canvas is not None and x + w > MOSAIC[0]:
            x, y, shelf = 0, y + shelf, 0
        if canvas is None or y + h > MOSAIC[1]:
            if canvas is not None:
                out.append((canvas, boxes, sizes))
            canvas, boxes, sizes, x, y, shelf = np.zeros((MOSAIC[1], MOSAIC[0], 3), np.uint8), [], [], 0, 0, 0
        canvas[y:y + h, x:x + w] = small
        # resize maps pixel centres: an edge at e in the photo lands at (e - 0.5) * scale + 0.5 (pixel-edge coords)
        x1, y1, x2, y2 = ((face - 0.5) * scale + 0.5).tolist()
        boxes.append([x + x1, y + y1, x2 - x1, y2 - y1])
        sizes.append(size)
        x, shelf = x + w, max(shelf, h)
    if canvas is not None and boxes:
        out.append((canvas, boxes, sizes))
    return out


def render(count: int, frames: int, cache: Path) -> tuple[list[tuple[Path, Path, list[int]]], int, int]:
    """The clips (video, gt.json, each face's size by track - 1) for `count` people, cached; also how many photos were
    used and left out."""
    from engine.config import Settings
    from engine.stages.detect import create_detector

    detector = create_detector(Settings(backend="onnxruntime"))
    photos, left_out = [], 0
    for path in people(count):
        image = cv2.imread(str(path))
        face = reference_face(detector, image) if image is not None else None
        if face is None:
            left_out += 1
            continue
        photos.append((image, face))
    cache.mkdir(parents=True, exist_ok=True)
    clips = []
    for i, (canvas, boxes, sizes) in enumerate(mosaics(photos)):
        still = cache / f"lfw_crowd_{count}p_{i}.png"
        cv2.imwrite(str(still), canvas)
        meta = {"boxes_xywh": boxes, "invalid": [False] * len(boxes)}
        method = (f"{len(boxes)} LFW people's photos (lfw-deepfunneled, each person's first), each shrunk so its "
                  f"face is one of {SIZES} px wide, packed into a {MOSAIC[0]}x{MOSAIC[1]} mosaic by "
                  "bench/lfw_crowd.py; boxes: YuNet at 2x on the photo, mapped exactly; rendered by "
                  f"bench/widerface_clips.py, {frames} frames panning over it.")
        clips.append((*widerface_clips.render_photo(still, meta, f"lfw_crowd_{count}p_{i}_{frames}f", method, frames,
                                                    cache, zoom=(1.0, 1.0), fill=False), sizes))
    return clips, len(photos), left_out


def score_by_size(video: Path, out: Path, gt_path: Path, sizes: list[int], tmp: Path) -> dict[int, dict]:
    """The scorer's figures for the faces of each size apart (a gt.json per size, the same output)."""
    gt = json.loads(gt_path.read_text())
    figures = {}
    for size in SIZES:
        part = tmp / f"gt_{size}.json"
        part.write_text(json.dumps({**gt, "faces": [f for f in gt["faces"] if sizes[f["track"] - 1] == size]}))
        figures[size] = suite.score(video, out, part, tmp)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--people", type=int, default=2000)
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--degrade", choices=sorted(suite.DEGRADATIONS))
    parser.add_argument("--no-deface", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not LFW.is_dir() or not suite.SCORER.exists():
        log.error("needs %s and the scorer %s (set BLURCAST_DATA)", LFW, suite.SCORER)
        return 2
    clips, used, left_out = render(args.people, args.frames, widerface_clips.CACHE)
    log.info("%d people's faces in %d clips (%d photos left out: no clear centre face at 2x)", used, len(clips),
             left_out)
    tools = ["blurcast"] + ([] if args.no_deface else ["deface"])
    totals = {(tool, size): [0, 0, 0] for tool in tools for size in SIZES}  # visible, face-frames, worst run
    with tempfile.TemporaryDirectory(prefix="blurcast-lfw-crowd-") as tmp_name:
        tmp = Path(tmp_name)
        for video, gt, sizes in clips:
            if args.degrade:
                video = suite.degraded(video, args.degrade, widerface_clips.CACHE)
            for tool in tools:
                out = tmp / f"{video.stem}.{tool}.mp4"
                if tool == "deface":
                    if suite.run_deface(video, out) is None:
                        log.error("deface is not installed (pip install -e '.[bench]')")
                        return 2
                else:
                    suite.run_blurcast(video, out, ["--no-facebank"], Path(tempfile.mkdtemp(dir=tmp)))
                for size, r in score_by_size(video, out, gt, sizes, tmp).items():
                    t = totals[tool, size]
                    t[0] += r["bystander_visible"]
                    t[1] += r["bystander_face_frames"]
                    t[2] = max(t[2], r["worst_leak_run"] or 0)
                log.info("%s %s: %s", video.stem, tool, {s: totals[tool, s][:2] for s in SIZES})
                out.unlink()
    rows = [{"tool": tool, "size": size, "visible": v, "face_frames": n, "worst_run": run}
            for (tool, size), (v, n, run) in totals.items()]
    print(f"{'face':>6} " + " ".join(f"{tool:>28}" for tool in tools))
    for size in SIZES:
        cells = []
        for tool in tools:
            v, n, run = totals[tool, size]
            cells.append(f"{100 * v / max(n, 1):6.2f} % ({v}/{n}) run {run:2d}")
        print(f"{size:4d}px " + " ".join(f"{c:>28}" for c in cells))
    if args.json:
        args.json.write_text(json.dumps({"people": used, "left_out": left_out, "frames": args.frames,
                                         "degrade": args.degrade,
                                         "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
