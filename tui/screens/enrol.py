""""This is me" and rename: small dialogs asking for a name (the engine does the work)."""

from __future__ import annotations

from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Input, Static


class NameScreen(ModalScreen[str | None]):
    """Asks for a name: dismisses with the name typed (Enter) or None (Escape)."""

    DEFAULT_CSS = """
    NameScreen { align: center middle; }
    NameScreen > #dialog {
        width: 60; height: auto; max-width: 95%;
        border: round $accent; background: $surface; padding: 0 1;
    }
    NameScreen #enrol-hint { color: $text-muted; }
    NameScreen #enrol-error { color: $text-error; height: auto; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, question: str | Content, hint: str, suggestion: str = "", placeholder: str = "name") -> None:
        super().__init__()
        self.question, self.hint, self.suggestion, self.placeholder = question, hint, suggestion, placeholder

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(self.question)
            yield Input(value=self.suggestion, placeholder=self.placeholder, id="enrol-name", compact=True)
            yield Static(self.hint, id="enrol-hint")
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


class EnrolScreen(NameScreen):
    """"This is me": the name to enrol live face `track_id` under."""

    def __init__(self, track_id: int, suggestion: str = "") -> None:
        super().__init__(f"[b]Keep face #{track_id} visible[/b]: whose face is it?",
                         "Enter enrols (a few seconds of this face; turn your head a little) · Esc cancels",
                         suggestion, "name, e.g. your own")
        self.track_id = track_id
