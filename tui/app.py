"""The Blurcast terminal UI: attaches to the background engine (starting it if none runs) and steers it.

Quitting the UI, or losing the SSH session, never stops the engine. If the engine dies, every screen says so
and greys its figures; `r` starts it again.

    python -m tui --source clip.mp4      (the CLI's bare `blurcast` calls `run_ui`)
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar

from textual import events, on, work
from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.content import Content
from textual.reactive import var
from textual.screen import Screen
from textual.worker import Worker, WorkerState, get_current_worker

from tui.link import ControlError, EngineLink, EnginePaths, default_engine_args, default_paths, private_dir
from tui.messages import (
    CommandFailed,
    EngineLost,
    EngineStarted,
    EngineStartFailed,
    EngineStarting,
    EngineStats,
)
from tui.screens.confirm import ConfirmScreen
from tui.screens.facebank import FacebankScreen
from tui.screens.live import LiveScreen
from tui.screens.output import OutputScreen
from tui.widgets import Slider
from tui.workers import wait_cancellable

log = logging.getLogger(__name__)

TELEMETRY_HZ = 10.0
STALE_AFTER_S = 1.5  # no telemetry for this long: figures are marked stale (the stream sends every 0.1 s)
RECONNECT_S = 0.5
OPTIMISTIC_S = 2.0  # a switch just sent counts as set for this long, even before telemetry confirms it
HISTORY = 60  # seconds of fps/latency kept for the live screen's sparklines
ENGINE_STATES = ("connecting", "starting", "live", "stale", "lost", "detached")


class BlurcastApp(App[int]):
    """Screens: live (figures, faces, sliders, preview), facebank, source & output."""

    CSS_PATH = "app.tcss"
    TITLE = "Blurcast"
    COMMAND_PALETTE_DISPLAY = "^p"  # ctrl+p: Textual's command palette, as Textual users expect
    MODES: ClassVar = {"live": LiveScreen, "facebank": FacebankScreen, "output": OutputScreen}
    DEFAULT_MODE = "live"
    HORIZONTAL_BREAKPOINTS: ClassVar = [(0, "-narrow"), (120, "-wide")]
    VERTICAL_BREAKPOINTS: ClassVar = [(0, "-short"), (36, "-tall")]
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("l", "show('live')", "Live"),
        Binding("f", "show('facebank')", "Facebank"),
        Binding("o", "show('output')", "Output"),
        Binding("p", "panic", "Panic"),  # on at once (fail closed); off only after a confirm
        Binding("space", "pause", "Pause", key_display="␣"),
        Binding("r", "restart_engine", "Restart engine"),
        Binding("question_mark", "toggle_help", "Keys"),
        Binding("q", "quit", "Quit"),
        # Textual's own ctrl+q, its long help (four lines in the keys panel at 80 columns) replaced by what matters
        Binding("ctrl+q", "quit", "Quit", tooltip="(the engine keeps running)", show=False, priority=True),
    ]

    engine_state: var[str] = var("connecting")  # one of ENGINE_STATES
    engine_reason: var[str] = var("")
    telemetry: var[dict[str, Any] | None] = var(None, always_update=True)
    telemetry_hz: var[float] = var(0.0)
    limits: var[dict[str, dict[str, Any]] | None] = var(None)  # the engine's `limits`: what the sliders allow
    stream_limits: var[dict[str, dict[str, Any]] | None] = var(None)  # `stream_limits`: a stream output's options

    def __init__(self, link: EngineLink, *, start_engine: bool = True, attach: bool = True,
                 facebank_path: Path | None = None, requested_source: str | None = None) -> None:
        super().__init__()
        self.requested_source = requested_source  # given on the command line: an engine on another is asked
        self._lost_pid: int | None = None  # the engine that stopped answering: `r` restarts it as it ran
        self.graphics: str | None = None  # "sixel"/"kitty" when the terminal draws pictures (run_ui finds out)
        self.typed_ahead = ""  # keys typed while run_ui asked the terminal: replayed once the app runs
        self.engine_link = link
        self.start_engine = start_engine
        self.attach = attach
        self.facebank_path = facebank_path
        self._starting = False
        self._started_one = False  # this UI has started an engine (with its engine options)
        self.start_failed = False  # "lost" because the engine never started (a bad source): said so, not "engine lost"
        self._last_stats = 0.0
        self._stamps: deque[float] = deque(maxlen=64)
        self._pending_settings: dict[str, Any] = {}
        self._pending_lock = threading.Lock()
        self._send_lock = threading.Lock()  # one `set` at a time, so the newest value always lands last
        self._switches: dict[str, tuple[bool, float]] = {}
        self._queued: dict[str, tuple[str, bool]] = {}  # switch -> (command, on) asked before the engine answered
        self.settings_sent: dict[str, tuple[Any, float]] = {}
        self.settings_delays: deque[float] = deque(maxlen=100)  # s from a slider change to its telemetry echo
        self.fps_history: deque[float] = deque(maxlen=HISTORY)  # one sample a second, for the sparklines
        self.latency_history: deque[float] = deque(maxlen=HISTORY)
        self._history_at = 0.0

    # --- lifecycle --------------------------------------------------------------------------------------------
    def on_load(self) -> None:
        # Before the driver starts reading the terminal: keys typed after the probe come after these
        self._replay_typed_ahead()

    def on_mount(self) -> None:
        if not self.attach:
            self.engine_state = "detached"
            return
        self.set_interval(0.5, self._check_stale)
        if self.start_engine:
            self._begin_start()
        self.stream_telemetry()

    def _replay_typed_ahead(self) -> None:
        """Keys typed before the app took the terminal count as typed now (never lost to the terminal query)."""
        from textual import events

        from tui.terminal_probe import KeyParser

        typed, self.typed_ahead = self.typed_ahead, ""
        if not typed:
            return
        parser = KeyParser()
        for event in [*parser.feed(typed), *parser.feed("")]:  # "" ends the input: a last lone Escape is a key
            if isinstance(event, events.Key):
                self.post_message(event)

    def _begin_start(self) -> None:
        self._starting = True  # set before the worker runs: stream failures meanwhile are expected
        self.ensure_engine()

    @work(thread=True, exclusive=True, group="engine-start", exit_on_error=False)
    def ensure_engine(self) -> None:
        """Start the engine unless one answers. The start itself runs on a daemon thread so that quitting the
        UI while models load does not wait for it (the engine process carries on regardless)."""
        if self.engine_link.running():
            if self.engine_link.engine_options and not self._started_one:  # found running: not this UI's
                self.call_from_thread(
                    self.notify, "The engine already running keeps the TLS options it was started with ("
                    + " ".join(self.engine_link.engine_options) + " not applied): `blurcast engine stop`, then start "
                    "the UI again.", title="TLS options not applied", severity="warning", timeout=15, markup=False)
            self.post_message(EngineStarted(None))
            return
        self.post_message(EngineStarting())
        self._started_one = True
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
        self._note_history(message.telemetry, message.received)
        if self.engine_state != "live":
            self.engine_reason = ""
            self.start_failed = False
            self.engine_state = "live"
            if self.attach:
                self.fetch_limits()
            self._send_queued()
            self._check_requested_source(message.telemetry)
        self.telemetry = message.telemetry

    def _note_history(self, t: dict[str, Any], now: float) -> None:
        if now - self._history_at >= 1.0:
            self._history_at = now
            self.fps_history.append(float(t.get("fps") or 0.0))
            # the viewer's delay where the engine measures it (frames held back included), else processing's
            delay = t.get("output_delay_p95_ms")
            self.latency_history.append(float((delay if delay is not None else t.get("latency_p95_ms")) or 0.0))

    @work(thread=True, exclusive=True, group="limits", exit_on_error=False)
    def fetch_limits(self) -> None:
        """The sliders' ranges come from the engine, which is what refuses values past them."""
        try:
            limits = self.engine_link.request("limits")
        except ControlError as exc:
            log.warning("the engine gives no limits (%s): sliders stay off", exc)
            return
        self.call_from_thread(setattr, self, "limits", limits)
        try:
            stream = self.engine_link.request("stream_limits")
        except ControlError as exc:  # an older engine: it still checks what it is sent
            log.warning("the engine gives no stream output limits (%s)", exc)
            return
        self.call_from_thread(setattr, self, "stream_limits", stream)

    def _check_requested_source(self, t: dict[str, Any]) -> None:
        """`--source X` while an engine already reads Y: ask, never ignore it silently."""
        wanted, self.requested_source = self.requested_source, None
        now = str((t.get("source") or {}).get("spec", ""))
        if wanted is None or _same_source(wanted, now):
            return

        def answer(yes: bool | None) -> None:
            if yes:
                self.switch_source(wanted, loop=Path(wanted).expanduser().is_file())
            else:
                self.notify(f"Kept the engine on {now}.", timeout=5, markup=False)

        self.push_screen(ConfirmScreen(Content(f"An engine is already running on {now}.\n"  # sources: text
                                               f"Switch it to {wanted}? (y/n)")), answer)

    def on_engine_lost(self, message: EngineLost) -> None:
        if self._starting:
            return  # the new engine is not answering yet
        if self.engine_state == "lost" and self.engine_reason:
            return  # the telemetry reader retries every half second: its socket error must not hide why it stopped
        was_up = self.engine_state in ("live", "stale")
        if was_up:
            self._lost_pid = (self.telemetry or {}).get("pid")  # `r` restarts it as it ran
        self.engine_reason = message.reason
        self.engine_state = "lost"
        self.telemetry_hz = 0.0
        if was_up:
            self.notify(f"The engine stopped ({message.reason}). Press r to restart it.", title="Engine lost",
                        severity="error", timeout=10, markup=False)

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
        self.engine_reason = start_failure(message.reason)  # one line: the engine's own error, no OpenCV dump
        self.start_failed = True  # before the state: the live screen words its note by it
        self.engine_state = "lost"
        self.notify(self.engine_reason, title="The engine did not start", severity="error", timeout=15,
                    markup=False)  # the engine's words (paths, URLs) are text, never markup

    def on_command_failed(self, message: CommandFailed) -> None:
        self.notify(message.error, title=f"{message.cmd} failed", severity="error", timeout=8, markup=False)
        if message.cmd == "set":
            self.settings_sent.clear()  # the sliders take the engine's values again, at once
            for screen in self.screen_stack:
                for slider in screen.query(Slider):
                    slider.forget_move()

    @on(Worker.StateChanged)
    def _worker_failed(self, event: Worker.StateChanged) -> None:
        if event.state is WorkerState.ERROR:
            log.error("worker %s failed: %s", event.worker.name, event.worker.error)
            self.notify(str(event.worker.error), title=f"{event.worker.name} failed", severity="error", markup=False)

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
        if not self.attach:
            return  # a detached app (snapshots, demos) has no engine to tell
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
        """panic/paused as asked before the engine answered, as last asked for (for a moment), or as the engine
        last reported."""
        if name in self._queued:
            return self._queued[name][1]
        asked = self._switches.get(name)
        if asked and time.monotonic() - asked[1] < OPTIMISTIC_S:
            return asked[0]
        return bool(((self.telemetry or {}).get("settings") or {}).get(name))

    def _toggle(self, name: str, cmd: str) -> None:
        on_now = not self.switch_state(name)
        if self.engine_state in ("live", "stale"):
            self._switches[name] = (on_now, time.monotonic())
            self.send_command(cmd, on=on_now)
        elif on_now:
            # The first keys often come while the engine starts: a panic asked then is a panic done, once it
            # answers (blurring more is always safe, whichever engine answers).
            self._queued[name] = (cmd, True)
            self.notify(f"{name.capitalize()} on as soon as the engine answers.", timeout=4)
        else:
            # Off puts faces back on air: never kept for whatever engine answers next, without a fresh confirm
            self.notify(f"{name.capitalize()} stays as it is: the engine is not answering. Ask again once it is.",
                        title="Not sent", severity="warning", timeout=6)

    def _send_queued(self) -> None:
        queued, self._queued = self._queued, {}
        for name, (cmd, on_now) in queued.items():
            self._switches[name] = (on_now, time.monotonic())
            self.send_command(cmd, on=on_now)

    # --- actions ----------------------------------------------------------------------------------------------
    def action_show(self, mode: str) -> None:
        if self.current_mode != mode:
            self.switch_mode(mode)
            self.refresh_bindings()

    def switch_source(self, spec: str, loop: bool = False) -> None:
        """Read `spec` from now on: tell a live engine, or start a new one on it when none answers (the way out
        of 'no camera')."""
        if self.engine_state in ("live", "stale", "connecting"):  # an engine is (or may be) there: tell it
            self.send_command("source", spec=spec, loop=loop)
            return
        self.engine_link.engine_args = self.engine_link.with_source(spec, loop)
        self.requested_source = None  # chosen now: the command line's source (which failed) is no longer asked for
        self._lost_pid = None  # nor is the lost engine's: `r` after this start fails retries this source
        if not self._starting:
            self._begin_start()

    def action_panic(self) -> None:
        self._guarded_toggle("panic", "panic", "Turn panic off? Frames go out with only strangers' faces blurred.")

    def action_pause(self) -> None:
        self._guarded_toggle("paused", "pause", "Resume? Frames go out with only strangers' faces blurred.")

    def _guarded_toggle(self, name: str, cmd: str, question: str) -> None:
        """On at once (blurring more is always safe); off, which puts faces back on air, only after a yes."""
        if not self.switch_state(name):
            self._toggle(name, cmd)
            return
        self.push_screen(ConfirmScreen(f"{question} (y/n)"), lambda yes: self._toggle(name, cmd) if yes else None)

    def action_toggle_help(self) -> None:
        from textual.widgets import HelpPanel

        panels = self.screen.query(HelpPanel)
        if panels:
            panels.remove()
        else:
            self.action_show_help_panel()

    def on_key(self, event: events.Key) -> None:
        """Escape that nothing else took closes the keys panel (`?`). A key handler, not a binding: a binding would
        be listed in that panel, and at 80 columns push the screen's own keys off it."""
        from textual.widgets import HelpPanel

        panels = self.screen.query(HelpPanel) if event.key == "escape" else None
        if panels:
            panels.remove()
            event.stop()

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        for command in super().get_system_commands(screen):
            if command.title not in ("Keys", "Quit"):  # ours below say what this app does (no duplicate "Keys")
                yield command
        yield SystemCommand("Quit", "Quit the UI; the engine keeps running (blurcast engine stop ends it)",
                            self.action_quit)
        yield SystemCommand("Panic", "Blur every whole frame (or turn it off, after a confirm)", self.action_panic)
        yield SystemCommand("Pause", "Blur every whole frame while you step away", self.action_pause)
        for mode, help_text in (("live", "figures, faces, sliders, preview"), ("facebank", "who stays visible"),
                                ("output", "source, virtual camera, recording, streams")):
            yield SystemCommand(f"Show {mode}", help_text, lambda m=mode: self.action_show(m))
        yield SystemCommand("Look-ahead", "Hide faces in the frames before they were found; adds delay (a)",
                            lambda: self._show_and("live", "focus_lookahead"))
        yield SystemCommand("Stream options", "Keyframe, x264 preset, SRT latency and passphrase (k)",
                            lambda: self._show_and("output", "focus_stream_options"))
        yield SystemCommand("Restart engine", "Start the engine again after it stopped", self.action_restart_engine)
        yield SystemCommand("Keys", "Show every key of this screen", self.action_toggle_help)

    def _show_and(self, mode: str, action: str) -> None:
        """A palette command for a control on another screen: show that screen, then focus the control."""
        self.action_show(mode)
        self.call_after_refresh(getattr(self.screen, f"action_{action}"))

    def action_restart_engine(self) -> None:
        if self.engine_state in ("lost", "stale") and not self._starting:
            pid, self._lost_pid = self._lost_pid, None
            if self.engine_link.take_launch_of(pid if isinstance(pid, int) else None):
                log.info("restarting the engine as it last ran (pid %s)", pid)
            self._begin_start()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # panic/pause stay on: pressed before the engine answers, the wish is kept and sent once it does
        if action == "restart_engine":
            return self.engine_state in ("lost", "stale")
        if action == "show":
            return parameters[0] != self.current_mode  # no key for the screen already shown
        return True


