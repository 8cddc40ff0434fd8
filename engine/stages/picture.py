"""A photo as a viewer sees it: turned by its orientation tag, with its transparency, and what of it is not read said.

A phone's portrait photo is often stored sideways with an EXIF orientation tag. FFmpeg's image reader (behind
cv2.VideoCapture) ignores the tag: the faces then lay on their side, where the detector misses most of them (WIDER
Parade stored so: 117 of 134 faces left visible, against 2 upright), and the output, written without the tag, showed
the picture turned. Pillow reads the tag from the header alone (an AVIF's rotation and mirroring too), and is the one
authority on it here. OpenCV 5's `imread` turns JPEG, PNG, WebP and TIFF 2-4 itself, fails on a TIFF tagged 5-8
("Internal imread issue") and never turns an AVIF: where it does not, the pixels as stored are turned here; and a
quarter turn that did not happen (another OpenCV, another type) is caught by the picture's shape.
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
QUARTER_TURNS = (5, 6, 7, 8)  # the tags whose picture is the stored one's height wide
# Pillow's format names whose tag OpenCV's imread applies itself (measured on opencv-python 5.0.0.93; TIFF only 2-4)
OPENCV_TURNS = ("JPEG", "MPO", "PNG", "WEBP", "TIFF")
# A photo's run holds about this many bytes a pixel at its peak (the decoded picture, the detector's views, the output
# and its encoding: 11.3 GB for a 900 MP PNG, measured with /usr/bin/time; 14 leaves a margin).
PEAK_BYTES_PER_PIXEL = 14
OPENCV_MAX_PIXELS = 1 << 30  # OpenCV's readers refuse more (CV_IO_MAX_IMAGE_PIXELS) with an assertion
MEMINFO = Path("/proc/meminfo")
CGROUP = Path("/sys/fs/cgroup")


class PictureInfo:
    """What the picture's header says: its orientation tag (1: as stored), stored size, frames and transparency."""

    def __init__(self, orientation: int = 1, frames: int = 1, animated: bool = False, known: bool = False,
                 kind: str = "", alpha: bool = False, stored: tuple[int, int] = (0, 0)) -> None:
        self.orientation, self.frames, self.animated, self.known = orientation, frames, animated, known
        self.kind = kind  # Pillow's name of the format: "JPEG", "TIFF"...
        self.alpha = alpha  # it has transparency
        self.stored = stored  # (height, width) as Pillow states it: as stored (a TIFF's: turned, in Pillow 13)

    def upright_shape(self) -> tuple[int, int]:
        height, width = self.stored
        return (width, height) if self.orientation in QUARTER_TURNS else (height, width)


def _open(path: str | Path):
    """Pillow's lazy image, for its header only, whatever its pixel count: nothing here decodes its pixels (OpenCV's
    own limit applies to those)."""
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    try:
        Image.MAX_IMAGE_PIXELS = None  # a picture over Pillow's limit (a decompression-bomb guard) still has a header
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return Image.open(path)
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def picture_info(path: str | Path) -> PictureInfo:
    """The header read by Pillow, lazily (no pixels decoded); an unknown picture: `known` False."""
    try:
        with _open(path) as image:
            tag = _orientation(image)
            alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
            return PictureInfo(tag if tag in _TURNS else 1, int(getattr(image, "n_frames", 1) or 1),
                               bool(getattr(image, "is_animated", False)), known=True, kind=image.format or "",
                               alpha=alpha, stored=(image.height, image.width))
    except Exception:  # not a picture Pillow knows (or none at all): the decoders below decide
        return PictureInfo()


def _orientation(image) -> int:
    """The orientation tag, from the header alone. A PNG's `getexif()` decodes the whole picture looking for an eXIf
    chunk after its pixels (137 ms for 12 MP, and no pixel limit): a PNG's tag is taken only where its header has one,
    which is where every writer puts it."""
    if image.format == "PNG":
        from PIL import Image

        raw = image.info.get("exif")
        if not raw:
            return 1
        exif = Image.Exif()
        exif.load(raw)
        return exif.get(ORIENTATION_TAG, 1)
    return image.getexif().get(ORIENTATION_TAG, 1)


def too_large_why(info: PictureInfo) -> str | None:
    """Why a picture is refused before it is decoded, from its header's size: more pixels than OpenCV reads, or more
    than this machine's free memory holds while it is anonymized. Without the check such a photo ended in OpenCV's
    assertion or Python's MemoryError (or the kernel's OOM killer) after minutes; None where it fits."""
    height, width = info.stored
    pixels = height * width
    if not pixels:
        return None  # no size in a header Pillow knows: the decoders decide
    size = f"{width}x{height}, {pixels / 1e6:,.0f} megapixels"
    shrink = "scale it down first (half its width and height is a quarter of the pixels: magick IN -resize 50% OUT)"
    if pixels > OPENCV_MAX_PIXELS:
        return f"too large ({size}; at most {OPENCV_MAX_PIXELS / 1e6:,.0f} are read): {shrink}"
    needed, free = pixels * PEAK_BYTES_PER_PIXEL, available_memory()
    if free is not None and needed > free:
        return (f"too large for this machine's memory ({size} need about {needed / 1e9:.1f} GB, "
                f"{free / 1e9:.1f} GB is free): {shrink}")
    return None


