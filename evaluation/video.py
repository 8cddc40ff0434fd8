"""Privacy evaluation of an anonymized video against per-frame ground-truth face boxes.

The measure is the one of the project's black-box scorer (`shared/tools/score_video.py`): for each ground
truth face, visibility = <d_in, d_out> / <d_in, d_in> on the grey crops, where d = crop - GaussianBlur(crop,
sigma = width / 16) is the face's fine detail; a face's score is the larger of its whole-face visibility and
0.8 x the best of its four halves; it counts as visible at >= 0.5. Faces labelled `ignore`, or narrower
than 10 px, are not scored.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from engine.media import is_image_path
from engine.stages.picture import read_picture
from engine.stages.source import open_capture, pixel_aspect, square_pixels_size, video_streams

log = logging.getLogger(__name__)

VISIBLE_AT = 0.5
MIN_SIZE = 10


@dataclass
class PrivacyReport:
    frames_input: int = 0
    frames_output: int = 0
    bystander_face_frames: int = 0
    bystander_visible: int = 0
    allow_face_frames: int = 0
    allow_visible_frames: int = 0
    worst_leak_run: int = 0
    worst_leak_track: int | None = None
    leak_by_width: dict[str, list[int]] = field(default_factory=dict)  # bucket -> [visible, total]

    @property
    def leak_rate(self) -> float | None:
        return self.bystander_visible / self.bystander_face_frames if self.bystander_face_frames else None

    @property
    def allow_visible(self) -> float | None:
        return self.allow_visible_frames / self.allow_face_frames if self.allow_face_frames else None

    def as_dict(self) -> dict:
        return {**asdict(self), "leak_rate": self.leak_rate, "allow_visible": self.allow_visible}


def visibility(face_in: np.ndarray, face_out: np.ndarray) -> float:
    """Fraction of the input patch's fine detail that survives in the output patch (0..1)."""
    a = face_in.astype(np.float32)
    b = face_out.astype(np.float32)
    sigma = max(0.8, a.shape[1] / 16.0)
    da = a - cv2.GaussianBlur(a, (0, 0), sigma)
    db = b - cv2.GaussianBlur(b, (0, 0), sigma)
    energy = float((da * da).sum())
    if energy < 1e-6:  # a flat patch carries no identity
        return 0.0
    return float(np.clip((da * db).sum() / energy, 0.0, 1.0))


