"""Detection stage: frame in, `Detections` out. Detectors are swappable: one file in `engine/stages/detectors/`."""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from typing import Protocol

import cv2
import numpy as np

from engine.config import Settings
from engine.faces import Detections


class Detector(Protocol):
    """A face detector. `detect` returns every face scoring at least `min_score` (the tracker's low bar)."""

    name: str
    runner_name: str

    def detect(self, frame: np.ndarray, min_score: float) -> Detections: ...


def create_detector(settings: Settings) -> Detector:
    """The detector named in settings, from `engine/stages/detectors/<name>.py` (each exposes `create(settings)`)."""
    module = importlib.import_module(f"engine.stages.detectors.{settings.detector}")
    return module.create(settings)


def letterbox(frame: np.ndarray, scale: float, multiple: int = 32,
              canvas: Callable[[int, int], tuple[int, int]] | None = None) -> np.ndarray:
    """Resize by `scale` and zero-pad right/bottom to a multiple of `multiple` (the networks' stride), or onto
    `canvas(height, width)` of that (CUDA's few crop shapes: engine/models/cuda_plans.py)."""
    h, w = frame.shape[:2]
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    resized = frame if (nh, nw) == (h, w) else cv2.resize(frame, (nw, nh), interpolation=cv2.INTER_LINEAR)
    ph, pw = -(-nh // multiple) * multiple, -(-nw // multiple) * multiple
    if canvas is not None:
        ph, pw = canvas(ph, pw)
    if (ph, pw) == (nh, nw):
        return resized
    padded = np.zeros((ph, pw, 3), dtype=frame.dtype)
    padded[:nh, :nw] = resized
    return padded


def network_batch(runner, image: np.ndarray) -> np.ndarray:
    """What `runner` takes for an H x W x 3 uint8 image: the image itself as 1 x H x W x 3 where the runner casts it
    inside its graph (OpenVINO, `takes_images`), else the float32 batch of `network_input`."""
    if getattr(runner, "takes_images", False):
        return np.ascontiguousarray(image)[None]
    return network_input(image)


def network_input(image: np.ndarray) -> np.ndarray:
    """An H x W x 3 uint8 image as the detectors' 1 x 3 x H x W float32 batch, the same values. One plane at a
    time from OpenCV's split: numpy's transposing cast took 2.1 ms a 1280x736 image, this 1.2 (a 1080p file-mode
    frame makes ~4.5 million network pixels: ~4 CPU ms a frame)."""
    height, width = image.shape[:2]
    batch = np.empty((1, 3, height, width), np.float32)
    for channel, plane in enumerate(cv2.split(image)):
        batch[0, channel] = plane
    return batch


# From this many boxes, NMS first finds the pairs that overlap at all (a sweep along x or y) instead of comparing each
# kept box with every box left: a 1080p crowd's passes give 500-3700 boxes at file mode's 0.1 bar, ~100-300 kept,
# and the plain loop took 5-25 ms a call, ~20 ms CPU a WIDER Parade frame (bench/detector_ab.py). Same boxes kept.
SWEEP_FROM = 64
# ... unless most pairs overlap along both axes' best (a close-up face: 49-97 % of its pairs; crowds 4-13 %): the
# loop's first kept box then suppresses nearly all at once, and the sweep would build ~n^2 pairs (a review measured
# 1.7 ms against 0.07 on a close-up, 2 s against 0.3 ms for 1,000 boxes all overlapping).
SWEEP_MAX_PAIR_SHARE = 0.25


def nms(xyxy: np.ndarray, score: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression, best score first."""
    order = np.argsort(-score)
    # The sweep skips pairs that do not overlap (IoU 0, kept by any threshold >= 0). A NaN box keeps the loop's
    # own rule (it suppresses every box compared with it).
    if len(order) >= SWEEP_FROM and iou_threshold >= 0 and np.isfinite(xyxy).all():
        pairs = _overlapping_pairs(xyxy, max_pairs=int(SWEEP_MAX_PAIR_SHARE * len(order) * (len(order) - 1) / 2))
        if pairs is not None:
            return _nms_sweep(xyxy, order, iou_threshold, pairs)
    keep: list[int] = []
    areas = (xyxy[:, 2] - xyxy[:, 0]) * (xyxy[:, 3] - xyxy[:, 1])
    while order.size:
        i = order[0]
        keep.append(int(i))
        rest = order[1:]
        ix1 = np.maximum(xyxy[i, 0], xyxy[rest, 0])
        iy1 = np.maximum(xyxy[i, 1], xyxy[rest, 1])
        ix2 = np.minimum(xyxy[i, 2], xyxy[rest, 2])
        iy2 = np.minimum(xyxy[i, 3], xyxy[rest, 3])
        inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
        iou = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-9)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def _nms_sweep(xyxy: np.ndarray, order: np.ndarray, iou_threshold: float,
               pairs: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """`nms`'s greedy rule over the `pairs` of boxes that overlap along an axis, their IoU computed as `nms`
    computes it (float32, the same operations: the same pairs are over the threshold)."""
    n = len(order)
    first, second = pairs
    a, b = xyxy[first], xyxy[second]
    areas = (xyxy[:, 2] - xyxy[:, 0]) * (xyxy[:, 3] - xyxy[:, 1])
    inter = (np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
             * np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None))
    iou = inter / np.maximum(areas[first] + areas[second] - inter, 1e-9)
    over = ~(iou <= iou_threshold)
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n)
    r1, r2 = rank[first[over]], rank[second[over]]
    better, worse = np.minimum(r1, r2), np.maximum(r1, r2)
    by_better = np.argsort(better, kind="stable")
    ends = np.cumsum(np.bincount(better, minlength=n)).tolist()
    worse = worse[by_better].tolist()
    suppressed = [False] * n
    keep: list[int] = []
    start = 0
    for r in range(n):  # in score order: a kept box suppresses the worse boxes it overlaps
        if not suppressed[r]:
            keep.append(r)
            for w in worse[start:ends[r]]:
                suppressed[w] = True
        start = ends[r]
    return order[np.asarray(keep, dtype=np.int64)].astype(np.int64)


def _overlapping_pairs(xyxy: np.ndarray, max_pairs: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Every pair (i, j) of boxes whose ranges overlap along one axis (j starts inside i's), each pair once: a
    superset of the pairs that intersect. Along x or y, whichever gives fewer (a second look's tall mosaic: y).
    None when there are more than `max_pairs` (counted before they are built)."""
    sweeps = [_sweep(xyxy[:, axis], xyxy[:, axis + 2]) for axis in (0, 1)]
    order, counts = min(sweeps, key=lambda sweep: int(sweep[1].sum()))
    if int(counts.sum()) > max_pairs:
        return None
    first = np.repeat(np.arange(len(order)), counts)
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    return order[first], order[first + 1 + offsets]


def _sweep(low: np.ndarray, high: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Boxes sorted by `low`, and for each how many of the following ones start before it ends."""
    order = np.argsort(low, kind="stable")
    ends = np.searchsorted(low[order], high[order], side="left")
    return order, np.maximum(ends - np.arange(1, len(order) + 1), 0)


# How far a small frame is enlarged for detection. YuNet's finest stride (8 px) misses faces under about
# 20 px; enlarging finds them. Measured on 640-wide WIDER FACE val images (129 faces >= 10 px): native 92
# found, 1.5x 106, 2x 110 (and native + 2x, the old default, 110) at 8.7 ms for 1.5x against 19.5 ms for
# native + 2x. Large faces are still found when enlarged (32 of 32 portraits, faces up to 320 of 360 px).
MAX_UPSCALE = 1.5


def detection_scale(frame: np.ndarray, detect_width: int) -> float:
    """The scale of the one detection pass: the picture gets the area of a 16:9 frame `detect_width` wide,
    enlarged by at most MAX_UPSCALE.

    The area, not the width: the cost of a pass follows its pixels. A 720x1280 vertical phone frame was
    enlarged 1.5x by width (to 1080x1920, 2.25x the pixels of a 1280x720 pass) although its faces are
    large; by area it is detected at its own size. Landscape 16:9 frames get the same scale as before.
    """
    height, width = frame.shape[:2]
    return area_scale(width, height, detect_width)


def area_scale(width: int, height: int, detect_width: int) -> float:
    """`detection_scale` of a width x height frame."""
    budget = detect_width * detect_width * 9 / 16
    return min(math.sqrt(budget / max(width * height, 1)), MAX_UPSCALE)


def merge(parts: list[Detections], iou_threshold: float) -> Detections:
    """Union of detections from several passes, duplicates removed by NMS."""
    joined = Detections(
        np.concatenate([p.xyxy for p in parts]),
        np.concatenate([p.score for p in parts]),
        np.concatenate([p.landmarks for p in parts]),
    )
    return joined[nms(joined.xyxy, joined.score, iou_threshold)] if len(joined) else joined
