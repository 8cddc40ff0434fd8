"""What kind of media a path names: the source and the sinks both ask whether it is a picture (one frame in,
one frame out) rather than a video."""

from __future__ import annotations

from pathlib import Path

# A photo in, a photo out (`ImageSink`): what OpenCV encodes from its own codecs in every wheel.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".avif")
# Photos no decoder here reads (an iPhone's default type): refused, saying so, not as "not a video"
UNREAD_PHOTO_SUFFIXES = (".heic", ".heif")
# Videos a folder given to `blurcast run` contributes: the containers FFmpeg reads everywhere.
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".gif", ".ts", ".mts", ".flv", ".wmv", ".mpg",
                  ".mpeg")


def is_image_path(path: str | Path | None) -> bool:
    return path is not None and Path(path).suffix.lower() in IMAGE_SUFFIXES


def unread_photo_hint(path: str | Path | None) -> str | None:
    """Why a photo of a type Blurcast cannot read is refused, and what to do; None for any other path."""
    if path is None or Path(path).suffix.lower() not in UNREAD_PHOTO_SUFFIXES:
        return None
    from facebank.images import HEIC_REFUSAL

    return f"{Path(path).name} is {HEIC_REFUSAL}"