def start_failure(reason: str) -> str:
    """The engine's own `error:` line out of a start failure (its log tail holds OpenCV's dump too)."""
    lines = [ln.strip() for ln in reason.splitlines() if ln.strip()]
    starts = [i for i, ln in enumerate(lines) if ln.startswith("error:")]
    if not starts:
        return lines[0] if lines else "the engine did not start"
    parts = [lines[starts[-1]].removeprefix("error:").strip()]
    for ln in lines[starts[-1] + 1:]:  # a wrapped error line goes on until the next log line
        if ln.startswith(("[", "error:", "Traceback")):
            break
        parts.append(ln)
    text = " ".join(parts)
    if "camera" in text.lower():  # the way out first, the engine's advice after it
        return f"{text.split('(')[0].strip()} · o: pick a video file or URL instead"
    return text


def _same_source(a: str, b: str) -> bool:
    if a == b:
        return True
    try:
        return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()
    except (OSError, RuntimeError):
        return False


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, int | float) and isinstance(b, int | float):
        return abs(a - b) < 1e-6
    return a == b


def make_app(paths: EnginePaths | None = None, source: str = "0", start_engine: bool = True,
             engine_args: list[str] | None = None, *, attach: bool = True,
             facebank_path: Path | None = None, requested_source: str | None = None,
             engine_options: Iterable[str] = ()) -> BlurcastApp:
    """The app for `paths` (default: $BLURCAST_HOME). `engine_args` override the `engine serve` arguments
    derived from `source`; `engine_options` (TLS) go to every engine this UI starts on a source of its own (added to
    the derived arguments, not to `engine_args`); `attach=False` builds an app that never talks to an engine
    (snapshots, demos)."""
    options = list(engine_options)
    args = list(engine_args) if engine_args else [*default_engine_args(source), *options]
    link = EngineLink(paths or default_paths(), args, engine_options=options)
    return BlurcastApp(link, start_engine=start_engine, attach=attach, facebank_path=facebank_path,
                       requested_source=requested_source)


