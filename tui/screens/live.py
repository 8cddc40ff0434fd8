"""Live screen: engine figures, the faces in view with their facebank scores, the sliders, and a small preview
of the anonymized output."""

from __future__ import annotations

import time
from contextlib import suppress
from typing import Any, ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static
from textual.worker import get_current_worker

from tui.format import FACE_COLUMNS, face_row, figures
from tui.link import ControlError, decode_preview
from tui.messages import PreviewFrame
from tui.widgets import EngineBar, Preview, Slider
from tui.workers import wait_cancellable

PREVIEW_HZ = 3.0
TABLE_EVERY_S = 0.2  # the faces table repaints at most 5 times a second: readable, and half the CPU of 10
ECHO_GRACE_S = 2.0  # a slider just moved is not reset by telemetry that predates the change

# (setting, label, minimum, maximum, step, format)
SLIDERS: tuple[tuple[str, str, float, float, float, str], ...] = (
    ("similarity_threshold", "threshold", 0.4, 1.0, 0.01, "{:.2f}"),  # the engine's own limits (fail closed)
    ("confidence", "confidence", 0.2, 0.9, 0.05, "{:.2f}"),
    ("strength", "strength", 0.0, 1.0, 0.05, "{:.2f}"),
    ("margin", "margin", 0.0, 1.0, 0.05, "{:.2f}"),
    ("hold_seconds", "hold", 0.2, 5.0, 0.1, "{:.1f}s"),
)

PREVIEW_NOTES = {
    "lost": "engine lost: no picture",
    "stale": "no fresh frames: picture hidden",
    "starting": "starting the engine…",
    "connecting": "connecting…",
    "detached": "no engine attached",
}


class LiveScreen(Screen):
    CSS_PATH = "live.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("s", "focus_sliders", "Sliders"),
        Binding("t", "focus_faces", "Faces", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self._shown: dict[str, tuple[Any, ...]] = {}  # row key -> cells on screen
        self._table_at = 0.0

    def compose(self) -> ComposeResult:
        yield EngineBar()
        with Horizontal(id="top"):
            with Vertical(id="left"):
                yield Static(id="figures")
                with Vertical(id="sliders"):
                    for setting, label, lo, hi, step, fmt in SLIDERS:
                        yield Slider(label, lo, hi, step, fmt=fmt, id=setting.replace("_", "-"), name=setting)
            yield Preview(id="preview")
        yield DataTable(id="faces", cursor_type="row", zebra_stripes=True)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        table = self.query_one("#faces", DataTable)
        for key, label, width in FACE_COLUMNS:
            table.add_column(label, key=key, width=width)
        table.border_title = "faces in view"
        self.query_one("#preview", Preview).border_title = "output (anonymized)"
        self.watch(self.app, "telemetry", self._on_telemetry, init=False)
        self.watch(self.app, "engine_state", self._on_engine_state)

    def on_screen_resume(self) -> None:
        self._on_telemetry(self._app.telemetry)
        if self._app.attach:
            self.poll_preview()

    def on_screen_suspend(self) -> None:
        self.workers.cancel_group(self, "preview")

    @property
    def _app(self) -> Any:
        return self.app  # BlurcastApp; typed loosely to keep screens free of an import cycle

    # --- telemetry --------------------------------------------------------------------------------------------
    def _on_telemetry(self, t: dict[str, Any] | None) -> None:
        if not t or not self.is_current:
            return
        stale = self._app.engine_state != "live"
        self.query_one("#figures", Static).update(figures(t, stale=stale), layout=False)
        settings = t.get("settings") or {}
        self._sync_sliders(settings)
        now = time.monotonic()
        if now - self._table_at >= TABLE_EVERY_S:
            self._table_at = now
            self._update_faces(t.get("faces") or [], float(settings.get("similarity_threshold", 0.0)),
                               (t.get("facebank") or {}).get("people"))

    def _sync_sliders(self, settings: dict[str, Any]) -> None:
        sent = self._app.settings_sent
        for slider in self.query(Slider):
            just_moved = slider.name in sent and time.monotonic() - sent[slider.name][1] < ECHO_GRACE_S
            if slider.name in settings and not just_moved:
                slider.set_value(float(settings[slider.name]))

    def _update_faces(self, faces: list[dict[str, Any]], threshold: float, people: int | None = None) -> None:
        """Rows keyed by track id; only cells whose text changed are touched (each touch repaints)."""
        table = self.query_one("#faces", DataTable)
        keys = []
        for face in sorted(faces, key=lambda f: f.get("track_id", 0)):
            key = str(face.get("track_id"))
            keys.append(key)
            cells = face_row(face, threshold)
            old = self._shown.get(key)
            if old is None:
                table.add_row(*cells, key=key)
            else:
                for (column, _, _), cell, before in zip(FACE_COLUMNS, cells, old, strict=True):
                    if cell != before:
                        table.update_cell(key, column, cell)
            self._shown[key] = cells
        for key in [k for k in self._shown if k not in keys]:
            table.remove_row(key)
            del self._shown[key]
        # How many people the engine itself matches against: confirms an enrolment has reached it.
        known = "" if people is None else f" · facebank in use: {people} {'person' if people == 1 else 'people'}"
        table.border_title = f"faces in view: {len(faces)} · threshold {threshold:.2f}{known}"

    def _on_engine_state(self, state: str) -> None:
        stale = state != "live"
        for widget in self.query("#figures, #faces"):
            widget.set_class(stale, "-stale")
        if stale:
            self.query_one("#preview", Preview).show_note(PREVIEW_NOTES.get(state, state))
        if self._app.telemetry and self.is_current:
            self.query_one("#figures", Static).update(figures(self._app.telemetry, stale=stale), layout=False)

    # --- preview ----------------------------------------------------------------------------------------------
    @work(thread=True, exclusive=True, group="preview", exit_on_error=False)
    def poll_preview(self) -> None:
        """A few small anonymized frames a second while this screen shows (the engine makes them anyway)."""
        worker = get_current_worker()
        while not worker.is_cancelled:
            if self._app.engine_state == "live":
                # no frame yet, or the engine went: the telemetry worker reports that
                with suppress(ControlError, KeyError, ValueError):
                    self.post_message(PreviewFrame(*decode_preview(self._app.engine_link.request("preview"))))
            wait_cancellable(1.0 / PREVIEW_HZ)

    def on_preview_frame(self, message: PreviewFrame) -> None:
        if self._app.engine_state == "live":
            self.query_one("#preview", Preview).show_bgr(message.width, message.height, message.bgr)

    # --- input ------------------------------------------------------------------------------------------------
    @on(Slider.Changed)
    def _slider_moved(self, event: Slider.Changed) -> None:
        if event.slider.name:
            self._app.send_settings({event.slider.name: event.value})

    def action_focus_sliders(self) -> None:
        self.query_one("#similarity-threshold", Slider).focus()

    def action_focus_faces(self) -> None:
        self.query_one("#faces", DataTable).focus()
