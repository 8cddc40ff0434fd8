"""Source & output screen: what the engine reads (camera, file, URL) and where the anonymized frames go
(the virtual camera OBS reads, a recording, SRT/RTMP streams with their encoder and SRT options). Engine
errors are shown in place, in the engine's words; the stream options' ranges and presets come from the
engine's `stream_limits`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.content import Content
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Button, Checkbox, DataTable, Footer, Input, RadioButton, RadioSet, Select, Static

from tui.format import masked_url, short_path, source_line
from tui.link import ControlError
from tui.screens.confirm import ConfirmScreen
from tui.suggest import PathSuggester
from tui.widgets import EngineBar
from tui.widgets.path_input import PathInput
from tui.widgets.row_table import QUIET_COPY, RowTable

START_GRACE_S = 3.0
VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v", ".ts", ".flv")
PLACEHOLDERS = {
    "camera": "camera index (0, 1, …) or /dev/videoN",
    "file": "video file path (Tab or → completes)",
    "url": "rtsp://… or http(s)://… stream URL",
}


class CommandResult(Message):
    """The reply (or error) to one command sent from this screen; `area` names where to show it."""

    def __init__(self, area: str, ok: bool, text: str) -> None:
        super().__init__()
        self.area = area
        self.ok = ok
        self.text = text


def source_problem(kind: str, spec: str) -> str | None:
    """A plain-words reason the spec cannot be right for its kind, checked before asking the engine."""
    if not spec:
        return "Type a camera index, a file or a URL first."
    if kind == "camera" and not (spec.isdigit() or spec.startswith("/dev/video")):
        return "A camera is a number (0 is the first camera) or a /dev/videoN device."
    if kind == "file" and not _is_file(spec):
        return f"No such video file: {spec}"
    if kind == "url" and "://" not in spec:
        return "A stream URL starts with rtsp://, http:// or https://."
    return None


def _is_file(spec: str) -> bool:
    try:
        return Path(spec).expanduser().is_file()
    except (OSError, RuntimeError):  # ~nosuchuser, an unreadable folder
        return False


def recording_folder() -> Path:
    folder = Path.home() / "Videos"
    return folder if folder.is_dir() else Path.home()


def default_recording() -> Path:
    return recording_folder() / time.strftime("blurcast-%Y%m%d-%H%M%S.mp4")


STREAM_SCHEMES = ("srt://", "rtmp://", "rtmps://")
OUTPUT_WORDS = {"vcam": "virtual camera", "file": "recording"}
STREAM_STATE_WORDS = {"waiting for the far end": "waiting"}  # the full words are in `engine status`


def _option_help(lim: dict[str, Any]) -> str:
    """The engine's help for an option with its range and default, for a field's tooltip."""
    span = f" ({lim['min']:g}–{lim['max']:g})" if lim.get("min") is not None and lim.get("max") is not None else ""
    default = f", default {lim['default']}" if lim.get("default") is not None else ""
    return f"{lim.get('help') or ''}{span}{default}"


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


def stream_problem(url: str) -> str | None:
    """A plain-words reason the text cannot be a stream output, checked before asking the engine."""
    if not url:
        return "Type where to send: srt://HOST:PORT, srt://:PORT?mode=listener or rtmp(s)://HOST/APP/KEY."
    if not url.lower().startswith(STREAM_SCHEMES):
        return "A stream output starts with srt://, rtmp:// or rtmps://."
    return None


# (field id, control API option, what to call it in the UI's own refusals, its parser): the engine checks ranges
STREAM_FIELDS: tuple[tuple[str, str, str, type], ...] = (
    ("#stream-bitrate", "bitrate_kbps", "kb/s is a whole number, e.g. 4000", int),
    ("#stream-keyframe", "keyframe_s", "keyframe s is a number of seconds, e.g. 2", float),
    ("#srt-latency", "srt_latency_ms", "SRT latency is a whole number of ms, e.g. 500", int),
)


def is_srt(url: str) -> bool:
    return url.lower().startswith("srt://")


def output_rows(t: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(sink name, what, where, state) for every output the engine reports; the UI's own preview is not one."""
    reported = [o for o in t.get("outputs") or [] if isinstance(o, dict) and o.get("name") != "preview"]
    if not reported:  # an older engine: bare names
        reported = [{"name": n} for n in t.get("sinks") or [] if n != "preview"]
    rows = []
    for o in reported:
        name = str(o.get("name"))
        what = "stream" if name.startswith("stream ") else OUTPUT_WORDS.get(name, name)
        where = str(o.get("path") or (name.removeprefix("stream ") if what == "stream" else "")) or "—"
        state = str(o.get("state") or "running")
        if what == "stream" and o.get("sent") is not None:
            state = STREAM_STATE_WORDS.get(state, state) + (f", {o['dropped']} dropped" if o.get("dropped") else "")
            state += f", {o['reconnects']}× reconnected" if o.get("reconnects") else ""
        rows.append((name, what, short_path(where, 34) if what == "recording" else _cut(where, 34), state))
    return rows


