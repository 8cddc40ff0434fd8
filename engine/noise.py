"""How grainy a frame, or a face's surroundings, is, and smoothed views for the detector and the recognizer.

A night street's sensor grain takes a face's detection score down with it: on the dev clip under Gaussian noise of
sigma 8 a dark 45 px face scored 0.04 where the clean clip scores 0.63, and 56 of its face-frames went out (a
robustness sweep, docs/measurements.md, stop 36). A bilateral filter, which smooths the grain and keeps edges, gives
back some of it (detectors/yunet.py, file mode). Grain also moves a face's embedding away from the streamer's clean
photo: a dark, grainy face is recognised in 85 % of LFW's genuine pairs where a clean one is in 99 %, and in 92 %
when its aligned crop is smoothed (recognize.py, every path; docs/measurements.md, stop 37). Both run only where the
grain is measured: smoothing clean pixels loses small faces, and a little of a clean face's identity.
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
# A face's grain is measured on its box grown by half its size on each side (the pixels the landmarker refines in;
# the live worker's crop holds 1.5 sizes, so both paths measure the same pixels), at most FACE_SAMPLE_SIDE square
# around its centre (a big face's cost stays ~0.1 ms; its grain is the same everywhere).
FACE_CONTEXT = 0.5
FACE_SAMPLE_SIDE = 160


def _response(pixels: np.ndarray) -> np.ndarray | None:
    """|Laplacian difference| of the pixels' grey (None when too small to measure)."""
    grey = cv2.cvtColor(pixels, cv2.COLOR_BGR2GRAY) if pixels.ndim == 3 else pixels
    if min(grey.shape[:2]) < 3:
        return None
    return np.abs(cv2.filter2D(grey.astype(np.float32), -1, _KERNEL)[1:-1, 1:-1])


def _centre(pixels: np.ndarray, side: int) -> np.ndarray:
    height, width = pixels.shape[:2]
    top, left = max(0, (height - side) // 2), max(0, (width - side) // 2)
    return pixels[top: top + side, left: left + side]


def noise_sigma(frame: np.ndarray) -> float:
    """The noise's sigma in grey levels, estimated on the frame's centre (Immerkaer 1996)."""
    response = _response(_centre(frame, SAMPLE_SIDE))
    return 0.0 if response is None else math.sqrt(math.pi / 2) * float(response.mean()) / 6


def face_noise_sigma(image: np.ndarray, box: np.ndarray) -> float:
    """The noise's sigma around the face in `box` (x1, y1, x2, y2), in grey levels.

    The median of the same Laplacian difference, not its mean: a face is texture (stubble, glasses, hair), which
    the mean counts as grain (a sharp portrait of a stubbled man read 4.2, 38 % of the OpenFace examples' faces
    over NOISY_SIGMA); the median looks past edges to the skin and the background between them (those faces
    1.6-3.0, LFW's at most 1.2; the dev clip's under sigma-8 grain 4.5, sigma 16 8.2; docs/measurements.md, stop
    37). Gaussian noise of sigma s gives |response| a median of 0.6745 x 6 s.
    """
    x1, y1, x2, y2 = (float(v) for v in np.asarray(box, np.float64).reshape(4))
    grow_x, grow_y = FACE_CONTEXT * (x2 - x1), FACE_CONTEXT * (y2 - y1)
    height, width = image.shape[:2]
    left, top = int(max(0.0, x1 - grow_x)), int(max(0.0, y1 - grow_y))
    right, bottom = int(min(width, x2 + grow_x)), int(min(height, y2 + grow_y))
    if right <= left or bottom <= top:
        return 0.0
    pixels = _centre(image[top:bottom, left:right], FACE_SAMPLE_SIDE)
    grey = cv2.cvtColor(pixels, cv2.COLOR_BGR2GRAY) if pixels.ndim == 3 else pixels
    if min(grey.shape[:2]) < 3:
        return 0.0
    # Whole numbers (8-bit pixels, a whole kernel: |response| <= 16 x 255): the median from their counts, as
    # np.median gives it (the two middle values averaged), in a third of its time
    response = np.abs(cv2.filter2D(grey, cv2.CV_16S, _KERNEL)[1:-1, 1:-1]).ravel()
    below = np.cumsum(np.bincount(response))
    middle = np.searchsorted(below, [(response.size - 1) // 2 + 1, response.size // 2 + 1])
    return float(middle.mean()) / (6 * 0.6745)


def smoothed(image: np.ndarray) -> np.ndarray:
    """`image` with its grain smoothed and its edges kept (the detector's letterboxed input, an aligned face)."""
    return cv2.bilateralFilter(image, *BILATERAL)
