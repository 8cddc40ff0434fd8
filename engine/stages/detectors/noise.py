"""How noisy a frame is, and a smoothed view of it for the detector (file mode, detectors/yunet.py).

A night street's sensor grain takes a face's score down with it: on the dev clip under Gaussian noise of sigma 8 a
dark 45 px face scored 0.04 where the clean clip scores 0.63, and 56 of its face-frames went out (a robustness sweep,
docs/measurements.md, stop 36). A bilateral filter, which smooths the grain and keeps edges, gives back some of it.
It runs only on frames measured noisy: smoothing a clean frame's small faces loses them.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

# Immerkaer's fast estimate of a Gaussian noise's sigma: a Laplacian difference that cancels smooth image content.
_KERNEL = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)
NOISY_SIGMA = 3.5  # grey levels. The 17 real clips measure 0.4-3.3 (a GIF's dither) but store-aisle 5.0 (a
#                    security camera); the dev clip 0.5 clean, 4.7 under sigma-8 noise (after x264 at crf 12)
SAMPLE_SIDE = 480  # the estimate looks at the frame's centre, this many px square: a 1080p frame's 2.5 ms -> 0.3
#                   (file mode measures every frame)
BILATERAL = (7, 40, 5)  # diameter, colour sigma, space sigma: the grain's sigma 8 smoothed, a face's edges kept


def noise_sigma(frame: np.ndarray) -> float:
    """The noise's sigma in grey levels, estimated on the frame's centre (Immerkaer 1996)."""
    height, width = frame.shape[:2]
    top, left = max(0, (height - SAMPLE_SIDE) // 2), max(0, (width - SAMPLE_SIDE) // 2)
    centre = frame[top: top + SAMPLE_SIDE, left: left + SAMPLE_SIDE]
    grey = cv2.cvtColor(centre, cv2.COLOR_BGR2GRAY) if centre.ndim == 3 else centre
    if min(grey.shape) < 3:
        return 0.0
    response = cv2.filter2D(grey.astype(np.float32), -1, _KERNEL)[1:-1, 1:-1]
    return math.sqrt(math.pi / 2) * float(np.abs(response).mean()) / 6


def smoothed(image: np.ndarray) -> np.ndarray:
    """`image` with its grain smoothed and its edges kept (the detector's letterboxed input)."""
    return cv2.bilateralFilter(image, *BILATERAL)
