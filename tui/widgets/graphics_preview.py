"""The preview at the terminal's best fidelity: Kitty graphics or Sixel through textual-image where the terminal
answers for them, at up to 640 pixels wide; the half-block Preview everywhere else (tmux, SSH into most
terminals, tests). The terminal is asked once, before the app takes it (tui/terminal_probe.py)."""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
from PIL import Image as PILImage
from PIL import ImageDraw
from textual.app import ComposeResult
from textual.strip import Strip

from tui.terminal_probe import TerminalAnswer, ask_terminal, use_graphics
from tui.widgets.preview import Preview

log = logging.getLogger(__name__)


def detect_graphics() -> TerminalAnswer:
    """The terminal's answer: `graphics` 'sixel' or 'kitty' when it draws pictures (textual-image then set up
    for it), and the keys typed while it was asked. Call before the App takes the terminal."""
    answer = ask_terminal()
    if answer.graphics:
        try:
            use_graphics(answer)
        except Exception:  # missing, or another version whose internals differ: half blocks still work
            log.warning("textual-image cannot draw %s here: half blocks instead", answer.graphics, exc_info=True)
            return replace(answer, graphics=None)
    return answer


def labelled(rgb: np.ndarray, preview: Preview) -> PILImage.Image:
    """The picture with each face outlined and its id written in its box's corner, as the table shows it."""
    thick = max(1, rgb.shape[1] // 240)
    annotated, boxes = preview.annotated(rgb, thick)
    image = PILImage.fromarray(annotated)
    draw = ImageDraw.Draw(image)
    for box in boxes:
        text = str(box.track_id)
        left, top, right, bottom = draw.textbbox((box.x1 + thick, box.y1 + thick), text)
        selected = box.track_id == preview.selected
        draw.rectangle((left - 1, top - 1, right + 1, bottom + 1), fill=(0, 90, 200) if selected else box.rgb)
        draw.text((box.x1 + thick, box.y1 + thick), text, fill=(255, 255, 255) if selected else (0, 0, 0))
    return image


class GraphicsPreview(Preview):
    """A Preview whose picture is drawn by the terminal itself (Kitty graphics / Sixel)."""

    MAX_WIDTH = 640

    def compose(self) -> ComposeResult:
        from textual_image.widget import Image

        yield Image(id="picture")

    def _update_picture(self) -> None:
        picture = self.query_one("#picture")
        picture.display = self._image is not None
        if self._image is not None:
            picture.image = labelled(self._image, self)  # type: ignore[attr-defined]

    def show_bgr(self, width: int, height: int, bgr: bytes) -> None:
        super().show_bgr(width, height, bgr)
        self._update_picture()

    def set_faces(self, faces: list[dict], source_size: tuple[int, int], selected: int | None) -> None:
        changed = (faces, source_size, selected) != (self._faces, self._source_size, self.selected)
        super().set_faces(faces, source_size, selected)
        if changed and self._image is not None:
            self._update_picture()

    def show_note(self, note: str) -> None:
        super().show_note(note)
        if self.is_mounted:
            self._update_picture()

    def render_line(self, y: int) -> Strip:
        if self._image is not None:
            return Strip.blank(self.content_size.width, self.rich_style)  # the picture child draws here
        return super().render_line(y)
