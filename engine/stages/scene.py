"""A frame's coarse look, to tell a cut to another shot from the frame before (a camera switched in the encoder app,
an edited clip): the tracker may carry a face's id, or a coasted frame its boxes, onto whoever stands there now."""

from __future__ import annotations

import cv2
import numpy as np

# Correlation of two consecutive frames' signatures below this: a cut. The dev clip's 3 cuts correlate 0.01-0.27
# with the frame before, every other frame pair at least 0.69.
CUT_BELOW = 0.5


# A letterboxed or pillarboxed picture (a phone's vertical video restreamed in 16:9, a 16:9 one in a vertical
# canvas): its black bars are the same in every frame and outweigh the picture in the signature, so a cut between two
# shots still correlated 0.56 (the dev clip in 1080x1920: its 0.15-0.26 cuts were missed, and a bystander standing
# where the streamer stood kept his id: shown). The signature is taken of the picture inside such bars: edge rows
# (columns) of the sampled frame whose every pixel is this dark, as many at the top as at the bottom (left, right):
# a picture is centred in its bars, where a dark sky or wall at one edge of a night scene is not.
BAR_DARKEST = 24  # grey level: black bars, as encoders leave them (0-20 after H.264's ringing)
MIN_BAR = 2  # rows (columns) of the 128x72 sample: thinner is an encoder's edge, not a bar
BAR_SKEW = 2  # the two bars of a pair may differ by this many rows (columns): rounding of the picture's place
MIN_PICTURE = 0.25  # of each side: less left inside the "bars" is a dark frame, not a letterbox: the whole is used


def signature(frame: np.ndarray) -> np.ndarray:
    """The frame's picture (inside black bars) as 32x18 grey, zero mean, unit length (~0.1 ms at 1080p)."""
    sampled = cv2.resize(frame, (128, 72), interpolation=cv2.INTER_NEAREST)  # 22 us, against 120 for AREA
    sampled = sampled[_inside_bars(sampled)]
    patch = cv2.cvtColor(cv2.resize(sampled, (32, 18), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2GRAY)
    patch = patch.astype(np.float32).ravel()
    patch -= patch.mean()
    patch /= max(float(np.linalg.norm(patch)), 1e-6)
    return patch


def _inside_bars(sampled: np.ndarray) -> tuple[slice, slice]:
    """The rows and columns of `sampled` between black bars at its edges (all of it where there are none)."""
    bright = sampled.max(axis=2) > BAR_DARKEST if sampled.ndim == 3 else sampled > BAR_DARKEST
    return _between(bright.any(axis=1)), _between(bright.any(axis=0))


def _between(lit: np.ndarray) -> slice:
    """The lines between two matching dark bars, given which lines hold any picture (`lit`)."""
    where = np.flatnonzero(lit)
    if len(where) == 0:
        return slice(None)
    first, last = int(where[0]), int(where[-1])
    before, after = first, len(lit) - 1 - last
    if min(before, after) < MIN_BAR or abs(before - after) > BAR_SKEW or last - first + 1 < MIN_PICTURE * len(lit):
        return slice(None)
    return slice(first, last + 1)


def is_cut(previous: np.ndarray | None, current: np.ndarray, below: float = CUT_BELOW) -> bool:
    return previous is not None and float(current @ previous) < below
