"""The camera's own motion between two frames the tracker sees (a pan, a zoom, a walk, a roll), for the tracker to
move every track with before it matches them (BoT-SORT's camera motion compensation).

Without it a track predicts a face where its own past velocity carries it: a face that starts in a pan starts at
rest, and where live mode drops frames (a crowd: ~8 of 30 frames detected) a face moves a face's width or more
between two detections. Every face then started a new track at each detection while the old ones were held at
their stale boxes for `hold_seconds`: WIDER marchingband played live at 1080p (~110 faces) carried 650-860 regions
a frame, and anonymizing and tracking them kept it at 6-8 fps (bench/profile_live.py, bench/live_variants.py).

Sparse optical flow on a small grey copy of the frame, and a similarity transform (RANSAC) fitted to it: the motion
most of the picture shares. 1-1.6 ms a 1080p frame on one core (an area resize straight from 1080p took 1.9 ms
alone, LK with a 15 px window 1.7; the cheaper steps below move the fit by under 2 px at p90 on the corpus' clips).
"""

from __future__ import annotations

import cv2
import numpy as np

LONG_SIDE = 320  # the grey copy's long side: LK is exact to ~0.1 px there, ~0.6 px at 1080p, far under a face
MAX_POINTS = 200
MIN_POINTS = 20  # fewer corners (a dark or flat frame) or fewer inliers: no estimate, the tracks are not moved
MIN_INLIERS = 0.5  # share of the tracked corners the transform must explain: less is several motions, or a cut
RANSAC_PX = 1.0  # in the grey copy's pixels
MAX_SCALE_STEP = 0.2  # a zoom of more than 20 % between two frames is a cut or a failed fit, not a camera
# A fit that fails after a good one (a whip pan's smear, a dark frame) gives the last good motion again, for this many
# frames: the tracks' velocities hold the face's own motion only, so no motion at all would stop every track where
# the pan was carrying it, just when the detector is likeliest to miss faces.
KEEP_MOTION_FRAMES = 2


class CameraMotion:
    """`estimate(frame)`: the 2x3 similarity transform taking the last frame given to this one, in the frame's
    pixels, or None where the picture gives no reliable answer (too few corners, no dominant motion, a cut)."""

    def __init__(self) -> None:
        self._previous: np.ndarray | None = None
        self._scale = 1.0
        self._last: np.ndarray | None = None  # the last good fit, and fits failed since
        self._misses = 0

    def reset(self) -> None:
        """A new picture (a cut, a reconnect, a pause): the next frame has nothing to be compared with."""
        self._previous, self._last = None, None

    def estimate(self, frame: np.ndarray) -> np.ndarray | None:
        small = self._grey(frame)
        previous, self._previous = self._previous, small
        if previous is None or previous.shape != small.shape:
            self._last = None
            return None
        transform = self._fit(previous, small)
        if transform is not None:
            self._last, self._misses = transform, 0
            return transform
        self._misses += 1
        return None if self._last is None or self._misses > KEEP_MOTION_FRAMES else self._last.copy()

    def _fit(self, previous: np.ndarray, small: np.ndarray) -> np.ndarray | None:
        corners = cv2.goodFeaturesToTrack(previous, MAX_POINTS, 0.01, 8, blockSize=3)
        if corners is None or len(corners) < MIN_POINTS:
            return None
        moved, found, _ = cv2.calcOpticalFlowPyrLK(previous, small, corners, None, winSize=(9, 9), maxLevel=3)
        found = found.ravel() == 1
        if found.sum() < MIN_POINTS:
            return None
        transform, inliers = cv2.estimateAffinePartial2D(corners[found], moved[found], method=cv2.RANSAC,
                                                         ransacReprojThreshold=RANSAC_PX)
        if transform is None or inliers is None or inliers.sum() < max(MIN_POINTS, MIN_INLIERS * found.sum()):
            return None
        scale = float(np.sqrt(abs(np.linalg.det(transform[:, :2]))))
        if abs(scale - 1.0) > MAX_SCALE_STEP:
            return None
        transform[:, 2] *= self._scale  # the grey copy's pixels to the frame's (the linear part is the same)
        return transform

    def _grey(self, frame: np.ndarray) -> np.ndarray:
        height, width = frame.shape[:2]
        self._scale = max(width, height) / LONG_SIDE  # a vertical phone picture too: 180x320, not 320x569
        size = (max(1, round(width / self._scale)), max(1, round(height / self._scale)))
        if max(width, height) > 4 * LONG_SIDE:  # every other pixel first: 0.3 ms instead of 1.9 at 1080p, same fit
            frame = cv2.resize(frame, (2 * size[0], 2 * size[1]), interpolation=cv2.INTER_NEAREST)
        small = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
        return cv2.cvtColor(small, cv2.COLOR_BGR2GRAY) if small.ndim == 3 else small
