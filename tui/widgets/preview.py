"""The engine's small, already-anonymized output frame drawn with half blocks: each cell is two pixels, the
upper one as the foreground of "▀" and the lower one as its background. It never receives a raw frame.

Each face from the telemetry is outlined in its state's colour with the id the faces table shows, so a row
can be matched to a face; the selected one is drawn twice as thick with its id inverted."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import ClassVar

import numpy as np
from rich.color import Color
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.geometry import Size
from textual.message import Message
from textual.strip import Strip
from textual.widget import Widget

UPPER_HALF = "▀"
STATE_RGB = {"visible": (40, 220, 80), "blurred": (255, 170, 0)}  # the table's green / yellow
LOST_RGB = (150, 150, 150)


@dataclass(frozen=True)
class FaceBox:
    """One face to outline, in the preview's pixel coordinates."""

    track_id: int
    x1: int
    y1: int
    x2: int
    y2: int
    rgb: tuple[int, int, int]


def face_boxes(faces: list[dict], source_size: tuple[int, int], size: tuple[int, int]) -> list[FaceBox]:
    """Telemetry faces (boxes in source pixels) scaled to an image of `size` (w, h)."""
    sw, sh = source_size
    w, h = size
    if sw <= 0 or sh <= 0:
        return []
    out = []
    for face in faces:
        box = face.get("box")
        if not box or len(box) != 4:
            continue
        x1, y1, x2, y2 = (round(v) for v in (box[0] * w / sw, box[1] * h / sh, box[2] * w / sw, box[3] * h / sh))
        x1, x2 = max(0, min(w - 1, x1)), max(0, min(w - 1, x2))
        y1, y2 = max(0, min(h - 1, y1)), max(0, min(h - 1, y2))
        if x2 <= x1 or y2 <= y1:
            continue
        rgb = LOST_RGB if face.get("lost_frames") else STATE_RGB.get(face.get("state", ""), STATE_RGB["blurred"])
        out.append(FaceBox(int(face.get("track_id", -1)), x1, y1, x2, y2, rgb))
    return out


def outline(image: np.ndarray, box: FaceBox, thick: int = 1) -> None:
    """Draw `box` into `image` (h, w, 3) in place."""
    for t in range(thick):
        x1, y1, x2, y2 = box.x1 + t, box.y1 + t, box.x2 - t, box.y2 - t
        if x2 <= x1 or y2 <= y1:
            break
        image[y1, x1:x2 + 1] = box.rgb
        image[y2, x1:x2 + 1] = box.rgb
        image[y1:y2 + 1, x1] = box.rgb
        image[y1:y2 + 1, x2] = box.rgb


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

    class FaceClicked(Message):
        """A click landed inside a face's outline: the table selects that face."""

        def __init__(self, track_id: int) -> None:
            super().__init__()
            self.track_id = track_id

    def __init__(self, note: str = "waiting for the engine…", **kwargs) -> None:
        super().__init__(**kwargs)
        self._image: np.ndarray | None = None  # RGB
        self._note = note
        self._lines: list[list[Segment]] | None = None
        self._lines_for: Size | None = None
        self._faces: list[dict] = []
        self._source_size: tuple[int, int] = (0, 0)
        self.selected: int | None = None  # track id drawn highlighted

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

    def set_faces(self, faces: list[dict], source_size: tuple[int, int], selected: int | None) -> None:
        """Faces to outline (telemetry boxes, in the source's pixels); redrawn only when something changed."""
        if (faces, source_size, selected) == (self._faces, self._source_size, self.selected):
            return
        self._faces, self._source_size, self.selected = faces, source_size, selected
        self._lines = None
        self.refresh()

    def select(self, track_id: int | None) -> None:
        self.set_faces(self._faces, self._source_size, track_id)

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
                self._lines = self._draw(resize(self._image, w, h)) if w and h else []
            self._lines_for = size
        return self._lines

    def annotated(self, rgb: np.ndarray, thick: int = 1) -> tuple[np.ndarray, list[FaceBox]]:
        """A copy of `rgb` with each face outlined (the selected one twice as thick), and the boxes drawn."""
        rgb = rgb.copy()
        boxes = face_boxes(self._faces, self._source_size, (rgb.shape[1], rgb.shape[0]))
        for box in boxes:
            outline(rgb, box, thick * (2 if box.track_id == self.selected else 1))
        return rgb, boxes

    def _draw(self, rgb: np.ndarray) -> list[list[Segment]]:
        """Half blocks with each face outlined and its id written at its top-left corner."""
        rgb, boxes = self.annotated(rgb)
        lines = half_block_lines(rgb)
        for box in boxes:
            label = str(box.track_id)
            row, col = box.y1 // 2, min(box.x1 + 1, max(0, len(lines[0]) - len(label)))
            fg, bg = (Color.from_rgb(0, 0, 0), Color.from_rgb(*box.rgb))
            if box.track_id == self.selected:
                fg, bg = Color.from_rgb(255, 255, 255), Color.from_rgb(0, 90, 200)
            style = Style(color=fg, bgcolor=bg, bold=True)
            for i, ch in enumerate(label):
                if 0 <= row < len(lines) and col + i < len(lines[row]):
                    lines[row][col + i] = Segment(ch, style)
        return lines

    def face_at(self, column: int, row: int) -> int | None:
        """The track id whose outline holds this cell of the half-block picture (the smallest, if nested)."""
        lines = self._build()
        if self._image is None or not lines:
            return None
        w, h = len(lines[0]), 2 * len(lines)
        x, y = column - max(0, (self.content_size.width - w) // 2), 2 * row
        inside = [b for b in face_boxes(self._faces, self._source_size, (w, h))
                  if b.x1 <= x <= b.x2 and b.y1 <= y + 1 and y <= b.y2]
        return min(inside, key=lambda b: (b.x2 - b.x1) * (b.y2 - b.y1)).track_id if inside else None

    def on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        track = self.face_at(offset.x, offset.y) if offset is not None else None
        if track is not None:
            self.post_message(self.FaceClicked(track))

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
