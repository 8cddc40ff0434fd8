"""Reading photos for enrolment safely: size limits checked from the file header, before any decoding.

A photo handed to the facebank can come from anywhere. A 20,000 x 20,000 PNG is a few MB on disk and 1.2 GB
decoded, so the pixel count is read from the header first (PNG, JPEG, BMP, WebP) and anything unknown is
refused rather than handed to a decoder to find out.
"""

from __future__ import annotations

import errno
import hashlib
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np

MAX_BYTES = 50 * 1024 * 1024
MAX_PIXELS = 40_000_000
SUPPORTED = "JPEG, PNG, BMP or WebP"


class ImageRejected(ValueError):
    """The file cannot be used as a photo; the message is meant for the streamer, not a developer."""


@dataclass(frozen=True)
class ImageHeader:
    kind: str
    width: int
    height: int


def read_header(path: Path) -> ImageHeader:
    """Format and size from the first bytes of the file; raises ImageRejected for anything else."""
    with open(path, "rb") as f:
        head = f.read(64)
        if head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR" and len(head) >= 24:
            width, height = struct.unpack(">II", head[16:24])
            return ImageHeader("PNG", width, height)
        if head.startswith(b"\xff\xd8"):
            return _jpeg_header(f)
        if head.startswith(b"BM") and len(head) >= 26:
            width, height = struct.unpack("<ii", head[18:26])
            return ImageHeader("BMP", abs(width), abs(height))
        if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
            return _webp_header(head)
    raise ImageRejected(_unknown_format_message(head))


def _jpeg_header(f: BinaryIO) -> ImageHeader:
    """Walk the JPEG segments to the first start-of-frame marker (EXIF thumbnails come before it)."""
    f.seek(2)
    while True:
        marker = f.read(2)
        while marker[:1] == b"\xff" and marker[1:2] == b"\xff":  # fill bytes
            marker = marker[1:] + f.read(1)
        if len(marker) < 2 or marker[0] != 0xFF:
            break
        code = marker[1]
        if code in (0xD8, 0x01) or 0xD0 <= code <= 0xD7:
            continue  # markers without a length
        length_bytes = f.read(2)
        if len(length_bytes) < 2:
            break
        (length,) = struct.unpack(">H", length_bytes)
        if 0xC0 <= code <= 0xCF and code not in (0xC4, 0xC8, 0xCC):
            sof = f.read(5)
            if len(sof) < 5:
                break
            height, width = struct.unpack(">HH", sof[1:5])
            return ImageHeader("JPEG", width, height)
        if length < 2:
            break
        f.seek(length - 2, 1)
    raise ImageRejected("this JPEG file is damaged (its size is unreadable); please export the photo again")


def _webp_header(head: bytes) -> ImageHeader:
    chunk = head[12:16]
    if chunk == b"VP8X":
        width = 1 + int.from_bytes(head[24:27], "little")
        height = 1 + int.from_bytes(head[27:30], "little")
    elif chunk == b"VP8L":
        bits = int.from_bytes(head[21:25], "little")
        width, height = 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    elif chunk == b"VP8 ":
        width = int.from_bytes(head[26:28], "little") & 0x3FFF
        height = int.from_bytes(head[28:30], "little") & 0x3FFF
    else:
        raise ImageRejected("this WebP file is of a kind that cannot be read; please save it as JPEG or PNG")
    return ImageHeader("WebP", width, height)


# One wording wherever a HEIC photo is refused (`facebank add` by its content, `blurcast run` by its name too)
HEIC_REFUSAL = ("a HEIC/HEIF photo, which Blurcast cannot read (no decoder for it here): convert it to "
                "JPEG first (on the phone: share it as JPEG or set Camera > Formats > Most Compatible; on Debian: "
                "`heif-convert IN.heic OUT.jpg` from libheif-examples)")


def is_heic(head: bytes) -> bool:
    """A HEIC/HEIF file by its first 12 bytes (an ISO media `ftyp` box of an image brand), whatever its name."""
    return head[4:8] == b"ftyp" and head[8:12] in (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm",
                                                  b"hevs", b"mif1", b"msf1")


