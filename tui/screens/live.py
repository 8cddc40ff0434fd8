"""Live screen: engine figures with their recent history, the sliders (ranges, defaults and help from the
engine), the anonymized preview with every face outlined and numbered, and the faces in view with why each is
blurred. Pick a face (arrows or its number) and press e to keep it visible: the engine enrols it."""

from __future__ import annotations

import time
from contextlib import suppress
from typing import Any, ClassVar

from rich.text import Text
from textual import events, on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Input, Sparkline, Static
from textual.worker import get_current_worker

from tui.format import (
    FACE_COLUMNS,
    enrolment_line,
    face_row,
    figures,
    in_view,
    lookahead_cost,
    lookahead_done,
    lookahead_rate,
)
from tui.link import ControlError, decode_preview
from tui.messages import PreviewFrame
from tui.screens.enrol import EnrolScreen
from tui.widgets import EngineBar, Preview, Slider
from tui.widgets.row_table import QUIET_COPY, RowTable
from tui.workers import wait_cancellable

PREVIEW_HZ = 3.0
TABLE_EVERY_S = 0.2  # the faces table repaints at most 5 times a second: readable, and half the CPU of 10
ECHO_GRACE_S = 2.0  # a slider just moved is not reset by telemetry that predates the change
STEADY_S = 2.0  # a face in view this long, with an empty facebank, is offered for enrolment
# A finished enrolment's outcome stays on the notice this long, then the notice is the offer's again. The engine
# reports the last enrolment until the next one starts: shown for good, a failure hid the offer to try again.
ENROL_OUTCOME_S = 10.0
DIGITS_S = 1.0  # digits typed within this long of each other make one face number
TYPED_PICK_S = 5.0  # `e` this soon after a number that picked no face refuses, rather than enrol the cursor's row
ENROL_SECONDS = 3.0  # several head poses (2 s gave too few to hold through turns); the models load meanwhile
NAV_KEYS = frozenset({"up", "down", "pageup", "pagedown", "home", "end", "ctrl+home", "ctrl+end"})
RATE_STEADY = 0.03  # the look-ahead's cost follows the processed rate once it moves by more than this share
FACES_TITLE = "faces in view"
SHORT_ROWS = 24  # a terminal shorter than this gives the faces table its rows only (see on_resize)
USER_MOVE_S = 0.5  # a highlight this soon after a key or click in the table is the user's pick

# (setting, label, step, format): the range, default and help come from the engine's `limits`
SLIDERS: tuple[tuple[str, str, float, str], ...] = (
    ("similarity_threshold", "threshold", 0.01, "{:.2f}"),
    ("confidence", "confidence", 0.05, "{:.2f}"),
    ("strength", "strength", 0.05, "{:.2f}"),
    ("margin", "margin", 0.05, "{:.2f}"),
    ("hold_seconds", "hold", 0.1, "{:.1f}s"),
    ("lookahead_frames", "look-ahead", 1, "{:.0f}"),  # shown with its cost: the delay at the rate processed
)
LOOKAHEAD = "lookahead_frames"
SLIDER_KEYS = "↑/↓ slider · ←/→ change · d default"

PREVIEW_NOTES = {
    "lost": "no picture (engine lost)",
    "stale": "no fresh frames: picture hidden",
    "starting": "starting the engine…",
    "connecting": "connecting…",
    "detached": "no engine attached",
}


def with_floor(name: str, value: float, low_confidence: float | None,
               lowered_from: float | None = None) -> dict[str, float]:
    """The settings to send for a slider move. The engine refuses a confidence below its low_confidence (the
    tracker's second pass, which has no slider): moving confidence under it takes it down too, in the same `set`.
    `lowered_from`: what low_confidence was before a move took it down; moving confidence up again takes it back up
    with it, never past either (it stayed at the lowest confidence tried, saved, and `d` restored confidence alone: a
    walkthrough, stop 43). A low_confidence set on purpose (`--set`, the settings file) is left alone."""
    if name != "confidence" or low_confidence is None:
        return {name: value}
    if value < low_confidence:
        return {name: value, "low_confidence": value}
    if lowered_from is not None and low_confidence < min(value, lowered_from):
        return {name: value, "low_confidence": min(value, lowered_from)}
    return {name: value}


