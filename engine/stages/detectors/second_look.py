"""A second, closer look at weak small detections: enlarged, and mirrored, all in one network call each.

Faces a detector scores weakly (0.1-0.5) at the size it saw them are often small ones it would score
clearly when enlarged: on the WIDER FACE 1080p crowds, faces 15-20 px wide that YuNet scored 0.2-0.4 at 1x
scored 0.65 at 2x (`python bench/misses.py`). Enlarging the whole 1080p frame costs 4x; enlarging only the
crops around weak detections costs what their pixels cost. The crops are packed into one picture (a mosaic,
separated by empty gutters) so that a frame's second look is one network call, not one per face, plus one
call on the mirrored mosaic (a face seen mirrored is an independent second opinion: the scores average).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from engine.faces import Detections, box_iou

GUTTER = 16  # empty px between cells: a detection's box stays inside the cell it came from
MATCH_IOU = 0.3  # a box found on the closer look is the weak face it was aimed at when they overlap this much
# Landmarks are ordered left to right in the image: mirroring swaps the eyes and the mouth corners.
MIRROR_ORDER = np.array([1, 0, 2, 4, 3])
AVERAGE = 1  # 1: a box's score is the mean of its plain and mirrored looks; 0: the better (bench/ tries)


@dataclass
class Cell:
    crop: tuple[int, int, int, int]  # x1, y1, x2, y2 in the frame
    scale: float
    at: tuple[int, int]  # x, y of the cell's top-left corner in the mosaic
    size: tuple[int, int]  # w, h of the scaled crop


def _scale(size: np.ndarray | float, face_px: float, min_scale: float) -> np.ndarray | float:
    return np.maximum(min_scale, face_px / np.maximum(size, 1.0))


def cell_areas(boxes: np.ndarray, face_px: float, min_scale: float, context: float) -> np.ndarray:
    """The mosaic pixels each box's cell takes (before the frame's edges cut it): what a second look costs."""
    size = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    return (size * (1 + 2 * context) * _scale(size, face_px, min_scale)) ** 2


def plan(boxes: np.ndarray, frame_shape: tuple[int, ...], face_px: float, min_scale: float, context: float,
         width: int) -> tuple[list[Cell], tuple[int, int]]:
    """Cells for each box (enlarged `min_scale` times, or until the box is `face_px` wide, with `context` box
    sizes around it) packed in rows (shelves) `width` px wide; and the mosaic's (height, width). The shelves
    leave some of the mosaic empty: its pixels exceed the cells' (`cell_areas`)."""
    h, w = frame_shape[:2]
    cells: list[Cell] = []
    x = y = shelf = 0
    for x1, y1, x2, y2 in boxes:
        size = max(float(x2 - x1), float(y2 - y1), 1.0)
        scale = float(_scale(size, face_px, min_scale))
        pad = context * size
        crop = (int(max(0, x1 - pad)), int(max(0, y1 - pad)), int(min(w, np.ceil(x2 + pad))),
                int(min(h, np.ceil(y2 + pad))))
        cw, ch = max(1, round((crop[2] - crop[0]) * scale)), max(1, round((crop[3] - crop[1]) * scale))
        if x and x + cw > width:
            x, y, shelf = 0, y + shelf + GUTTER, 0
        cells.append(Cell(crop, scale, (x, y), (cw, ch)))
        x += cw + GUTTER
        shelf = max(shelf, ch)
    mosaic_w = max((c.at[0] + c.size[0] for c in cells), default=0)
    return cells, (y + shelf, mosaic_w)


def build(frame: np.ndarray, cells: list[Cell], shape: tuple[int, int]) -> np.ndarray:
    mosaic = np.zeros((*shape, 3), frame.dtype)
    for c in cells:
        x1, y1, x2, y2 = c.crop
        mosaic[c.at[1]:c.at[1] + c.size[1], c.at[0]:c.at[0] + c.size[0]] = cv2.resize(
            frame[y1:y2, x1:x2], c.size, interpolation=cv2.INTER_LINEAR)
    return mosaic


def to_frame(found: Detections, cells: list[Cell]) -> list[Detections]:
    """The mosaic's detections per cell, in frame coordinates (a box goes to the cell holding its centre)."""
    centres = (found.xyxy[:, :2] + found.xyxy[:, 2:]) / 2
    out = []
    for c in cells:
        inside = ((centres[:, 0] >= c.at[0]) & (centres[:, 0] < c.at[0] + c.size[0])
                  & (centres[:, 1] >= c.at[1]) & (centres[:, 1] < c.at[1] + c.size[1]))
        dets = found[inside]
        offset = np.array([c.at[0], c.at[1]], np.float32)
        origin = np.array([c.crop[0], c.crop[1]], np.float32)
        xyxy = (dets.xyxy - np.tile(offset, 2)) / c.scale + np.tile(origin, 2)
        marks = (dets.landmarks - offset) / c.scale + origin
        out.append(Detections(xyxy.astype(np.float32), dets.score, marks.astype(np.float32)))
    return out


def mirror(found: Detections, width: int) -> Detections:
    """Detections made on a horizontally flipped picture, in the unflipped picture's coordinates."""
    xyxy = found.xyxy.copy()
    xyxy[:, [0, 2]] = width - found.xyxy[:, [2, 0]]
    marks = found.landmarks[:, MIRROR_ORDER].copy()
    marks[:, :, 0] = width - marks[:, :, 0]
    return Detections(xyxy, found.score, marks)


def best_match(dets: Detections, box: np.ndarray) -> tuple[float, int]:
    """(score, index) of the best-scoring detection overlapping `box`, or (0, -1)."""
    best, index = 0.0, -1
    for i, (b, s) in enumerate(zip(dets.xyxy, dets.score, strict=True)):
        if s > best and box_iou(b, box) >= MATCH_IOU:
            best, index = float(s), i
    return best, index


def second_look(frame: np.ndarray, weak: Detections, detect: Callable[[np.ndarray], Detections],
                face_px: float, min_scale: float, context: float, width: int) -> Detections:
    """`weak` rescored: each box's score becomes the mean of its best matches on the enlarged crop and on
    its mirror image (0 where one look finds nothing), and its box and landmarks those of the enlarged look.
    `detect` runs the network on a picture at its own size, returning every box at a low bar."""
    if not len(weak):
        return weak
    cells, shape = plan(weak.xyxy, frame.shape, face_px, min_scale, context, width)
    mosaic = build(frame, cells, shape)
    plain = to_frame(detect(mosaic), cells)
    mirrored = to_frame(mirror(detect(mosaic[:, ::-1]), shape[1]), cells)
    xyxy, score, marks = weak.xyxy.copy(), np.zeros(len(weak), np.float32), weak.landmarks.copy()
    for k in range(len(weak)):
        s1, i1 = best_match(plain[k], weak.xyxy[k])
        s2, i2 = best_match(mirrored[k], weak.xyxy[k])
        score[k] = (s1 + s2) / 2 if AVERAGE else max(s1, s2)
        source, index = (plain[k], i1) if s1 >= s2 else (mirrored[k], i2)
        if index >= 0:
            xyxy[k], marks[k] = source.xyxy[index], source.landmarks[index]
    return Detections(xyxy, score, marks)
