"""Motion smear, as a camera pan or a turning head leaves it on a face: a straight line kernel.

For the benches that measure what a smear does to recognition (`smear_templates.py`) and to the identifier's
look check (`look_smear.py`).
"""

from __future__ import annotations

import cv2
import numpy as np


def line_kernel(length: int, angle_deg: float) -> np.ndarray:
    """A normalised `length` x `length` kernel: a 1 px line through the centre at `angle_deg` (0 = horizontal)."""
    if length < 2:
        return np.ones((1, 1), np.float32)
    kernel = np.zeros((length, length), np.float32)
    centre = (length - 1) / 2
    # Sample the line densely so that diagonal lines carry the same weight as straight ones.
    steps = np.linspace(-centre, centre, 4 * length)
    radians = np.deg2rad(angle_deg)
    xs = np.clip(np.rint(centre + steps * np.cos(radians)), 0, length - 1).astype(int)
    ys = np.clip(np.rint(centre - steps * np.sin(radians)), 0, length - 1).astype(int)
    kernel[ys, xs] = 1.0
    return kernel / kernel.sum()


def smeared(face_bgr: np.ndarray, length: int, angle_deg: float = 0.0) -> np.ndarray:
    """`face_bgr` smeared along `angle_deg` over `length` px (edges replicated: no dark border)."""
    return cv2.filter2D(face_bgr, -1, line_kernel(length, angle_deg), borderType=cv2.BORDER_REPLICATE)