def _unknown_format_message(head: bytes) -> str:
    if is_heic(head):
        return f"this is {HEIC_REFUSAL}"
    if head.startswith(b"GIF8"):
        return f"GIF images are not supported; please use a {SUPPORTED} photo"
    if not head:
        return "this file is empty"
    if _looks_like_text(head):
        return f"this file is text, not a picture (whatever its name says); please use a {SUPPORTED} photo"
    return f"this file is not a picture that can be read here; please use a {SUPPORTED} photo"


def _looks_like_text(head: bytes) -> bool:
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@dataclass(frozen=True)
class Photo:
    image: np.ndarray  # BGR uint8
    header: ImageHeader
    sha256: str  # of the very bytes decoded (no race with a file being replaced meanwhile)


def _missing_reason(path: Path) -> str:
    """Why `path` cannot be opened: absent, or a symbolic link that loops or leads nowhere."""
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "this is a symbolic link that loops back on itself; link to the photo itself"
        if path.is_symlink():
            return f"this is a symbolic link to {os.readlink(path)}, which does not exist"
    return "there is no file at this path; check the name and folder"


def load_photo(path: Path) -> Photo:
    """The photo, after checking it exists, its size on disk and its pixel count."""
    if not path.exists():
        raise ImageRejected(_missing_reason(path))
    if not path.is_file():
        raise ImageRejected("this is a folder, not a photo" if path.is_dir() else
                            "this is not a file but a pipe or a device, not a photo")
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise ImageRejected(f"this file is too big ({size / 2**20:.0f} MB; the limit is {MAX_BYTES // 2**20} MB)")
        header = _sized_header(path)
        if header.width * header.height > MAX_PIXELS:
            raise ImageRejected(
                f"this picture is too large ({header.width} x {header.height} = "
                f"{header.width * header.height / 1e6:.0f} megapixels; the limit is {MAX_PIXELS / 1e6:.0f}); "
                "a smaller copy of the photo works just as well"
            )
        data = np.fromfile(path, dtype=np.uint8)
    except PermissionError as exc:
        raise ImageRejected("this file cannot be opened (no permission to read it)") from exc
    except OSError as exc:
        raise ImageRejected(f"this file cannot be read ({exc.strerror or exc})") from exc
    return Photo(_decode(data, header), header, hashlib.sha256(data).hexdigest())


def check_picture(path: Path) -> None:
    """A photo given to `blurcast run`, refused when damaged: a truncated JPEG otherwise decodes into a mostly blank
    picture that would count as anonymized. Lenient where enrolment is strict (no size limits, the user's own file;
    no segment walk: padding between JPEG segments, which decoders skip, is no damage here); kinds read here by
    neither header nor decoder (TIFF, or no picture at all) are left to the engine to judge."""
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except PermissionError as exc:
        raise ImageRejected("this file cannot be opened (no permission to read it)") from exc
    except OSError as exc:
        raise ImageRejected(f"this file cannot be read ({exc.strerror or exc})") from exc
    head = data[:16].tobytes()
    if is_heic(head):  # named .jpg (some transfer tools keep the name and not the content)
        raise ImageRejected(f"this is {HEIC_REFUSAL}")
    if not _known_kind(head):
        return
    if head.startswith(b"\xff\xd8") and not _jpeg_complete(data.tobytes()):
        raise ImageRejected("this JPEG file is damaged (it is cut short); please export the photo again")
    if cv2.imdecode(data, cv2.IMREAD_COLOR) is None:
        raise ImageRejected("this picture file is damaged and cannot be decoded; please export it again")


def _jpeg_complete(data: bytes) -> bool:
    """An end-of-image marker after the first start-of-scan: scan data never holds FF D9 (a coder stuffs FF 00), so a
    file cut short has none there. Data a camera appends after it (a motion photo's video) does not matter."""
    scan = data.find(b"\xff\xda")
    return scan >= 0 and data.find(b"\xff\xd9", scan) >= 0


def _known_kind(head: bytes) -> bool:
    return (head.startswith((b"\x89PNG", b"\xff\xd8", b"BM"))
            or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"))


def _sized_header(path: Path) -> ImageHeader:
    header = read_header(path)
    if header.width <= 0 or header.height <= 0:
        raise ImageRejected("this picture says it has no pixels; the file is damaged")
    return header


def _decode(data: np.ndarray, header: ImageHeader) -> np.ndarray:
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)  # 3 channels: drops alpha, expands grey, applies EXIF rotation
    if image is None:
        raise ImageRejected(f"this {header.kind} file is damaged and cannot be decoded; please export it again")
    return image