def available_memory() -> int | None:
    """Bytes this process may still take: the kernel's MemAvailable, less where a cgroup v2 limit is lower; None where
    neither can be read."""
    free = None
    try:
        for line in MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                free = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        limit = (CGROUP / "memory.max").read_text().strip()
        if limit != "max":
            left = int(limit) - int((CGROUP / "memory.current").read_text())
            free = left if free is None else min(free, left)
    except (OSError, ValueError):  # no cgroup v2 here, or no limit
        pass
    return free


def _imread(path: str | Path, flags: int) -> np.ndarray | None:
    """cv2.imread, None where it raises (a picture over its own limits) as where it fails."""
    try:
        return cv2.imread(str(path), flags)
    except cv2.error as exc:
        log.debug("OpenCV could not read %s: %s", path, exc)
        return None


def read_picture(path: str | Path, info: PictureInfo | None = None) -> np.ndarray | None:
    """`read_upright` with FFmpeg's reader (cv2.VideoCapture) as the decoder of last resort."""
    return read_upright(path, lambda: stored_frame(path), info)


def stored_frame(path: str | Path) -> np.ndarray | None:
    """The picture's first frame as FFmpeg's image reader gives it: as stored, its tag ignored."""
    cap = cv2.VideoCapture(str(path))
    ok, frame = cap.read() if cap.isOpened() else (False, None)
    cap.release()
    return frame if ok else None


def read_upright(path: str | Path, stored: Callable[[], np.ndarray | None],
                 info: PictureInfo | None = None) -> np.ndarray | None:
    """The picture's pixels as a viewer sees them, 8-bit BGR; None where neither `imread` nor `stored` (a decoder
    that reads the pixels as stored: the caller's VideoCapture) can read it. Its later frames or pages are named in
    a warning: only the first is anonymized, and the output holds only that. `info`: its header, where already read."""
    info = info or picture_info(path)
    pixels = _decoded(path, info, stored)
    if pixels is not None and info.frames > 1:
        pages = info.kind == "TIFF" or not info.animated  # Pillow calls a TIFF of several pages animated too
        what = f"a picture of {info.frames} pages" if pages else f"an animation of {info.frames} frames"
        log.warning("%s is %s: only its first is anonymized and written", path, what)
    return pixels


def _decoded(path: str | Path, info: PictureInfo, stored: Callable[[], np.ndarray | None]) -> np.ndarray | None:
    if not info.known:  # Pillow cannot read its header: OpenCV's own reading of a tag, where it has one
        pixels = _imread(path, cv2.IMREAD_COLOR)
        return pixels if pixels is not None else stored()
    turned_by_opencv = info.kind in OPENCV_TURNS and not (info.kind == "TIFF" and info.orientation in QUARTER_TURNS)
    flags = cv2.IMREAD_COLOR if turned_by_opencv else cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
    # not tried where it is known to fail (and to print an error): a TIFF tagged 5-8
    pixels = _imread(path, flags) if turned_by_opencv or info.kind != "TIFF" else None
    if pixels is None:
        pixels, turned_by_opencv = stored(), False  # FFmpeg's reader: as stored
    if pixels is None:
        return None
    if not turned_by_opencv and info.orientation != 1:
        pixels = _TURNS[info.orientation](pixels)
    if (turned_by_opencv and info.orientation in QUARTER_TURNS
            and pixels.shape[:2] == info.stored != info.upright_shape()):
        pixels = _TURNS[info.orientation](pixels)  # a quarter turn OpenCV was expected to make and did not
    return pixels


def read_alpha(path: str | Path, size: tuple[int, int], info: PictureInfo | None = None) -> np.ndarray | None:
    """A transparent picture's alpha, 8-bit, upright as `read_upright`'s pixels (`size`: their height, width); None
    for a picture without one. Its output keeps it (ImageSink): written without it, whatever lay under the
    transparent parts showed, and the picture no longer looked like its input. Read by Pillow, turned by the same
    tag (OpenCV turns a TIFF's alpha itself, and an AVIF's never): the same for every type."""
    info = info or picture_info(path)
    if not info.alpha:
        return None
    if info.kind == "TIFF" and info.orientation in QUARTER_TURNS:
        log.warning("%s: a TIFF tagged %d with an alpha channel: no reader here gives its alpha upright; the output is "
                    "written without it", path, info.orientation)
        return None
    try:
        from PIL import Image, ImageOps

        with Image.open(path) as image:  # decoded: within Pillow's pixel limit (a decompression-bomb guard)
            if info.kind == "TIFF":  # Pillow 13 turns a TIFF tagged 2-4 as it loads it
                image.load()
                alpha = np.asarray(image.convert("RGBA").getchannel("A"), np.uint8)
            else:
                upright = ImageOps.exif_transpose(image)  # the tag read off the image as opened, not off a copy
                alpha = np.asarray(upright.convert("RGBA").getchannel("A"), np.uint8)
    except Exception as exc:  # damaged past its first picture: the pixels were read, the transparency is not kept
        log.warning("%s: its transparency could not be read (%s); the output is written without it", path, exc)
        return None
    if alpha.shape != tuple(size):
        log.warning("%s: its transparency (%dx%d) does not fit its picture (%dx%d); the output is written without it",
                    path, alpha.shape[1], alpha.shape[0], size[1], size[0])
        return None
    return np.ascontiguousarray(alpha)


def unreadable_why(path: str | Path, info: PictureInfo | None = None) -> str:
    """Why a picture no decoder read may still be a valid file: said in the refusal."""
    info = info or picture_info(path)
    if info.known and info.animated:
        return f"an animated picture ({info.frames} frames) is not read: make it a video first (ffmpeg -i IN OUT.mp4)"
    return "not a picture, or corrupt"