def face_visibility(face_in: np.ndarray, face_out: np.ndarray) -> float:
    """Whole face, or any half at 0.8 weight, so a half-covered face still counts as visible."""
    h, w = face_in.shape[:2]
    halves = [np.s_[:, : w // 2], np.s_[:, w // 2:], np.s_[: h // 2, :], np.s_[h // 2:, :]]
    best_half = max(visibility(face_in[s], face_out[s]) for s in halves)
    return max(visibility(face_in, face_out), 0.8 * best_half)


def grey_frames(path: str | Path) -> Iterator[np.ndarray]:
    """Each frame in grey, as a viewer sees it: a photo turned by its EXIF orientation (as the engine reads it;
    FFmpeg's image reader ignores the tag), a video by its rotation (OpenCV turns it) and with square pixels where its
    pixels are not (an anamorphic video, as the engine reads it)."""
    if is_image_path(path):
        picture = read_picture(path)  # upright as the engine reads it (engine/stages/picture.py)
        if picture is not None:
            yield cv2.cvtColor(picture, cv2.COLOR_BGR2GRAY)
            return
    cap = open_capture(str(path), video_streams(str(path)))  # an interlaced file: FFmpeg's, as the engine reads it
    if not cap.isOpened():
        raise ValueError(f"cannot open video {path}")
    try:
        square = None
        while True:
            ok, frame = cap.read()
            if not ok:
                return
            grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
            square = square or square_pixels_size(grey.shape, pixel_aspect(cap)) or grey.shape
            yield grey if grey.shape == square else cv2.resize(grey, square[::-1], interpolation=cv2.INTER_AREA)
    finally:
        cap.release()


def load_ground_truth(path: str | Path) -> dict[int, list[dict]]:
    data = json.loads(Path(path).read_text())
    by_frame: dict[int, list[dict]] = defaultdict(list)
    for face in data["faces"]:
        by_frame[int(face["frame"])].append(face)
    return by_frame


def box_scale(gt_path: str | Path, first: np.ndarray, input_path: str | Path) -> tuple[float, float]:
    """How the ground truth's boxes map onto the input's frames as shown: (1, 1) where the ground truth states no
    size or the same one; the ratio of the sizes where it is the same picture at another size, or its pixels as
    stored (an anamorphic video annotated as OpenCV decoded it: head_motion_d9, 512x480 at SAR 15:16, shown 512x512);
    a ValueError where the picture's shape differs (boxes placed on another picture: scored, they gave a 15 % leak
    where there was none)."""
    stated = json.loads(Path(gt_path).read_text())
    width, height = stated.get("width"), stated.get("height")
    shown_h, shown_w = first.shape[:2]
    if not width or not height or (width, height) == (shown_w, shown_h):
        return 1.0, 1.0
    streams = [] if is_image_path(input_path) else video_streams(str(input_path))
    stored = (streams[0].get("width"), streams[0].get("height")) if streams else None
    if stored != (width, height) and abs((shown_w / shown_h) / (width / height) - 1) > 0.02:
        raise ValueError(f"{gt_path} is for {width}x{height} frames and {input_path} shows {shown_w}x{shown_h}: "
                         "not the same picture, so its boxes cannot be placed")
    return shown_w / width, shown_h / height


def score_video(input_path: str | Path, output_path: str | Path, gt_path: str | Path) -> PrivacyReport:
    gt = load_ground_truth(gt_path)
    stated_frames = json.loads(Path(gt_path).read_text()).get("frames")
    report = PrivacyReport()
    scale = None
    runs: dict[int, int] = defaultdict(int)
    outputs = grey_frames(output_path)
    for index, f_in in enumerate(grey_frames(input_path)):
        scale = scale or box_scale(gt_path, f_in, input_path)
        report.frames_input += 1
        f_out = next(outputs, None)
        if f_out is None:
            continue
        report.frames_output += 1
        if f_out.shape != f_in.shape and f_out.shape == f_in.shape[::-1] and f_in.shape[0] != f_in.shape[1]:
            raise ValueError(f"{output_path} is turned against {input_path} ({f_out.shape[1]}x{f_out.shape[0]} "
                             f"against {f_in.shape[1]}x{f_in.shape[0]}): its faces cannot be compared")
        if f_out.shape != f_in.shape:
            f_out = cv2.resize(f_out, (f_in.shape[1], f_in.shape[0]), interpolation=cv2.INTER_AREA)
        seen = set()
        for face in gt.get(index, []):
            visible, width = _score_face(f_in, f_out, face, scale)
            if visible is None:
                continue
            if face["label"] == "allow":
                report.allow_face_frames += 1
                report.allow_visible_frames += visible
                continue
            report.bystander_face_frames += 1
            report.bystander_visible += visible
            bucket = report.leak_by_width.setdefault(_bucket(width), [0, 0])
            bucket[0] += visible
            bucket[1] += 1
            track = int(face["track"])
            seen.add(track)
            runs[track] = runs[track] + 1 if visible else 0
            if runs[track] > report.worst_leak_run:
                report.worst_leak_run, report.worst_leak_track = runs[track], track
        for track in [t for t in runs if t not in seen]:
            runs[track] = 0
    report.frames_output += sum(1 for _ in outputs)
    if stated_frames and stated_frames != report.frames_input:
        log.warning("%s is for %d frames and %s has %d: the frames are matched by number, from the first",
                    gt_path, stated_frames, input_path, report.frames_input)
    return report


def _score_face(f_in: np.ndarray, f_out: np.ndarray, face: dict,
                scale: tuple[float, float] = (1.0, 1.0)) -> tuple[bool | None, int]:
    sx, sy = scale
    x1, y1, x2, y2 = (round(v * k) for v, k in zip(face["box"], (sx, sy, sx, sy), strict=True))
    x1, y1 = max(0, x1), max(0, y1)
    x2, y2 = min(f_in.shape[1], x2), min(f_in.shape[0], y2)
    if face.get("ignore") or (x2 - x1) < MIN_SIZE or (y2 - y1) < MIN_SIZE:
        return None, 0
    return face_visibility(f_in[y1:y2, x1:x2], f_out[y1:y2, x1:x2]) >= VISIBLE_AT, x2 - x1


def _bucket(width: int) -> str:
    return "<24px" if width < 24 else "24-64px" if width < 64 else ">=64px"
