"""CenterFace (MIT): better on tiny faces than YuNet (WIDER .935/.924/.875) but ~10x slower on CPU."""

from __future__ import annotations

import cv2
import numpy as np

from engine.config import Settings
from engine.faces import Detections
from engine.models.backends import NetworkRunner, make_runner
from engine.models.weights import model_path
from engine.stages.detect import detection_scale, letterbox, network_batch, nms

NMS_IOU = 0.3
STRIDE = 4


class CenterFaceDetector:
    name = "centerface"

    def __init__(self, runner: NetworkRunner, detect_width: int) -> None:
        self.runner = runner
        self.runner_name = runner.name
        self.detect_width = detect_width

    def detect(self, frame: np.ndarray, min_score: float) -> Detections:
        # Never enlarged: CenterFace (stride 4) already finds small faces, and enlarging costs the square.
        return self._detect_at(frame, min(1.0, detection_scale(frame, self.detect_width)), min_score)

    def _detect_at(self, frame: np.ndarray, scale: float, min_score: float) -> Detections:
        image = cv2.cvtColor(letterbox(frame, scale), cv2.COLOR_BGR2RGB)  # RGB 0..255, no normalisation
        heatmap, size, offset, marks = self.runner.run(network_batch(self.runner, image))
        return _decode(heatmap[0, 0], size[0], offset[0], marks[0], scale, min_score)


def _decode(heat: np.ndarray, size: np.ndarray, offset: np.ndarray, marks: np.ndarray, scale: float,
            min_score: float) -> Detections:
    ys, xs = np.nonzero(heat >= min_score)
    if not len(ys):
        return Detections.empty()
    s0 = np.exp(size[0, ys, xs]) * STRIDE
    s1 = np.exp(size[1, ys, xs]) * STRIDE
    x1 = (xs + offset[1, ys, xs] + 0.5) * STRIDE - s1 / 2
    y1 = (ys + offset[0, ys, xs] + 0.5) * STRIDE - s0 / 2
    xyxy = np.stack([x1, y1, x1 + s1, y1 + s0], axis=1)
    lm = marks[:, ys, xs].T.reshape(-1, 5, 2)  # (y, x) pairs, relative to the box
    landmarks = np.stack([lm[:, :, 1] * s1[:, None] + x1[:, None], lm[:, :, 0] * s0[:, None] + y1[:, None]], axis=2)
    score = heat[ys, xs].astype(np.float32)
    keep = nms(xyxy, score, NMS_IOU)
    boxes = (xyxy[keep] / scale).astype(np.float32)
    return Detections(boxes, score[keep], (landmarks[keep] / scale).astype(np.float32))


def _torch_module(path):
    from engine.models.centerface import CenterFace

    return CenterFace.from_onnx(path)


def create(settings: Settings) -> CenterFaceDetector:
    runner = make_runner(settings.backend, model_path("centerface"), _torch_module, network="centerface")
    return CenterFaceDetector(runner, settings.detect_width)