class LiveScreen(Screen):
    CSS_PATH = "live.tcss"
    AUTO_FOCUS = "#faces"  # arrows pick a face and Enter enrols it from the first key
    BINDINGS: ClassVar[list[BindingType]] = [
        QUIET_COPY,
        Binding("e", "enrol", "Enrol"),
        Binding("s", "focus_sliders", "Sliders"),
        Binding("a", "focus_lookahead", "Look-ahead", show=False),  # its help line says the delay it adds
        Binding("t", "focus_faces", "Faces", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self._shown: dict[str, tuple[Any, ...]] = {}  # row key -> cells on screen
        self._table_at = 0.0
        self.selected: int | None = None  # the face picked in the table (or by number), outlined in the preview
        self._first_seen: dict[int, float] = {}  # track id -> when it came into view (for the enrol offer)
        self._enrol_seen: tuple[tuple[Any, ...], float] = ((), 0.0)  # the enrolment shown and since when
        self._digits = ("", 0.0)
        self._number_open = False  # digits typed now continue the number in `_digits`
        self._user_moved_until = 0.0
        self._user_picked = False  # the selection came from the user (keys, click, number), not from the offer
        self._done_shown = ""  # the look-ahead's counts as its help line last said them
        self._rate: tuple[float | None, str] = (None, "")  # the rate the look-ahead's cost is shown at, and which
        self._focus_when_ready: str | None = None  # s/a pressed before the engine gave the sliders' ranges
        self._low_lowered_from: float | None = None  # low_confidence before the confidence slider took it down

    def compose(self) -> ComposeResult:
        yield EngineBar()
        with Horizontal(id="top"):
            with Vertical(id="left"):
                yield Static(id="figures")
                with Horizontal(id="history"):
                    yield Static("fps ", classes="spark-label")
                    yield Sparkline([], id="fps-spark")
                    yield Static(" p95 ms ", classes="spark-label")
                    yield Sparkline([], id="latency-spark")
                with Vertical(id="sliders"):
                    for setting, label, step, fmt in SLIDERS:
                        yield Slider(label, 0.0, 1.0, step, fmt=fmt, id=setting.replace("_", "-"), name=setting,
                                     disabled=True)
                yield Static(SLIDER_KEYS, id="slider-help")
            yield self._make_preview()
        yield Static(id="notice")
        yield RowTable(id="faces", cursor_type="row", zebra_stripes=True)
        yield Footer(compact=True)

    def _make_preview(self) -> Preview:
        if getattr(self.app, "graphics", None):
            from tui.widgets.graphics_preview import GraphicsPreview

            return GraphicsPreview(id="preview")
        return Preview(id="preview")

    def on_mount(self) -> None:
        table = self.query_one("#faces", DataTable)
        for key, label, width in FACE_COLUMNS:
            table.add_column(label, key=key, width=width)
        table.border_title = FACES_TITLE
        preview = self.query_one("#preview", Preview)
        preview.border_title = "output (anonymized)"
        if not self._app.graphics and self.app.console.color_system != "truecolor":  # e.g. tmux, no COLORTERM
            preview.border_subtitle = "set COLORTERM=truecolor"  # 256 colours: the title must fit 80x24
        self.watch(self.app, "telemetry", self._on_telemetry, init=False)
        self.watch(self.app, "engine_state", self._on_engine_state)
        self.watch(self.app, "limits", self._on_limits)
        self.watch(self._lookahead(), "value", self._lookahead_moved, init=False)

    def on_resize(self, event: events.Resize) -> None:
        """Below 24 rows the faces table has room for a row or two: a row beats its header and the horizontal
        scrollbar (at 60x20 the scrollbar took the only row, under "faces in view: 8")."""
        short = event.size.height < SHORT_ROWS
        table = self.query_one("#faces", DataTable)
        table.show_header = not short
        table.styles.scrollbar_size_horizontal = 0 if short else 1

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
        self.query_one("#fps-spark", Sparkline).data = list(self._app.fps_history)
        self.query_one("#latency-spark", Sparkline).data = list(self._app.latency_history)
        settings = t.get("settings") or {}
        self._show_lookahead_cost(*lookahead_rate(t))
        if self.focused is self._lookahead() and lookahead_done(t) != self._done_shown:
            self._show_slider_help(self._lookahead())  # its counts of faces hidden and shown late moved
        self._sync_sliders(settings)
        if self._app.engine_state == "lost":  # the last figures, shown again on resume: their faces are gone
            self._forget_faces()
            return
        faces = in_view(t.get("faces") or [])
        now = time.monotonic()
        self._first_seen = {f["track_id"]: self._first_seen.get(f["track_id"], now) for f in faces
                            if "track_id" in f}
        src = t.get("source") or {}
        self.query_one("#preview", Preview).set_faces(faces, (int(src.get("width") or 0),
                                                              int(src.get("height") or 0)), self.selected)
        self._update_notice(t, faces, now)
        if now - self._table_at >= TABLE_EVERY_S:
            self._table_at = now
            self._update_faces(t, faces)

    def _show_lookahead_cost(self, fps: float | None, basis: str) -> None:
        """The look-ahead slider writes its value with the delay it adds: a held frame goes out when the engine
        has processed that many more, so at the engine's measured rate (below the source's when it sheds)."""
        shown, shown_basis = self._rate
        steady = fps is not None and shown is not None and abs(fps - shown) <= RATE_STEADY * shown
        if basis == shown_basis and (steady or fps == shown) and self._lookahead().describe is not None:
            return  # the measured rate wobbles by a frame: the figure changes when the rate does
        self._rate = (fps, basis)
        self._lookahead().describe = lambda frames: lookahead_cost(frames, fps, basis)[0]
        self._lookahead().refresh()
        if self.focused is self._lookahead():
            self._show_slider_help(self._lookahead())

    def _lookahead_moved(self, _: float) -> None:
        """Its help line says what the value costs: keep it true however the value moved (keys, the engine)."""
        if self.focused is self._lookahead():
            self._show_slider_help(self._lookahead())

    def _lookahead(self) -> Slider:
        return self.query_one(f"#{LOOKAHEAD.replace('_', '-')}", Slider)

    def _sync_sliders(self, settings: dict[str, Any]) -> None:
        sent = self._app.settings_sent
        now = time.monotonic()
        for slider in self.query(Slider):
            moved_at = max(slider.moved_at, sent[slider.name][1] if slider.name in sent else float("-inf"))
            just_moved = now - moved_at < ECHO_GRACE_S
            if slider.name in settings and not just_moved:
                slider.set_value(float(settings[slider.name]))

    def _update_faces(self, t: dict[str, Any], faces: list[dict[str, Any]]) -> None:
        """Rows keyed by track id; only cells whose text changed are touched (each touch repaints)."""
        settings = t.get("settings") or {}
        threshold = float(settings.get("similarity_threshold", 0.0))
        confidence = settings.get("confidence")
        table = self.query_one("#faces", DataTable)
        keys = []
        for face in sorted(faces, key=lambda f: f.get("track_id", 0)):
            key = str(face.get("track_id"))
            keys.append(key)
            cells = face_row(face, threshold, confidence)
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
        self._keep_cursor_on_selected(table)
        held = len(t.get("faces") or []) - len(faces)
        bank = t.get("facebank") or {}
        people = bank.get("people")
        # How many people the engine itself matches against: confirms an enrolment has reached it.
        known = "" if people is None else f" · facebank in use: {people} {'person' if people == 1 else 'people'}"
        if bank.get("error"):  # damaged: everybody is blurred, and `f` shows why
            known = " · facebank UNREADABLE: everybody blurred"
        table.border_title = (f"faces in view: {len(faces)}" + (f" (+{held} lost, held blurred)" if held else "")
                              + known)
        table.border_subtitle = "e: this is me · 0-9: pick by number"

    def _forget_faces(self) -> None:
        """The engine is gone: its last faces are no longer in view (a row said "visible" for nobody)."""
        table = self.query_one("#faces", DataTable)
        if not self._shown and table.border_title == FACES_TITLE:
            return  # none shown yet (the engine never answered): nothing to take back
        table.clear()
        self._shown.clear()
        self._first_seen.clear()
        table.border_title = "faces in view: none known (engine lost)"
        self.query_one("#preview", Preview).set_faces([], (0, 0), None)

    def _keep_cursor_on_selected(self, table: DataTable) -> None:
        """Rows come and go; the cursor stays on the face picked, not on whatever row took its place."""
        if self.selected is None or str(self.selected) not in self._shown:
            return
        index = table.get_row_index(str(self.selected))
        if table.cursor_row != index:
            table.move_cursor(row=index, animate=False)

    def _update_notice(self, t: dict[str, Any], faces: list[dict[str, Any]], now: float) -> None:
        notice = self.query_one("#notice", Static)
        enrol = t.get("enrolment")
        outcome = self._enrolment_shown(enrol, now)
        offer = self._offer(t, faces, now)
        if offer is not None and offer != self.selected:
            self._select(offer)  # the user's own pick is kept by _offer while it is in view
        if outcome is not None and (offer is None or outcome.get("state") != "failed"):
            notice.update(Text(enrolment_line(outcome), style="bold red" if outcome.get("state") == "failed"
                               else "bold green" if outcome.get("state") == "done" else "bold"))
        elif outcome is not None:  # failed, and a face is offered: why, and the way to try again, on one line
            notice.update(Text.assemble((enrolment_line(outcome), "bold red"), f" · Is #{offer} you? e tries again."))
        elif offer is not None:
            notice.update(Text.assemble(("Facebank empty: everyone is blurred. ", "bold"),
                                        f"Is #{offer} you? e keeps that face visible."))
        else:
            notice.update("")

    def _enrolment_shown(self, enrol: Any, now: float) -> dict[str, Any] | None:
        """The enrolment to show: one under way, or one that ended less than ENROL_OUTCOME_S ago."""
        if not isinstance(enrol, dict):
            return None
        key = (enrol.get("name"), enrol.get("track_id"), enrol.get("state"))
        if key != self._enrol_seen[0]:
            self._enrol_seen = (key, now)
        ended = enrol.get("state") in ("done", "failed")
        return enrol if not ended or now - self._enrol_seen[1] < ENROL_OUTCOME_S else None

    def _offer(self, t: dict[str, Any], faces: list[dict[str, Any]], now: float) -> int | None:
        """With an empty facebank: the face picked, or else the largest, once it has stayed in view a while (the
        offer names the face that e would enrol)."""
        if (t.get("facebank") or {}).get("people") != 0:
            return None
        steady = [f for f in faces if now - self._first_seen.get(f.get("track_id"), now) >= STEADY_S]
        if self._user_picked and any(f.get("track_id") == self.selected for f in faces):
            return self.selected
        if any(f.get("track_id") == self.selected for f in steady):
            return self.selected
        return max(steady, key=lambda f: f.get("size", 0))["track_id"] if steady else None

    def _on_engine_state(self, state: str) -> None:
        stale = state != "live"
        for widget in self.query("#figures, #faces"):
            widget.set_class(stale, "-stale")
        if stale:
            failed = state == "lost" and self._app.start_failed
            self.query_one("#preview", Preview).show_note("no picture (start failed)" if failed
                                                          else PREVIEW_NOTES.get(state, state))
        if state == "lost":  # one line, with the way out: the engine bar has the engine's own words
            self.query_one("#notice", Static).update(
                Text.assemble(("No picture. ", "bold"), "o: pick a video file or stream URL · r: retry"))
            self._forget_faces()
        if self._app.telemetry and self.is_current:
            self.query_one("#figures", Static).update(figures(self._app.telemetry, stale=stale), layout=False)

    def _on_limits(self, limits: dict[str, dict[str, Any]] | None) -> None:
        """Ranges, defaults and help from the engine; a setting it gives no range for gets no slider."""
        if limits is None:
            return
        for slider in self.query(Slider):
            lim = limits.get(slider.name or "") or {}
            lo, hi = lim.get("min"), lim.get("max")
            if lo is None or hi is None or not lo < hi:
                slider.display = False
                continue
            slider.set_range(float(lo), float(hi), slider.step)
            slider.default = lim.get("default")
            slider.help = str(lim.get("help") or "")
            slider.disabled = False
        # Values that came before their range were clamped to the placeholder range: take them again.
        self._sync_sliders(((self._app.telemetry or {}).get("settings")) or {})
        wanted, self._focus_when_ready = self._focus_when_ready, None
        if wanted is not None:
            getattr(self, f"action_{wanted}")()

    # --- preview ----------------------------------------------------------------------------------------------
    @work(thread=True, exclusive=True, group="preview", exit_on_error=False)
    def poll_preview(self) -> None:
        """A few small anonymized frames a second while this screen shows (the engine makes them while asked)."""
        worker = get_current_worker()
        while not worker.is_cancelled:
            if self._app.engine_state == "live":
                width = self._preview_width()
                # no frame yet, or the engine went: the telemetry worker reports that
                with suppress(ControlError, KeyError, ValueError):
                    reply = self._app.engine_link.request("preview", max_width=width)
                    self.post_message(PreviewFrame(*decode_preview(reply)))
            wait_cancellable(1.0 / PREVIEW_HZ)

    def _preview_width(self) -> int:
        """Half blocks: a pixel a column; terminal graphics: the engine's most, 640."""
        if self._app.graphics:
            return 640
        return max(32, min(640, self.query_one("#preview", Preview).content_size.width))

    def on_preview_frame(self, message: PreviewFrame) -> None:
        if self._app.engine_state == "live":
            self.query_one("#preview", Preview).show_bgr(message.width, message.height, message.bgr)

    # --- input ------------------------------------------------------------------------------------------------
    @on(Slider.Changed)
    def _slider_moved(self, event: Slider.Changed) -> None:
        if event.slider.name:
            low = self._low_confidence()
            change = with_floor(event.slider.name, event.value, low, self._low_lowered_from)
            if "low_confidence" in change and low is not None:
                if change["low_confidence"] < low and self._low_lowered_from is None:
                    self._low_lowered_from = low  # what it goes back up to
                elif change["low_confidence"] == self._low_lowered_from:
                    self._low_lowered_from = None
            self._app.send_settings(change)

    def _low_confidence(self) -> float | None:
        """The engine's low_confidence as last sent (not yet echoed) or reported; None from an engine without it."""
        sent = self._app.settings_sent.get("low_confidence")
        if sent is not None:
            return float(sent[0])
        low = ((self._app.telemetry or {}).get("settings") or {}).get("low_confidence")
        return None if low is None else float(low)

    @on(Slider.Focused)
    def _slider_focused(self, event: Slider.Focused) -> None:
        self._show_slider_help(event.slider)

    def _show_slider_help(self, s: Slider) -> None:
        """What the focused slider trades (the engine's words); the look-ahead's cost first: the line is cut."""
        default = f" · default {s.fmt.format(s.default)}" if s.default is not None else ""
        cost = (lookahead_cost(s.value, *self._rate)[1] + " · ", "bold") if s.name == LOOKAHEAD else ""
        done = lookahead_done(self._app.telemetry or {}) if s.name == LOOKAHEAD else ""
        self._done_shown = done
        line = Text.assemble((f"{s.label}: ", "bold"), cost, (f"{done} · " if done else ""), s.help or "",
                             (f" · {s.fmt.format(s.minimum)}–{s.fmt.format(s.maximum)}{default}", "dim"))
        self.query_one("#slider-help", Static).update(line)

    @on(DataTable.RowHighlighted, "#faces")
    def _row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        """Only the user's own moves pick a face: rows coming and going also move the highlight, and the
        selection must not drift to another person then."""
        if event.row_key.value is None or time.monotonic() > self._user_moved_until:
            return
        self._digits = ("", 0.0)  # picked by the user's move (arrows, a click), not by a number typed before
        self.selected, self._user_picked = int(event.row_key.value), True
        self._refresh_selection()

    @on(Preview.FaceClicked)
    def _face_clicked(self, event: Preview.FaceClicked) -> None:
        """The reverse of a row lighting its face: a click on a face in the preview picks its row."""
        if str(event.track_id) in self._shown:
            self._user_picked, self._digits = True, ("", 0.0)
            self._select(event.track_id)

    def on_click(self, event: events.Click) -> None:
        if isinstance(event.widget, DataTable):
            self._user_moved_until = time.monotonic() + USER_MOVE_S

    @on(DataTable.RowSelected, "#faces")
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_enrol()  # Enter on a face: "this is me"

    def _select(self, track_id: int) -> None:
        self.selected = track_id
        if str(track_id) in self._shown:
            self._keep_cursor_on_selected(self.query_one("#faces", DataTable))
        self._refresh_selection()

    def _refresh_selection(self) -> None:
        self.query_one("#preview", Preview).select(self.selected)

    def on_key(self, event: events.Key) -> None:
        """Digits pick a face by the number the table and the preview show (typing goes to fields first)."""
        if event.key in NAV_KEYS and isinstance(self.focused, DataTable):
            self._user_moved_until = time.monotonic() + USER_MOVE_S
            self._digits = ("", 0.0)  # a row picked with the arrows, not by the number typed before
        if not (event.character or "").isdigit() or isinstance(self.focused, Input):
            self._number_open = False  # any other key ends the number (`e` still acts on it: action_enrol)
            return
        event.stop()
        buffer, at = self._digits
        now = time.monotonic()
        buffer = (buffer if now - at < DIGITS_S and self._number_open else "") + event.character
        self._number_open = True
        self._digits = (buffer, now)
        if buffer in self._shown:
            self._user_picked = True
            self._select(int(buffer))

    def _cursor_track(self) -> int | None:
        table = self.query_one("#faces", DataTable)
        if not table.row_count:
            return None
        with suppress(Exception):  # no row under the cursor
            return int(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)
        return None

    def action_enrol(self) -> None:
        typed, at = self._digits
        if typed and time.monotonic() - at < TYPED_PICK_S:
            # A number just typed is the face meant: that face, or none. Never the row under the cursor or an
            # earlier pick instead (a walkthrough, stop 49: "162" typed, face #1616 kept visible; a review: a number
            # typed while its face was briefly lost, then back, enrolled the face picked before)
            if typed not in self._shown:
                self.notify(f"No face #{typed} in view: type a number the table shows, or pick a row with the arrows.",
                            timeout=4)
                return
            track: int | None = int(typed)
        else:
            track = self.selected if str(self.selected) in self._shown else self._cursor_track()
        if self._app.engine_state != "live":
            self.notify("No faces yet: the engine is not sending figures. Press e again once faces show.",
                        timeout=4)
            return
        if track is None or str(track) not in self._shown:
            self.notify("Pick a face first: arrow keys in the table, or type its number.", timeout=4)
            return

        def enrol(name: str | None) -> None:
            if name:
                self._app.send_command("enrol_track", name=name, track_id=track, seconds=ENROL_SECONDS)

        self.app.push_screen(EnrolScreen(track), enrol)

    def action_focus_sliders(self) -> None:
        sliders = [s for s in self.query(Slider) if s.focusable]
        if sliders:
            self.set_focus(sliders[0])  # at once: a → in the same burst is for the slider (Slider.action_move)
        else:
            self._wait_for_sliders("focus_sliders")

    def action_focus_lookahead(self) -> None:
        if self._lookahead().focusable:
            self.set_focus(self._lookahead())
        else:
            self._wait_for_sliders("focus_lookahead")

    def _wait_for_sliders(self, action: str) -> None:
        """Pressed before the engine sent the sliders' ranges (it is starting): done once they come."""
        self._focus_when_ready = action
        self.notify("The sliders take their ranges from the engine: they get the keys once it answers.",
                    timeout=4)

    def action_focus_faces(self) -> None:
        self.set_focus(self.query_one("#faces", DataTable))
