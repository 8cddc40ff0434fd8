"""A photo as a viewer sees it: turned by its EXIF orientation, and what of it is not read said aloud.

A phone's portrait photo is often stored sideways with an orientation tag. FFmpeg's image reader (behind
cv2.VideoCapture) ignores the tag: the faces then lay on their side, where the detector misses most of them (WIDER
Parade stored so: 117 of 134 faces left visible, against 2 upright), and the output, written without the tag, showed
the picture turned. OpenCV's `imread` turns most pictures itself, but fails on a TIFF tagged 5-8 (OpenCV 5.0:
"Internal imread issue"): there the pixels as stored (FFmpeg's reader) are turned here by the tag, which Pillow reads
from the header alone.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger(__name__)

ORIENTATION_TAG = 0x0112
# EXIF orientation -> how the stored pixels are turned into the picture a viewer sees
_TURNS: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    2: lambda a: cv2.flip(a, 1),
    3: lambda a: cv2.rotate(a, cv2.ROTATE_180),
    4: lambda a: cv2.flip(a, 0),
    5: lambda a: cv2.transpose(a),
    6: lambda a: cv2.rotate(a, cv2.ROTATE_90_CLOCKWISE),
    7: lambda a: cv2.rotate(cv2.transpose(a), cv2.ROTATE_180),
    8: lambda a: cv2.rotate(a, cv2.ROTATE_90_COUNTERCLOCKWISE),
}


class PictureInfo:
    """What the picture's header says: its orientation tag (1: as stored), frames (an animation) and pages."""

    def __init__(self, orientation: int = 1, frames: int = 1, animated: bool = False, known: bool = False,
                 kind: str = "", alpha: bool = False) -> None:
        self.orientation, self.frames, self.animated, self.known = orientation, frames, animated, known
        self.kind = kind  # Pillow's name of the format: "JPEG", "TIFF"...
        self.alpha = alpha  # it has transparency


def picture_info(path: str | Path) -> PictureInfo:
    """The header read by Pillow, lazily (no pixels decoded); an unknown picture: `known` False."""
    try:
        from PIL import Image

        with warnings.catch_warnings():  # a picture over Pillow's pixel limit: its header is all that is read
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
        with image:
            tag = image.getexif().get(ORIENTATION_TAG, 1)
            alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
            return PictureInfo(tag if tag in _TURNS else 1, int(getattr(image, "n_frames", 1) or 1),
                               bool(getattr(image, "is_animated", False)), known=True, kind=image.format or "",
                               alpha=alpha)
    except Exception:  # not a picture Pillow knows (or none at all): the decoders below decide
        return PictureInfo()


def read_upright(path: str | Path, stored: Callable[[], np.ndarray | None]) -> np.ndarray | None:
    """The picture's pixels as a viewer sees them, 8-bit BGR; None where neither `imread` nor `stored` (a decoder
    that reads the pixels as stored: the caller's VideoCapture) can read it. Its later frames or pages are named in
    a warning: only the first is anonymized, and the output holds only that."""
    info = picture_info(path)
    # turned by OpenCV where it reads the tag itself; not tried where it is known to fail (and print an error)
    failing = info.kind == "TIFF" and info.orientation >= 5
    pixels = None if failing else cv2.imread(str(path), cv2.IMREAD_COLOR)
    if pixels is None:
        pixels = stored()  # as stored: turned here by the tag Pillow read
        if pixels is not None and info.orientation != 1:
            pixels = _TURNS[info.orientation](pixels)
    if pixels is not None and info.frames > 1:
        what = "an animation" if info.animated else "a picture of several pages"
        log.warning("%s is %s of %d frames: only its first is anonymized and written", path, what, info.frames)
    return pixels


def read_alpha(path: str | Path, size: tuple[int, int]) -> np.ndarray | None:
    """A transparent picture's alpha, 8-bit, upright as `read_upright`'s pixels (`size`: their height, width); None
    for a picture without one, or one that cannot be read so. Its output keeps it (ImageSink): written without it,
    whatever lay under the transparent parts showed, and the picture no longer looked like its input."""
    info = picture_info(path)
    if not info.alpha:
        return None
    pixels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)  # with its alpha, as stored: not turned by OpenCV
    if pixels is None or pixels.ndim != 3 or pixels.shape[2] != 4:
        return None
    alpha = pixels[..., 3]
    if alpha.dtype != np.uint8:  # 16-bit
        alpha = (alpha >> 8).astype(np.uint8)
    if info.orientation != 1:
        alpha = _TURNS[info.orientation](alpha)
    return np.ascontiguousarray(alpha) if alpha.shape == tuple(size) else None


def unreadable_why(path: str | Path) -> str:
    """Why a picture no decoder read may still be a valid file: said in the refusal."""
    info = picture_info(path)
    if info.known and info.animated:
        return f"an animated picture ({info.frames} frames) is not read: make it a video first (ffmpeg -i IN OUT.mp4)"
    return "not a picture, or corrupt"