class OutputScreen(Screen):
    CSS_PATH = "output.tcss"
    AUTO_FOCUS = "#outputs"  # arrows pick an output from the first key (the source kinds would take space)
    BINDINGS: ClassVar[list[BindingType]] = [
        QUIET_COPY,
        Binding("s", "focus_source", "Source"),
        Binding("v", "toggle_vcam", "Virtual cam"),
        Binding("w", "toggle_record", "Record", tooltip="start (asks first: it writes the output to disk) or stop"),
        Binding("a", "focus_record_path", "Record to (path)", show=False),  # the file's field: Tab was the only way
        # t and x are named in the outputs' title, not the footer: at 80 columns it had no room left for panic,
        # pause, keys and quit
        Binding("t", "focus_stream", "Stream to", show=False),
        Binding("x", "stop_stream", "Stop stream", show=False),  # the stream output picked in the list; asks first
        Binding("k", "focus_stream_options", "Stream options", show=False),  # keyframe, preset, SRT
        Binding("escape", "leave_input", "Leave field (keys act again)"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self._recording: tuple[str, float] | None = None  # (path, started) of the recording this UI started
        self._last_saved: str | None = None
        # The files the engine wrote this recording, as telemetry named them: a size change starts a new one
        # (a.mp4, then a-1.mp4), so the path typed is not always the file written.
        self._written: list[str] = []
        self._record_hint = ""  # says how to start after Enter in the path field, until the field or state changes
        # The outputs list as last drawn, with whether the engine was live: with no rows the placeholder row
        # says which ("nothing leaves the engine" / "engine not live"), so both decide a redraw.
        self._rows_shown: tuple[list[tuple[str, str, str, str]], bool] | None = None

    def compose(self) -> ComposeResult:
        yield EngineBar()
        yield Static("Source: what the engine reads", classes="section-title")
        yield Static(id="source-now")
        with RadioSet(id="source-kind", compact=True):
            yield RadioButton("camera", value=True, id="kind-camera")
            yield RadioButton("video file", id="kind-file")
            yield RadioButton("stream URL", id="kind-url")
        with Horizontal(classes="row"):
            yield PathInput(placeholder=PLACEHOLDERS["camera"], id="source-spec", compact=True,
                            suggester=PathSuggester(suffixes=VIDEO_SUFFIXES))
            yield Checkbox("loop", value=True, id="loop", compact=True)
            yield Button("Switch", id="switch", compact=True, variant="primary")
        yield Static(id="source-msg", classes="msg")
        yield Static("Virtual camera: what OBS reads", classes="section-title")
        with Horizontal(classes="row"):
            yield Static(id="vcam-state", classes="state")
            yield Button("Start", id="vcam-start", compact=True, variant="success")
            yield Button("Stop", id="vcam-stop", compact=True)
        yield Static(id="vcam-msg", classes="msg")
        yield Static("Recording of the anonymized output", classes="section-title")
        with Horizontal(classes="row"):
            yield PathInput(placeholder="file to record to (empty: ~/Videos/blurcast-TIME.mp4, or ~/ without Videos)",
                            id="record-path", compact=True, suggester=PathSuggester())
            yield Button("Record", id="record-start", compact=True, variant="error")
            yield Button("Stop", id="record-stop", compact=True)
        yield Static(id="record-state", classes="msg")
        yield Static("Outputs: all the engine sends; stream to SRT or RTMP (t), stop a stream (x)",
                     classes="section-title")
        yield RowTable(id="outputs", cursor_type="row", show_header=False, zebra_stripes=False)
        with Horizontal(classes="row"):
            yield Input(placeholder="srt://HOST:PORT, srt://:PORT?mode=listener, rtmp(s)://HOST/APP/KEY",
                        id="stream-url", compact=True)
            yield Input(placeholder="kb/s", id="stream-bitrate", type="integer", compact=True)
            yield Button("Send", id="stream-start", compact=True, variant="error")
            yield Button("Stop", id="stream-stop", compact=True)
        with Horizontal(classes="row", id="stream-options"):  # empty fields: the engine's defaults
            yield Input(placeholder="keyframe s", id="stream-keyframe", type="number", compact=True)
            yield Select[str]([], prompt="x264 preset", id="stream-preset", compact=True, disabled=True)
            yield Input(placeholder="SRT latency ms", id="srt-latency", type="integer", compact=True)
            yield Input(placeholder="SRT passphrase", id="srt-passphrase", password=True, compact=True)
        yield Static(id="stream-msg", classes="msg")
        yield Footer(compact=True, show_command_palette=False)  # 80 columns: room for ? and q (^p is in ?)

    def on_mount(self) -> None:
        self._kind_changed()
        self.watch(self.app, "stream_limits", self._on_stream_limits)
        self.watch(self.app, "telemetry", self._on_telemetry)
        self.watch(self.app, "engine_state", lambda _: self._on_telemetry(self._app.telemetry))

    def on_screen_resume(self) -> None:
        self._on_telemetry(self._app.telemetry)
        self._prefill_source()

    def _prefill_source(self) -> None:
        """Start from what the engine reads now, so switching is an edit, not retyping."""
        source = (self._app.telemetry or {}).get("source") or {}
        spec = self.query_one("#source-spec", Input)
        if spec.value or source.get("kind") not in PLACEHOLDERS:
            return
        self.query_one(f"#kind-{source['kind']}", RadioButton).value = True
        spec.value = str(source.get("spec", ""))

    @property
    def _app(self) -> Any:
        return self.app

    def _on_stream_limits(self, limits: dict[str, dict[str, Any]] | None) -> None:
        """Presets, defaults and ranges as the engine publishes them (it is what refuses values past them)."""
        if not limits:
            return
        for field_id, option, _, _ in STREAM_FIELDS:
            if lim := limits.get(option):
                self.query_one(field_id, Input).tooltip = _option_help(lim)
        if lim := limits.get("srt_passphrase"):
            self.query_one("#srt-passphrase", Input).tooltip = _option_help(lim)
        preset = self.query_one("#stream-preset", Select)
        lim = limits.get("preset") or {}
        if lim.get("choices"):
            preset.set_options((str(c), str(c)) for c in lim["choices"])
            if lim.get("default") in lim["choices"]:
                preset.value = lim["default"]
            preset.tooltip = _option_help(lim)
            preset.disabled = False

    # --- state from telemetry ---------------------------------------------------------------------------------
    def _on_telemetry(self, t: dict[str, Any] | None) -> None:
        if not self.is_current and t is not None:
            return
        live = self._app.engine_state == "live"
        t = t or {}
        sinks = set(t.get("sinks") or []) if live else set()
        now = self.query_one("#source-now", Static)
        now.update(Content(f"now: {source_line(t.get('source'))}") if t else "now: —")  # a spec is text, never markup
        now.set_class(not live, "-stale")
        vcam = self.query_one("#vcam-state", Static)
        vcam.update("● running: OBS can read it" if "vcam" in sinks else "○ stopped" if live else "? engine not live")
        for widget_id, useless in (("#vcam-start", "vcam" in sinks), ("#vcam-stop", "vcam" not in sinks),
                                   ("#record-start", "file" in sinks), ("#record-stop", "file" not in sinks)):
            self.query_one(widget_id, Button).disabled = useless or not live
        # Lost engine: Switch starts a new one on the chosen source (the way out of "no camera").
        self.query_one("#switch", Button).disabled = self._app.engine_state in ("starting", "detached")
        paths = {o.get("name"): o.get("path") for o in t.get("outputs") or [] if isinstance(o, dict)}
        stopped = (t.get("stopped_outputs") or {}).get("file") if live else None
        self._show_recording("file" in sinks, live, paths.get("file"), stopped)
        self._show_outputs(output_rows(t) if live else [], live)

    def _show_outputs(self, rows: list[tuple[str, str, str, str]], live: bool) -> None:
        """The list of outputs, rebuilt only when it changed (a rebuild would move the picked row)."""
        table = self.query_one("#outputs", DataTable)
        if not table.columns:
            table.add_columns("what", "where", "state")
        shown = list(rows)
        if (shown, live) != self._rows_shown:
            picked = self._picked_output()
            table.clear()
            for name, what, where, state in shown:
                table.add_row(Text(what), Text(where), Text(state), key=name)  # paths, URLs: text
            if not shown:
                table.add_row("—", "nothing leaves the engine" if live else "engine not live", "", key="-none-")
            names = [row[0] for row in shown]
            if picked in names:
                table.move_cursor(row=names.index(picked))
            self._rows_shown = (shown, live)
        streams = [row for row in rows if row[1] == "stream"]
        self.query_one("#stream-stop", Button).disabled = not (live and streams)
        self.query_one("#stream-start", Button).disabled = not live

    def _picked_output(self) -> str | None:
        table = self.query_one("#outputs", DataTable)
        if not table.row_count:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return None if key == "-none-" else key

    def _show_recording(self, recording: bool, live: bool, engine_path: str | None = None,
                        stopped: str | None = None) -> None:
        state = self.query_one("#record-state", Static)
        if recording and engine_path and engine_path not in self._written:
            self._written.append(engine_path)
        if state.has_class("error"):
            return  # keep an error in view until the next action
        if not live:
            state.update("recording needs the engine, which is not live" if self._record_hint else "")
        elif recording:
            hint = f" · {self._record_hint}" if self._record_hint else ""
            state.update(Content(self._recording_line(engine_path) + hint))  # a path is text, never markup
        elif self._recording and time.monotonic() - self._recording[1] < START_GRACE_S:
            pass  # asked for; the engine opens the file before its next frame
        else:
            if self._written:  # stopped elsewhere (the CLI, another UI): what it wrote is still worth saying
                self._last_saved, self._written = ", ".join(self._written), []
            self._recording = None
            saved = f" · last saved {self._last_saved}" if self._last_saved else ""
            what = f"✗ the recording stopped: {stopped}" if stopped else "○ not recording"  # a full disk, hours in
            state.update(Content(what + (f" · {self._record_hint}" if self._record_hint else saved)))

    def _recording_line(self, engine_path: str | None) -> str:
        """The file the engine writes now (its telemetry), else the one asked for; how long, if this UI started it."""
        path = engine_path or (self._recording[0] if self._recording else None)
        since = f" ({time.monotonic() - self._recording[1]:.0f} s)" if self._recording else ""
        return f"● recording to {path}{since}" if path else "● recording (path not reported)"

    # --- commands ---------------------------------------------------------------------------------------------
    @work(thread=True, group="output", exit_on_error=False)
    def command(self, area: str, done: str, cmd: str, **args: Any) -> None:
        try:
            self._app.engine_link.request(cmd, **args)
        except ControlError as exc:
            self.post_message(CommandResult(area, False, str(exc)))
            return
        self.post_message(CommandResult(area, True, done))

    def on_command_result(self, message: CommandResult) -> None:
        target = {"source": "#source-msg", "vcam": "#vcam-msg", "record": "#record-state",
                  "stream": "#stream-msg"}[message.area]
        label = self.query_one(target, Static)
        if message.area == "vcam" and not message.ok:
            text = f"The virtual camera cannot start. {message.text}"
        else:
            text = message.text
        label.update(Content(text))  # the engine's words, paths, URLs: text, never markup
        label.set_class(not message.ok, "error")
        if message.area == "record" and not message.ok:
            self._recording = None

    def _kind(self) -> str:
        pressed = self.query_one("#source-kind", RadioSet).pressed_button
        return (pressed.id or "kind-camera").removeprefix("kind-") if pressed else "camera"

    @on(RadioSet.Changed, "#source-kind")
    def _kind_changed(self) -> None:
        kind = self._kind()
        spec = self.query_one("#source-spec", Input)
        spec.placeholder = PLACEHOLDERS[kind]
        self.query_one("#loop", Checkbox).display = kind == "file"

    @on(Input.Submitted, "#source-spec")
    def _source_submitted(self) -> None:
        """Enter in the field changes what goes on air: only after a yes."""
        spec = self.query_one("#source-spec", Input).value.strip()
        if source_problem(self._kind(), spec) or self._app.engine_state not in ("live", "stale"):
            self.switch_source()
            return
        self.app.push_screen(ConfirmScreen(Content(f"Switch the source to {spec}? (y/n)")),
                             lambda yes: self.switch_source() if yes else None)

    @on(Button.Pressed, "#switch")
    def switch_source(self) -> None:
        kind, spec = self._kind(), self.query_one("#source-spec", Input).value.strip()
        problem = source_problem(kind, spec)
        msg = self.query_one("#source-msg", Static)
        if problem:
            msg.update(Content(problem))
            msg.set_class(True, "error")
            return
        if kind == "file":
            spec = str(Path(spec).expanduser().resolve())
        msg.update(Content(f"switching to {spec}…"))
        msg.set_class(False, "error")
        loop = kind == "file" and self.query_one("#loop", Checkbox).value
        if self._app.engine_state not in ("live", "stale"):
            msg.update(Content(f"starting the engine on {spec}…"))
            self._app.switch_source(spec, loop=loop)
            return
        self.command("source", f"Now reading {spec}.", "source", spec=spec, loop=loop)

    @on(Button.Pressed, "#vcam-start")
    def start_vcam(self) -> None:
        self.query_one("#vcam-msg", Static).update("starting the virtual camera…")
        self.command("vcam", "Virtual camera started: pick 'Blurcast' (or the v4l2loopback device) in OBS.",
                     "sink_start", kind="vcam")

    @on(Button.Pressed, "#vcam-stop")
    def stop_vcam(self) -> None:
        self.command("vcam", "Virtual camera stopped.", "sink_stop", name="vcam")

    @on(Input.Submitted, "#record-path")
    def _record_path_submitted(self) -> None:
        """Enter in the path field does not start a recording (typing must never do that): it says how, on the
        recording line, where it stays (telemetry redraws that line ten times a second) until the field changes."""
        if "file" in ((self._app.telemetry or {}).get("sinks") or []):
            self._record_hint = "to record to this path: Stop, then Record"
        else:
            self._record_hint = "press Record (or w, then y) to start recording"
        self.query_one("#record-state", Static).set_class(False, "error")
        self._on_telemetry(self._app.telemetry)  # the line, with the hint, at once

    @on(Input.Changed, "#record-path")
    def _record_path_changed(self) -> None:
        self._record_hint = ""

    def _recording_path(self) -> Path | None:
        """The file the recording field names (a time-stamped one when empty), or None, said why, when it cannot
        be one: before any question is asked about it."""
        raw = self.query_one("#record-path", Input).value.strip()
        try:
            path = Path(raw).expanduser().resolve() if raw else default_recording()  # the engine has its own cwd
        except (OSError, RuntimeError) as exc:
            self.on_command_result(CommandResult("record", False, f"Cannot use {raw}: {exc}"))
            return None
        if not path.parent.is_dir():
            self.on_command_result(CommandResult("record", False, f"No such folder: {path.parent}"))
            return None
        if path.is_dir():  # not "it exists: it is kept" (a review, stop 49); the engine words the other refusals
            self.on_command_result(CommandResult("record", False, f"{path} is a folder: give a file name in it, "
                                                                  f"e.g. {path / 'out.mp4'}"))
            return None
        return path

    @on(Button.Pressed, "#record-start")
    def start_recording(self) -> None:
        if (path := self._recording_path()) is not None:
            self._record_to(path)

    def _record_to(self, path: Path) -> None:
        self._recording, self._written, self._record_hint = (str(path), time.monotonic()), [], ""
        self.on_command_result(CommandResult("record", True, f"starting to record to {path}…"))
        self.command("record", f"● recording to {path}", "sink_start", kind="file", path=str(path))

    @on(Button.Pressed, "#record-stop")
    def stop_recording(self) -> None:
        saved = ", ".join(self._written) or (self._recording[0] if self._recording else "the file")
        self._last_saved, self._recording, self._written, self._record_hint = saved, None, [], ""
        self.command("record", f"Recording stopped; saved {saved}.", "sink_stop", name="file")

    @on(Input.Submitted, "#stream-url")
    @on(Input.Submitted, "#stream-bitrate")
    @on(Input.Submitted, "#stream-options Input")
    @on(Button.Pressed, "#stream-start")
    def ask_start_stream(self) -> None:
        """Sending the stream somewhere new puts it on air there: only after a yes (Enter in a field too)."""
        url = self.query_one("#stream-url", Input).value.strip()
        if problem := stream_problem(url):
            self.on_command_result(CommandResult("stream", False, problem))
            return
        encrypted = is_srt(url) and bool(self.query_one("#srt-passphrase", Input).value)
        self.app.push_screen(ConfirmScreen(Content(f"Send the anonymized stream to {masked_url(url)}"
                                                   f"{' (encrypted)' if encrypted else ''}? (y/n)")),
                             lambda yes: self.start_stream(url) if yes else None)

    def start_stream(self, url: str) -> None:
        args = self._stream_args(url)
        if args is None:
            return
        self.on_command_result(CommandResult("stream", True, "starting the stream output…"))
        self.command("stream", "Stream output started: it shows in the list above.", "sink_start", **args)

    def _stream_args(self, url: str) -> dict[str, Any] | None:
        """`sink_start` arguments from the fields (an empty one: the engine's default); None after saying what
        is not a number. Ranges are the engine's to check: it says them in its own words."""
        args: dict[str, Any] = {"kind": "stream", "path": url}
        for field_id, option, refusal, parse in STREAM_FIELDS:
            field = self.query_one(field_id, Input)
            if not field.display or not (text := field.value.strip()):
                continue
            try:
                args[option] = parse(text)
            except ValueError:  # number fields still let "-", "+", "1e" or "1_" through
                self.on_command_result(CommandResult("stream", False, refusal))
                return None
        preset = self.query_one("#stream-preset", Select).value
        if isinstance(preset, str):
            args["preset"] = preset
        passphrase = self.query_one("#srt-passphrase", Input)
        if passphrase.display and passphrase.value:
            args["srt_passphrase"] = passphrase.value
        srt_options = [key for key in ("srt_latency_ms", "srt_passphrase") if key in args]
        if srt_options and not all(key in (self.app.stream_limits or {}) for key in srt_options):
            # An engine from before these options ignores them: the stream would go out unencrypted.
            self.on_command_result(CommandResult("stream", False, "this engine predates SRT latency and "
                                                 "passphrase options: stop it and press r to start this version"))
            return None
        return args

    @on(Input.Changed, "#stream-url")
    def _stream_url_changed(self) -> None:
        """SRT's own options show for an SRT URL (and while none is typed, so they can be found)."""
        url = self.query_one("#stream-url", Input).value.strip()
        for field_id in ("#srt-latency", "#srt-passphrase"):
            self.query_one(field_id, Input).display = not url or is_srt(url)

    @on(Button.Pressed, "#stream-stop")
    def action_stop_stream(self) -> None:
        """Stop the stream output picked in the list (the only one, if one); asks first: it ends a broadcast."""
        streams = [row[0] for row in output_rows(self._app.telemetry or {}) if row[1] == "stream"]
        picked = self._picked_output()
        name = picked if picked in streams else streams[0] if len(streams) == 1 else None
        if name is None:
            text = "Pick the stream to stop in the list (↑/↓), then x." if streams else "No stream output is running."
            self.on_command_result(CommandResult("stream", False, text))
            return
        where = name.removeprefix("stream ")
        self.app.push_screen(ConfirmScreen(Content(f"Stop sending to {where}? (y/n)")),
                             lambda yes: self.command("stream", f"Stopped sending to {where}.", "sink_stop",
                                                      name=name) if yes else None)

    def action_focus_stream(self) -> None:
        self.query_one("#stream-url", Input).focus()

    def action_focus_record_path(self) -> None:
        self.query_one("#record-path", Input).focus()

    def action_focus_stream_options(self) -> None:
        self.query_one("#stream-keyframe", Input).focus()

    # --- actions ----------------------------------------------------------------------------------------------
    def action_focus_source(self) -> None:
        self.query_one("#source-spec", Input).focus()

    def action_toggle_vcam(self) -> None:
        sinks = (self._app.telemetry or {}).get("sinks") or []
        self.stop_vcam() if "vcam" in sinks else self.start_vcam()

    def action_toggle_record(self) -> None:
        sinks = (self._app.telemetry or {}).get("sinks") or []
        if "file" in sinks:
            self.stop_recording()
            return
        path = self._recording_path()  # a missing folder is said now, not after a yes; the name asked is the one used
        if path is None:
            return
        kept = " (it exists: it is kept, and the recording gets a new name beside it)" if path.exists() else ""
        self.app.push_screen(ConfirmScreen(Content(f"Start recording the anonymized output to {path}{kept}? (y/n)")),
                             lambda yes: self._record_to(path) if yes else None)

    def action_leave_input(self) -> None:
        self.query_one("#outputs", DataTable).focus()  # not the source kinds: they take space (Pause) as a pick

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("toggle_vcam", "toggle_record", "stop_stream", "focus_stream", "focus_stream_options"):
            return True if self._app.engine_state == "live" else None
        if action == "leave_input":
            return isinstance(self.focused, Input)
        return True
