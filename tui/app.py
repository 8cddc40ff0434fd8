"""The Blurcast terminal UI: attaches to the background engine (starting it if none runs) and steers it.

Quitting the UI, or losing the SSH session, never stops the engine. If the engine dies, every screen says so
and greys its figures; `r` starts it again.

    python -m tui --source clip.mp4      (the CLI's bare `blurcast` calls `run_ui`)
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, ClassVar

from textual import on, work
from textual.app import App
from textual.binding import Binding, BindingType
from textual.reactive import var
from textual.worker import Worker, WorkerState, get_current_worker

from tui.link import ControlError, EngineLink, EnginePaths, default_engine_args, default_paths
from tui.messages import (
    CommandFailed,
    EngineLost,
    EngineStarted,
    EngineStartFailed,
    EngineStarting,
    EngineStats,
)
from tui.screens.facebank import FacebankScreen
from tui.screens.live import LiveScreen
from tui.screens.output import OutputScreen
from tui.workers import wait_cancellable

log = logging.getLogger(__name__)

TELEMETRY_HZ = 10.0
STALE_AFTER_S = 1.5  # no telemetry for this long: figures are marked stale (the stream sends every 0.1 s)
RECONNECT_S = 0.5
OPTIMISTIC_S = 2.0  # a switch just sent counts as set for this long, even before telemetry confirms it
ENGINE_STATES = ("connecting", "starting", "live", "stale", "lost", "detached")


class BlurcastApp(App[int]):
    """Screens: live (figures, faces, sliders, preview), facebank, source & output."""

    CSS_PATH = "app.tcss"
    TITLE = "Blurcast"
    ENABLE_COMMAND_PALETTE = False  # frees ctrl+p for panic
    MODES: ClassVar = {"live": LiveScreen, "facebank": FacebankScreen, "output": OutputScreen}
    DEFAULT_MODE = "live"
    HORIZONTAL_BREAKPOINTS: ClassVar = [(0, "-narrow"), (120, "-wide")]
    VERTICAL_BREAKPOINTS: ClassVar = [(0, "-short"), (36, "-tall")]
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("l", "show('live')", "Live"),
        Binding("f", "show('facebank')", "Facebank"),
        Binding("o", "show('output')", "Output"),
        Binding("p", "panic", "Panic"),
        Binding("ctrl+p", "panic", "Panic", show=False, priority=True),  # works even while typing
        Binding("space", "pause", "Pause"),
        Binding("r", "restart_engine", "Restart engine"),
        Binding("q", "quit", "Quit"),
    ]

    engine_state: var[str] = var("connecting")  # one of ENGINE_STATES
    engine_reason: var[str] = var("")
    telemetry: var[dict[str, Any] | None] = var(None, always_update=True)
    telemetry_hz: var[float] = var(0.0)

    def __init__(self, link: EngineLink, *, start_engine: bool = True, attach: bool = True,
                 facebank_path: Path | None = None) -> None:
        super().__init__()
        self.engine_link = link
        self.start_engine = start_engine
        self.attach = attach
        self.facebank_path = facebank_path
        self._starting = False
        self._last_stats = 0.0
        self._stamps: deque[float] = deque(maxlen=64)
        self._pending_settings: dict[str, Any] = {}
        self._pending_lock = threading.Lock()
        self._send_lock = threading.Lock()  # one `set` at a time, so the newest value always lands last
        self._switches: dict[str, tuple[bool, float]] = {}
        self.settings_sent: dict[str, tuple[Any, float]] = {}
        self.settings_delays: deque[float] = deque(maxlen=100)  # s from a slider change to its telemetry echo

    # --- lifecycle --------------------------------------------------------------------------------------------
    def on_mount(self) -> None:
        if not self.attach:
            self.engine_state = "detached"
            return
        self.set_interval(0.5, self._check_stale)
        if self.start_engine:
            self._begin_start()
        self.stream_telemetry()

    def _begin_start(self) -> None:
        self._starting = True  # set before the worker runs: stream failures meanwhile are expected
        self.ensure_engine()

    @work(thread=True, exclusive=True, group="engine-start", exit_on_error=False)
    def ensure_engine(self) -> None:
        """Start the engine unless one answers. The start itself runs on a daemon thread so that quitting the
        UI while models load does not wait for it (the engine process carries on regardless)."""
        if self.engine_link.running():
            self.post_message(EngineStarted(None))
            return
        self.post_message(EngineStarting())
        outcome: dict[str, Any] = {}

        def start() -> None:
            try:
                outcome["pid"] = self.engine_link.start()
            except (ControlError, OSError) as exc:
                outcome["error"] = str(exc)

        thread = threading.Thread(target=start, name="engine-start", daemon=True)
        thread.start()
        while thread.is_alive():
            if not wait_cancellable(0.1):
                return
        if "error" in outcome:
            self.post_message(EngineStartFailed(outcome["error"]))
        else:
            self.post_message(EngineStarted(outcome.get("pid")))

    @work(thread=True, exclusive=True, group="telemetry", exit_on_error=False)
    def stream_telemetry(self) -> None:
        """The one long-lived reader of the engine's telemetry; reconnects on its own after a restart."""
        worker = get_current_worker()
        while not worker.is_cancelled:
            stream = self.engine_link.telemetry(TELEMETRY_HZ)
            try:
                for event in stream:
                    if worker.is_cancelled:
                        break
                    self.post_message(EngineStats(event))
            except ControlError as exc:
                if not worker.is_cancelled:
                    self.post_message(EngineLost(str(exc)))
            finally:
                stream.close()
            wait_cancellable(RECONNECT_S)

    # --- engine messages --------------------------------------------------------------------------------------
    def on_engine_stats(self, message: EngineStats) -> None:
        self._last_stats = message.received
        self._stamps.append(message.received)
        recent = [s for s in self._stamps if s > message.received - 2.0]
        self.telemetry_hz = (len(recent) - 1) / max(recent[-1] - recent[0], 1e-6) if len(recent) > 2 else 0.0
        self._note_confirmed(message.telemetry.get("settings") or {}, message.received)
        if self.engine_state != "live":
            self.engine_reason = ""
            self.engine_state = "live"
        self.telemetry = message.telemetry

    def on_engine_lost(self, message: EngineLost) -> None:
        if self._starting:
            return  # the new engine is not answering yet
        was_up = self.engine_state in ("live", "stale")
        self.engine_reason = message.reason
        self.engine_state = "lost"
        self.telemetry_hz = 0.0
        if was_up:
            self.notify(f"The engine stopped ({message.reason}). Press r to restart it.", title="Engine lost",
                        severity="error", timeout=10)

    def on_engine_starting(self, message: EngineStarting) -> None:
        self.engine_state = "starting"

    def on_engine_started(self, message: EngineStarted) -> None:
        self._starting = False
        if message.pid is not None:
            self.notify(f"Engine started (pid {message.pid}).", timeout=3)
        if self.engine_state == "starting":
            self.engine_state = "connecting"

    def on_engine_start_failed(self, message: EngineStartFailed) -> None:
        self._starting = False
        self.engine_reason = message.reason.splitlines()[0]
        self.engine_state = "lost"
        self.notify(message.reason, title="The engine did not start", severity="error", timeout=15)

    def on_command_failed(self, message: CommandFailed) -> None:
        self.notify(message.error, title=f"{message.cmd} failed", severity="error", timeout=8)
        if message.cmd == "set":
            self.settings_sent.clear()  # the sliders take the engine's values again

    @on(Worker.StateChanged)
    def _worker_failed(self, event: Worker.StateChanged) -> None:
        if event.state is WorkerState.ERROR:
            log.error("worker %s failed: %s", event.worker.name, event.worker.error)
            self.notify(str(event.worker.error), title=f"{event.worker.name} failed", severity="error")

    def _check_stale(self) -> None:
        age = time.monotonic() - self._last_stats
        if self.engine_state == "live" and age > STALE_AFTER_S:
            self.engine_reason = f"last figures {age:.0f} s old"
            self.engine_state = "stale"
            self.telemetry_hz = 0.0

    def validate_engine_state(self, state: str) -> str:
        if state not in ENGINE_STATES:
            raise ValueError(f"unknown engine state {state!r}")
        return state

    def validate_telemetry_hz(self, hz: float) -> float:
        return max(0.0, hz)

    def watch_engine_state(self, old: str, new: str) -> None:
        log.info("engine link: %s -> %s %s", old, new, self.engine_reason)
        self.refresh_bindings()

    # --- commands ---------------------------------------------------------------------------------------------
    def send_settings(self, changes: dict[str, Any]) -> None:
        """Queue setting changes; one worker at a time sends everything queued, newest values last."""
        now = time.monotonic()
        with self._pending_lock:
            self._pending_settings.update(changes)
        for name, value in changes.items():
            self.settings_sent[name] = (value, now)
        self._flush_settings()

    @work(thread=True, exclusive=True, group="settings", exit_on_error=False)
    def _flush_settings(self) -> None:
        with self._send_lock:
            with self._pending_lock:
                changes, self._pending_settings = self._pending_settings, {}
            if not changes:
                return  # a later worker already sent them
            try:
                self.engine_link.request("set", settings=changes)
            except ControlError as exc:
                self.post_message(CommandFailed("set", str(exc)))

    def _note_confirmed(self, settings: dict[str, Any], received: float) -> None:
        for name, (value, sent) in list(self.settings_sent.items()):
            if _same(settings.get(name), value):
                self.settings_delays.append(received - sent)
                del self.settings_sent[name]
                log.debug("%s=%s confirmed after %.0f ms", name, value, 1000 * (received - sent))

    @work(thread=True, group="command", exit_on_error=False)
    def send_command(self, cmd: str, **args: Any) -> None:
        try:
            self.engine_link.request(cmd, **args)
        except ControlError as exc:
            self.post_message(CommandFailed(cmd, str(exc)))

    def switch_state(self, name: str) -> bool:
        """panic/paused as last asked for (for a moment) or as the engine last reported."""
        asked = self._switches.get(name)
        if asked and time.monotonic() - asked[1] < OPTIMISTIC_S:
            return asked[0]
        return bool(((self.telemetry or {}).get("settings") or {}).get(name))

    def _toggle(self, name: str, cmd: str) -> None:
        on_now = not self.switch_state(name)
        self._switches[name] = (on_now, time.monotonic())
        self.send_command(cmd, on=on_now)

    # --- actions ----------------------------------------------------------------------------------------------
    def action_show(self, mode: str) -> None:
        if self.current_mode != mode:
            self.switch_mode(mode)
            self.refresh_bindings()

    def action_panic(self) -> None:
        self._toggle("panic", "panic")

    def action_pause(self) -> None:
        self._toggle("paused", "pause")

    def action_restart_engine(self) -> None:
        if self.engine_state in ("lost", "stale") and not self._starting:
            self._begin_start()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("panic", "pause"):
            return True if self.engine_state in ("live", "stale") else None  # shown greyed while unreachable
        if action == "restart_engine":
            return self.engine_state in ("lost", "stale")
        if action == "show":
            return parameters[0] != self.current_mode  # no key for the screen already shown
        return True


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, int | float) and isinstance(b, int | float):
        return abs(a - b) < 1e-6
    return a == b


