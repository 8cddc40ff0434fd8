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
# where the streamer stood kept his id: shown). Two frames are compared over the picture inside bars they *both*
# have: the longest run of rows (columns) of the 128x72 look holding picture in either frame, with as many dark
# lines on one side of it as on the other (a picture is centred; a dark sky at one edge of a night scene is picture).
# A logo or a caption in a bar is a shorter run of its own, left out; deciding for the pair, not for each frame, keeps
# a caption that comes and goes, or a fade, from moving the area compared mid-shot (a review's cases).
BAR_DARKEST = 24  # grey level: black bars, as encoders leave them (0-20 after H.264's ringing)
BAR_LIT = 0.1  # a line with more of its samples brighter than that is picture (a logo or a handle in a bar is not)
MIN_BAR = 2  # rows (columns) of the look: thinner is an encoder's edge, not a bar
BAR_SKEW = 2  # the two bars of a pair may differ by this many lines: rounding of the picture's place
PICTURE_GAP = 3  # dark lines inside the picture (a dark stripe across it) that do not split it
MIN_PICTURE = 0.25  # of each side: less left inside the "bars" is a dark frame, not a letterbox: the whole is used
LOOK_SIZE = (128, 72)


def look(frame: np.ndarray) -> np.ndarray:
    """The frame's coarse look (128x72 grey, ~0.05 ms at 1080p), which `is_cut` compares."""
    sampled = cv2.resize(frame, LOOK_SIZE, interpolation=cv2.INTER_NEAREST)  # 22 us, against 120 for AREA
    return cv2.cvtColor(sampled, cv2.COLOR_BGR2GRAY) if sampled.ndim == 3 else sampled


def signature(look_: np.ndarray) -> np.ndarray:
    """A look (or part of one) as 32x18, zero mean, unit length."""
    patch = cv2.resize(look_, (32, 18), interpolation=cv2.INTER_AREA).astype(np.float32).ravel()
    patch -= patch.mean()
    patch /= max(float(np.linalg.norm(patch)), 1e-6)
    return patch


def correlation(previous: np.ndarray, current: np.ndarray) -> float:
    """How alike two looks are (1: the same picture), over the picture inside the bars both have."""
    rows, cols = _common_picture(previous, current)
    return float(signature(previous[rows, cols]) @ signature(current[rows, cols]))


def is_cut(previous: np.ndarray | None, current: np.ndarray, below: float = CUT_BELOW) -> bool:
    return previous is not None and correlation(previous, current) < below


def _common_picture(a: np.ndarray, b: np.ndarray) -> tuple[slice, slice]:
    lit_a, lit_b = a > BAR_DARKEST, b > BAR_DARKEST
    rows = _picture((lit_a.mean(axis=1) > BAR_LIT) | (lit_b.mean(axis=1) > BAR_LIT))
    cols = _picture((lit_a.mean(axis=0) > BAR_LIT) | (lit_b.mean(axis=0) > BAR_LIT))
    return rows, cols


def _picture(lit: np.ndarray) -> slice:
    """The longest run of lines holding picture (`lit`; gaps of up to PICTURE_GAP dark lines bridged): a caption or a
    logo in a bar is a shorter run apart from it. All the lines where that run leaves under MIN_BAR outside it, or is
    under MIN_PICTURE of them (a dark frame, not a letterbox)."""
    runs, start, gap = [], None, 0
    for i, on in enumerate(lit):
        if on:
            start, gap = (i if start is None else start), 0
            end = i
        elif start is not None:
            gap += 1
            if gap > PICTURE_GAP:
                runs.append((start, end))
                start, gap = None, 0
    if start is not None:
        runs.append((start, end))
    if not runs:
        return slice(None)
    first, last = max(runs, key=lambda r: r[1] - r[0])
    before, after = first, len(lit) - 1 - last
    if min(before, after) < MIN_BAR or abs(before - after) > BAR_SKEW or last - first + 1 < MIN_PICTURE * len(lit):
        return slice(None)
    return slice(first, last + 1)
