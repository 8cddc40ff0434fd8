"""The engine's small, already-anonymized output frame drawn with half blocks: each cell is two pixels, the
upper one as the foreground of "▀" and the lower one as its background. It never receives a raw frame."""

from __future__ import annotations

from functools import lru_cache
from typing import ClassVar

import numpy as np
from rich.color import Color
from rich.segment import Segment
from rich.style import Style
from textual.geometry import Size
from textual.strip import Strip
from textual.widget import Widget

UPPER_HALF = "▀"


def fit(width: int, height: int, cols: int, rows: int) -> tuple[int, int]:
    """Largest (w, h) pixel size with the image's aspect that fits `cols` × `2 * rows` pixels; h is even."""
    if width <= 0 or height <= 0 or cols <= 0 or rows <= 0:
        return 0, 0
    scale = min(cols / width, 2 * rows / height)
    w = max(1, min(cols, round(width * scale)))
    h = max(2, min(2 * rows, round(height * scale / 2) * 2))
    return w, h


def resize(image: np.ndarray, w: int, h: int) -> np.ndarray:
    """Area average when shrinking (keeps blur honest: no aliasing that could fake detail), nearest otherwise."""
    src_h, src_w = image.shape[:2]
    if w > src_w or h > src_h:
        ys = (np.arange(h) * src_h // h).clip(0, src_h - 1)
        xs = (np.arange(w) * src_w // w).clip(0, src_w - 1)
        return image[ys][:, xs]
    ys = np.arange(h) * src_h // h
    xs = np.arange(w) * src_w // w
    rows = np.add.reduceat(image.astype(np.float32), ys, axis=0) / np.diff(np.append(ys, src_h))[:, None, None]
    out = np.add.reduceat(rows, xs, axis=1) / np.diff(np.append(xs, src_w))[None, :, None]
    return out.round().astype(np.uint8)


def half_block_lines(rgb: np.ndarray) -> list[list[Segment]]:
    """Rows of segments for an (h, w, 3) RGB image with even h.

    Colours are quantised to 6 bits a channel (invisible at this size) and packed into ints, so the cached
    styles below are reused across pixels and frames: building rich styles is the costly part.
    """
    q = (rgb.astype(np.uint32) >> 2) << 2
    packed = (q[..., 0] << 16) | (q[..., 1] << 8) | q[..., 2]
    return [[Segment(UPPER_HALF, _style(int(t), int(b))) for t, b in zip(top, bottom, strict=True)]
            for top, bottom in zip(packed[0::2].tolist(), packed[1::2].tolist(), strict=True)]


@lru_cache(maxsize=32768)
def _style(top: int, bottom: int) -> Style:
    return Style.from_color(_color(top), _color(bottom))


@lru_cache(maxsize=4096)
def _color(rgb: int) -> Color:
    return Color.from_rgb(rgb >> 16, (rgb >> 8) & 0xFF, rgb & 0xFF)


class Preview(Widget):
    """Shows the last preview frame, or a note (e.g. 'engine lost') instead: never a stale image as live."""

    DEFAULT_CSS = """
    Preview {
        width: 1fr;
        height: 1fr;
    }
    Preview > .preview--note { color: $text-muted; text-style: italic; }
    """
    COMPONENT_CLASSES: ClassVar[set[str]] = {"preview--note"}

    def __init__(self, note: str = "waiting for the engine…", **kwargs) -> None:
        super().__init__(**kwargs)
        self._image: np.ndarray | None = None  # RGB
        self._note = note
        self._lines: list[list[Segment]] | None = None
        self._lines_for: Size | None = None

    @property
    def has_image(self) -> bool:
        return self._image is not None

    def show_bgr(self, width: int, height: int, bgr: bytes) -> None:
        image = np.frombuffer(bgr, np.uint8)
        if image.size != width * height * 3:
            self.show_note(f"bad preview ({image.size} bytes for {width}×{height})")
            return
        self._image = image.reshape(height, width, 3)[:, :, ::-1]
        self._lines = None
        self.refresh()

    def show_note(self, note: str) -> None:
        self._image, self._note, self._lines = None, note, None
        self.refresh()

    def _build(self) -> list[list[Segment]]:
        size = self.content_size
        if self._lines is None or self._lines_for != size:
            if self._image is None:
                self._lines = []
            else:
                w, h = fit(self._image.shape[1], self._image.shape[0], size.width, size.height)
                self._lines = half_block_lines(resize(self._image, w, h)) if w and h else []
            self._lines_for = size
        return self._lines

    def render_line(self, y: int) -> Strip:
        width = self.content_size.width
        if self._image is None:
            return self._note_line(y, width)
        lines = self._build()
        if y >= len(lines):
            return Strip.blank(width, self.rich_style)
        row = lines[y]
        pad = max(0, (width - len(row)) // 2)
        return Strip([Segment(" " * pad, self.rich_style), *row]).adjust_cell_length(width, self.rich_style)

    def _note_line(self, y: int, width: int) -> Strip:
        if y != self.content_size.height // 2:
            return Strip.blank(width, self.rich_style)
        note = self._note[:width].center(width)
        style = self.rich_style + self.get_component_rich_style("preview--note")
        return Strip([Segment(note, style)])