def make_app(paths: EnginePaths | None = None, source: str = "0", start_engine: bool = True,
             engine_args: list[str] | None = None, *, attach: bool = True,
             facebank_path: Path | None = None) -> BlurcastApp:
    """The app for `paths` (default: $BLURCAST_HOME). `engine_args` override the `engine serve` arguments
    derived from `source`; `attach=False` builds an app that never talks to an engine (snapshots, demos)."""
    link = EngineLink(paths or default_paths(), list(engine_args) if engine_args else default_engine_args(source))
    return BlurcastApp(link, start_engine=start_engine, attach=attach, facebank_path=facebank_path)


def run_ui(source: str = "0", paths: EnginePaths | None = None) -> int:
    """Run the UI in this terminal until the user quits; the engine keeps running. Returns an exit code."""
    app = make_app(paths, source=source)
    _log_to_file(app.engine_link.paths.root / "ui.log")
    app.run()
    return app.return_code or 0


def _log_to_file(path: Path) -> None:
    """Log to the state folder: the full-screen UI owns the terminal, so stderr would garble it."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path)
    except OSError:
        return
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    logging.getLogger("tui").setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tui", description="Blurcast's terminal UI.")
    parser.add_argument("--source", default="0", help="camera index, video file or URL (used if no engine runs)")
    args = parser.parse_args(argv)
    return run_ui(args.source)


if __name__ == "__main__":
    sys.exit(main())
