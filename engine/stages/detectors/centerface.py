"""CenterFace (MIT): better on tiny faces than YuNet (WIDER .935/.924/.875) but ~10x slower on CPU."""

from __future__ import annotations

import cv2
import numpy as np

from engine.config import Settings
from engine.faces import Detections, box_iou
from engine.models.backends import NetworkRunner, make_runner
from engine.models.weights import model_path
from engine.stages.detect import detection_scale, letterbox, nms

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

    def refine(self, frame: np.ndarray, xyxy: np.ndarray, face_px: float) -> Detections:
        """The face in box `xyxy` detected again in a crop around it scaled so that the box's longer side is
        about `face_px`, as `YuNetDetector.refine`: recognition averages both detectors' landmarks
        (`engine.recognition.recognize.Landmarker`). The one detection overlapping the box best, or none."""
        x1, y1, x2, y2 = (float(v) for v in xyxy)
        size = max(x2 - x1, y2 - y1, 1.0)
        h, w = frame.shape[:2]
        pad = 0.5 * size
        cx1, cy1 = int(max(0, x1 - pad)), int(max(0, y1 - pad))
        cx2, cy2 = int(min(w, x2 + pad)), int(min(h, y2 + pad))
        if cx2 - cx1 < 4 or cy2 - cy1 < 4:
            return Detections.empty()
        found = self._detect_at(frame[cy1:cy2, cx1:cx2], min(max(face_px / size, 0.25), 4.0), 0.3)
        if not len(found):
            return found
        found = found.shifted(cx1, cy1)
        overlap = [box_iou(box, (x1, y1, x2, y2)) for box in found.xyxy]
        best = int(np.argmax(overlap))
        return found[[best]] if overlap[best] >= 0.5 else Detections.empty()

    def _detect_at(self, frame: np.ndarray, scale: float, min_score: float) -> Detections:
        image = cv2.cvtColor(letterbox(frame, scale), cv2.COLOR_BGR2RGB)  # RGB 0..255, no normalisation
        batch = np.ascontiguousarray(image.transpose(2, 0, 1)[None], dtype=np.float32)
        heatmap, size, offset, marks = self.runner.run(batch)
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
    runner = make_runner(settings.backend, model_path("centerface"), _torch_module)
    return CenterFaceDetector(runner, settings.detect_width)