def run_ui(source: str | None = None, paths: EnginePaths | None = None, engine_options: Iterable[str] = ()) -> int:
    """Run the UI in this terminal until the user quits; the engine keeps running. Returns an exit code.
    `source` None: camera 0 if no engine runs, else whatever it reads; given: a running engine on another
    source is asked to switch. `engine_options`: more `engine serve` arguments for an engine this UI starts (TLS)."""
    app = make_app(paths, source=source or "0", requested_source=source, engine_options=engine_options)
    _log_to_file(app.engine_link.paths.root / "ui.log")
    from tui.terminal_probe import ignore_late_answers
    from tui.widgets.graphics_preview import detect_graphics  # asks the terminal: before the app takes it

    answer = detect_graphics()
    app.graphics, app.typed_ahead = answer.graphics, answer.typed
    ignore_late_answers()
    app.run()
    if app.engine_state in ("live", "stale"):
        sys.stderr.write("Blurcast: the engine keeps running; `blurcast engine stop` ends it.\n")
    return app.return_code or 0


def _log_to_file(path: Path) -> None:
    """Log to the state folder: the full-screen UI owns the terminal, so stderr would garble it."""
    try:
        private_dir(path.parent)  # the engine's state folder: owner-only, whichever of UI and engine makes it
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.fchmod(fd, 0o600)  # the log names sources and enrolled people; also tightens an older 0644 one
        finally:
            os.close(fd)
        handler = logging.FileHandler(path)
    except OSError:
        return
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    logging.getLogger("tui").setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tui", description="Blurcast's terminal UI.")
    parser.add_argument("--source", help="camera index, video file or URL (default 0; a running engine is asked)")
    args = parser.parse_args(argv)
    return run_ui(args.source)


if __name__ == "__main__":
    sys.exit(main())
