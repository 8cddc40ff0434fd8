"""An Input for paths where Tab accepts the completion shown (as in a shell), and moves on only when none is."""

from __future__ import annotations

from typing import ClassVar

from textual.binding import Binding, BindingType
from textual.widgets import Input


class PathInput(Input):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("tab", "complete_or_next", "Complete / next"),  # shown: the footer otherwise empties here
    ]

    def action_complete_or_next(self) -> None:
        if self._suggestion and self._suggestion != self.value:
            self.value = self._suggestion
            self.cursor_position = len(self.value)
        else:
            self.screen.focus_next()
