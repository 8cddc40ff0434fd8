"""Detection stage: frame in, `Detections` out. Detectors are swappable: one file in `engine/stages/detectors/`."""

from __future__ import annotations

import importlib
import math
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


def rescale(frame: np.ndarray, scale: float) -> np.ndarray:
    """`frame` resized by `scale` (itself where that keeps its size): what `letterbox` pads."""
    h, w = frame.shape[:2]
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    return frame if (nh, nw) == (h, w) else cv2.resize(frame, (nw, nh), interpolation=cv2.INTER_LINEAR)


def padded_size(height: int, width: int, multiple: int = 32) -> tuple[int, int]:
    """(height, width) rounded up to a multiple of `multiple` (the networks' stride)."""
    return -(-height // multiple) * multiple, -(-width // multiple) * multiple


def letterbox(frame: np.ndarray, scale: float, multiple: int = 32) -> np.ndarray:
    """Resize by `scale` and zero-pad right/bottom to a multiple of `multiple` (the networks' stride)."""
    resized = rescale(frame, scale)
    nh, nw = resized.shape[:2]
    ph, pw = padded_size(nh, nw, multiple)
    if (ph, pw) == (nh, nw):
        return resized
    padded = np.zeros((ph, pw, 3), dtype=frame.dtype)
    padded[:nh, :nw] = resized
    return padded


def nms(xyxy: np.ndarray, score: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression, best score first."""
    order = np.argsort(-score)
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
