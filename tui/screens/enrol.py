""""This is me": a small dialog asking the name to enrol a live face under (the engine does the work)."""

from __future__ import annotations

from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Static


class EnrolScreen(ModalScreen[str | None]):
    """Dismisses with the name typed (Enter) or None (Escape)."""

    DEFAULT_CSS = """
    EnrolScreen { align: center middle; }
    EnrolScreen > #dialog {
        width: 60; height: auto; max-width: 95%;
        border: round $accent; background: $surface; padding: 0 1;
    }
    EnrolScreen #enrol-hint { color: $text-muted; }
    EnrolScreen #enrol-error { color: $text-error; height: auto; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, track_id: int, suggestion: str = "") -> None:
        super().__init__()
        self.track_id = track_id
        self.suggestion = suggestion

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(f"[b]Keep face #{self.track_id} visible[/b]: whose face is it?")
            yield Input(value=self.suggestion, placeholder="name, e.g. your own", id="enrol-name", compact=True)
            yield Static("Enter enrols (a few seconds of this face; turn your head a little) · Esc cancels",
                         id="enrol-hint")
            yield Static(id="enrol-error")

    @on(Input.Submitted, "#enrol-name")
    def _submitted(self, event: Input.Submitted) -> None:
        name = " ".join(event.value.split())
        if not name:
            self.query_one("#enrol-error", Static).update("Type a name first.")
            return
        self.dismiss(name)

    def action_cancel(self) -> None:
        self.dismiss(None)
