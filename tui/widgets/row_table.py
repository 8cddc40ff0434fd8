"""A DataTable for a list of rows picked with the arrows: its scrolling keys stay out of the keys panel (`?`),
where at 80x24 their ten lines pushed the screen's own keys off the bottom."""

from __future__ import annotations

from typing import ClassVar

from textual.binding import Binding, BindingType
from textual.widgets import DataTable

# Home and End move the row cursor to the first and last row (DataTable's own go to the first and last column, which
# a row table has no use for: End then `d` removed the first person, not the last; a walkthrough, stop 49).
_SCROLLING = (("left", "cursor_left"), ("right", "cursor_right"), ("home", "scroll_top"), ("end", "scroll_bottom"),
              ("pageup", "page_up"), ("pagedown", "page_down"), ("ctrl+home", "scroll_top"),
              ("ctrl+end", "scroll_bottom"), ("ctrl+pageup", "page_left"), ("ctrl+pagedown", "page_right"))


class RowTable(DataTable):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "cursor_up", "Previous row", show=False),
        Binding("down", "cursor_down", "Next row", show=False),
        *(Binding(key, action, action.replace("_", " "), show=False, system=True) for key, action in _SCROLLING),
    ]


# The screens' copy key, kept working but out of the keys panel (three wrapped lines there at 80 columns).
QUIET_COPY = Binding("ctrl+c,super+c", "screen.copy_text", "Copy selected text", show=False, system=True)
