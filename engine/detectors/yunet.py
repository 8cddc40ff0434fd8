"""YuNet 2023mar (MIT, OpenCV Zoo): 3.2 ms at 640x360 on 2 CPU cores, WIDER FACE val AP .884/.866/.750."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from engine.backends import NetworkRunner, make_runner
from engine.config import Settings
from engine.detect import detection_scale, letterbox, nms
from engine.faces import Detections, box_iou
from engine.weights import model_path

STRIDES = (8, 16, 32)
NMS_IOU = 0.3
REFINE_PX = 160  # face width at which `refine` looks again: landmarks as sharp as a 2x pass gives them


class YuNetDetector:
    name = "yunet"

    def __init__(self, runner: NetworkRunner, detect_width: int) -> None:
        self.runner = runner
        self.runner_name = runner.name
        self.detect_width = detect_width

    def detect(self, frame: np.ndarray, min_score: float) -> Detections:
        return self._detect_at(frame, detection_scale(frame, self.detect_width), min_score)

    def refine(self, frame: np.ndarray, xyxy: np.ndarray, face_px: float = REFINE_PX) -> Detections:
        """The face in box `xyxy` detected again in a crop scaled so that it is about `face_px` wide.

        Recognition needs precise landmarks: on the dev clip, landmarks from a native 640x360 pass made the
        performer match in 81 % of his frames, those of a 2x pass in 96 %. Re-detecting only the faces about
        to be embedded costs about a millisecond each instead of a 2x pass over the whole frame.
        Returns the one detection that overlaps the box best, or no detection.
        """
        x1, y1, x2, y2 = (float(v) for v in xyxy)
        size = max(x2 - x1, y2 - y1, 1.0)
        scale = min(max(face_px / size, 0.25), 4.0)
        h, w = frame.shape[:2]
        pad = 0.5 * size
        cx1, cy1 = int(max(0, x1 - pad)), int(max(0, y1 - pad))
        cx2, cy2 = int(min(w, x2 + pad)), int(min(h, y2 + pad))
        if cx2 - cx1 < 4 or cy2 - cy1 < 4:
            return Detections.empty()
        found = self._detect_at(frame[cy1:cy2, cx1:cx2], scale, 0.3)
        if not len(found):
            return found
        found = found.shifted(cx1, cy1)
        overlap = [box_iou(box, (x1, y1, x2, y2)) for box in found.xyxy]
        best = int(np.argmax(overlap))
        return found[[best]] if overlap[best] >= 0.5 else Detections.empty()

    def _detect_at(self, frame: np.ndarray, scale: float, min_score: float) -> Detections:
        image = letterbox(frame, scale)  # BGR, 0..255: YuNet's own input convention
        batch = np.ascontiguousarray(image.transpose(2, 0, 1)[None], dtype=np.float32)
        outputs = self.runner.run(batch)
        return self._decode(outputs, image.shape[:2], scale, min_score)

    def _decode(self, outputs: list[np.ndarray], size: tuple[int, int], scale: float, min_score: float) -> Detections:
        cls, obj, bbox, kps = outputs[0:3], outputs[3:6], outputs[6:9], outputs[9:12]
        boxes, scores, marks = [], [], []
        for i, (stride, grid) in enumerate(zip(STRIDES, _anchor_grid(*size), strict=True)):
            score = np.sqrt(np.clip(cls[i][0, :, 0], 0, 1) * np.clip(obj[i][0, :, 0], 0, 1))
            keep = score >= min_score
            if not keep.any():
                continue
            g, b, k = grid[keep], bbox[i][0][keep], kps[i][0][keep]
            centre = (g + b[:, :2]) * stride
            wh = np.exp(b[:, 2:4]) * stride
            boxes.append(np.concatenate([centre - wh / 2, centre + wh / 2], axis=1))
            scores.append(score[keep])
            marks.append((g[:, None, :] + k.reshape(-1, 5, 2)) * stride)
        if not boxes:
            return Detections.empty()
        xyxy = np.concatenate(boxes).astype(np.float32) / scale
        score = np.concatenate(scores).astype(np.float32)
        landmarks = np.concatenate(marks).astype(np.float32) / scale
        keep = nms(xyxy, score, NMS_IOU)
        return Detections(xyxy[keep], score[keep], landmarks[keep])


@lru_cache(maxsize=64)  # frames come in one size; `refine` crops in a few dozen (multiples of 32)
def _anchor_grid(height: int, width: int) -> tuple[np.ndarray, ...]:
    """(col, row) of every anchor per stride, row-major."""
    return tuple(
        np.stack(np.meshgrid(np.arange(width // s), np.arange(height // s)), axis=-1).reshape(-1, 2).astype(np.float32)
        for s in STRIDES
    )


def _torch_module(path):
    from engine.models.yunet import YuNet

    return YuNet.from_onnx(path)


def create(settings: Settings) -> YuNetDetector:
    runner = make_runner(settings.backend, model_path("yunet"), _torch_module)
    return YuNetDetector(runner, settings.detect_width)
