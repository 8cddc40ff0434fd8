"""One line at the top of every screen: is the engine live, and are the figures below current?"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Button, Static

from tui.format import short_source

# link states, set by the app: see BlurcastApp.engine_state
STATE_CLASSES = ("-live", "-stale", "-lost", "-starting", "-connecting", "-detached")


class EngineBar(Horizontal):
    """Engine state, figures at a glance, PANIC/PAUSED badges; a Restart button while the engine is lost."""

    DEFAULT_CSS = """
    EngineBar {
        dock: top;
        height: 1;
        background: $panel;
    }
    EngineBar > #engine-status { width: 1fr; height: 1; padding: 0 1; text-wrap: nowrap; text-overflow: ellipsis; }
    EngineBar > #restart { display: none; min-width: 12; }
    EngineBar.-lost > #restart { display: block; }
    EngineBar.-stale { background: $warning 40%; }
    EngineBar.-lost { background: $error 50%; }
    EngineBar.-starting, EngineBar.-connecting { background: $primary 30%; }
    """

    def compose(self) -> ComposeResult:
        yield Static(id="engine-status")
        restart = Button("Restart (r)", id="restart", compact=True, variant="error")
        restart.can_focus = False  # a mouse target (r is its key): focused, hidden, it took the first keys
        yield restart

    def on_mount(self) -> None:
        self.watch(self.app, "engine_state", self._refresh_bar)
        self.watch(self.app, "telemetry", self._refresh_bar)

    async def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        await self.app.run_action("restart_engine")

    def _refresh_bar(self, _value: object = None) -> None:
        app: Any = self.app
        state: str = app.engine_state
        self.set_class(True, f"-{state}")
        for cls in STATE_CLASSES:
            if cls != f"-{state}":
                self.remove_class(cls)
        status = self.describe(state, app.engine_reason, app.telemetry, app.telemetry_hz)
        self.query_one("#engine-status", Static).update(status, layout=False)

    @staticmethod
    def describe(state: str, reason: str, t: dict[str, Any] | None, hz: float) -> Text:
        text = Text(no_wrap=True, overflow="ellipsis")
        if state == "live" and t:
            text.append("● LIVE ", style="bold green")
            text.append(f"{t.get('fps', 0):.1f} fps · {short_source(t.get('source'))}")
            if hz:
                text.append(f" · UI {hz:.0f} Hz", style="dim")
        elif state == "stale":
            text.append("◐ STALE ", style="bold")
            text.append(f"no telemetry for a while; figures are old. {reason}")
        elif state == "lost":
            text.append("✖ ENGINE LOST ", style="bold")
            text.append(f"{reason} · figures are stale")
        elif state == "starting":
            text.append("◌ starting the engine (loading models)…", style="bold")
        elif state == "detached":
            text.append("○ not attached to an engine", style="dim")
        else:
            text.append("◌ connecting to the engine…")
        settings = (t or {}).get("settings") or {}
        if state in ("live", "stale") and settings.get("paused"):
            text = Text.assemble(Text(" PAUSED ", style="bold black on yellow"), " ", text)
        if state in ("live", "stale") and settings.get("panic"):
            text = Text.assemble(Text(" PANIC ", style="bold white on red"), " ", text)
        return text
