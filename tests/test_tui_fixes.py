"""Review fixes in the UI, driven headless (Textual's pilot) on an app fed fixed telemetry, or with no engine at
all: keys in one burst, confidence under low_confidence, the facebank with no engine, the recording line, Enter
in the form fields, the faces table after the engine is lost and in a small terminal, and names, paths, URLs and
engine errors with brackets shown as typed (never parsed as markup)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from textual import events
from textual.pilot import Pilot
from textual.widgets import DataTable, Input, Static
from textual.widgets._toast import Toast

import tui.screens.facebank as facebank_screen
from engine.client import EnginePaths
from engine.config import Settings, published_limits
from tests.helpers import until
from tests.test_tui_snapshots import LIMITS, TELEMETRY
from tui.app import BlurcastApp, make_app
from tui.facebank_link import ImageView, PersonView, saved_people
from tui.link import ControlError
from tui.messages import CommandFailed, EngineLost, EngineStartFailed, EngineStats
from tui.screens.facebank import FacebankScreen, PeopleLoaded
from tui.screens.live import with_floor
from tui.screens.output import CommandResult, OutputScreen
from tui.widgets import Slider


def detached(tmp_path: Path) -> BlurcastApp:
    return make_app(EnginePaths(tmp_path), start_engine=False, attach=False)


async def fed(pilot: Pilot, telemetry: dict = TELEMETRY, limits: dict = LIMITS) -> BlurcastApp:
    app = pilot.app
    app.limits = limits
    app.post_message(EngineStats(telemetry))
    await pilot.pause()
    return app


def values(app: BlurcastApp) -> dict[str, float]:
    return {s.name: s.value for s in app.screen.query(Slider)}


async def burst(pilot: Pilot, *keys: str) -> None:
    """Keys as a terminal sends them when typed fast (or over SSH): all queued before the first is handled.
    `pilot.press` waits for the app to go idle after each key, so it cannot show this."""
    for key in keys:
        pilot.app._driver.send_message(events.Key(key, None))
    await pilot.pause(0.2)


# --- 1. a burst of keys acts on the slider the focus moved to --------------------------------------------------
@pytest.mark.parametrize("send", ["burst", "press"])
def test_down_then_right_in_one_burst_changes_the_next_slider(tmp_path, send):
    async def scenario() -> None:
        async with detached(tmp_path).run_test(size=(160, 48)) as pilot:
            app = await fed(pilot)
            await pilot.press("s")
            app.screen.query_one("#margin", Slider).focus()
            await pilot.pause()
            before = values(app)
            await (burst(pilot, "down", "right") if send == "burst" else pilot.press("down", "right"))
            after = values(app)
            assert app.focused.name == "hold_seconds"
            assert after["margin"] == before["margin"], "the slider left behind is untouched"
            assert after["hold_seconds"] == pytest.approx(before["hold_seconds"] + 0.1)

    asyncio.run(scenario())


def test_s_arrows_and_changes_typed_ahead_land_where_the_focus_goes(tmp_path):
    """From the faces table: s, three ↓ (margin), →→, ↑ (strength), ← — all in one burst."""
    async def scenario() -> None:
        async with detached(tmp_path).run_test(size=(160, 48)) as pilot:
            app = await fed(pilot)
            before = values(app)
            await burst(pilot, "s", "down", "down", "down", "right", "right", "up", "left")
            changed = {k: v for k, v in values(app).items() if v != before[k]}
            assert changed == pytest.approx({"margin": before["margin"] + 0.1, "strength": before["strength"] - 0.05})
            assert app.focused.name == "strength"

    asyncio.run(scenario())


# --- 2. confidence reaches the engine's published minimum -------------------------------------------------------
def test_confidence_under_low_confidence_takes_it_down_in_the_same_set():
    assert with_floor("confidence", 0.15, 0.2) == {"confidence": 0.15, "low_confidence": 0.15}
    assert with_floor("confidence", 0.3, 0.2) == {"confidence": 0.3}, "never raised unless it lowered it"
    assert with_floor("confidence", 0.45, 0.1) == {"confidence": 0.45}, "a low_confidence set on purpose stays"
    assert with_floor("confidence", 0.1, 0.05, 0.2) == {"confidence": 0.1, "low_confidence": 0.1}, "back up with it"
    assert with_floor("confidence", 0.5, 0.05, 0.2) == {"confidence": 0.5, "low_confidence": 0.2}, "to where it was"
    assert with_floor("confidence", 0.15, None) == {"confidence": 0.15}, "an engine without it: as before"
    assert with_floor("margin", 0.05, 0.2) == {"margin": 0.05}


def test_the_confidence_slider_goes_down_to_the_published_minimum_and_the_engine_takes_it(tmp_path, monkeypatch):
    """Published limits (the engine's own table): confidence from 0.05. Every `set` the slider sends is one the
    engine's Settings accept: before, 0.15 was refused with 'low_confidence must be in (0, confidence]'."""
    limits = published_limits()
    low = limits["low_confidence"]["default"]
    assert limits["confidence"]["min"] < low, "the case this test is about: the minimum is under low_confidence"
    app = detached(tmp_path)
    sent: list[dict[str, Any]] = []
    monkeypatch.setattr(app, "send_settings", sent.append)
    engine = Settings(**{k: TELEMETRY["settings"][k] for k in ("confidence", "low_confidence")})

    async def scenario() -> None:
        nonlocal engine
        async with app.run_test(size=(160, 48)) as pilot:
            await fed(pilot, limits=limits)
            await pilot.press("s", "down")
            slider = app.screen.query_one("#confidence", Slider)
            assert app.focused is slider and slider.minimum == limits["confidence"]["min"]
            await pilot.press("home")
            assert slider.value == pytest.approx(limits["confidence"]["min"])
            assert sent[-1] == pytest.approx({"confidence": slider.value, "low_confidence": slider.value})
            for change in sent:
                engine = engine.updated(change)  # raises where the engine would refuse it
            app.post_message(EngineStats({**TELEMETRY, "settings": {**TELEMETRY["settings"], **engine.as_dict()}}))
            await pilot.pause()
            await pilot.press("right")
            assert sent[-1] == pytest.approx({"confidence": slider.value, "low_confidence": slider.value}), \
                "raising it takes low_confidence back up with it"
            await pilot.press("d")  # confidence's default: low_confidence back at its own (it has no slider)
            assert sent[-1] == pytest.approx({"confidence": limits["confidence"]["default"], "low_confidence": low})

    asyncio.run(scenario())


# --- 3. the facebank with no engine running ---------------------------------------------------------------------
def write_facebank(path: Path) -> None:
    """A facebank file as facebank.store writes it (TinyDB: one document per person)."""
    image = {"path": "/photos/lin.png", "sha256": "0" * 64, "face_px": 212.0, "sharpness": 930.0, "score": 0.97,
             "box": [1.0, 2.0, 3.0, 4.0], "image_size": [640, 480], "added": "2025-01-01T00:00:00+00:00",
             "model": "sface", "choose": None, "embedding": [0.0] * 128}
    path.write_text(json.dumps({"people": {"1": {"name": "Lin", "key": "lin", "images": [image],
                                                 "created": "2025-01-01T00:00:00+00:00"}}}))


def test_the_facebank_file_is_read_as_the_store_reads_it(tmp_path):
    from facebank.store import Facebank

    path = tmp_path / "facebank.json"
    write_facebank(path)
    assert [p.name for p in Facebank(path).people()] == ["Lin"], "the file is one the store reads"
    assert saved_people(path) == [PersonView("Lin", (ImageView("/photos/lin.png", 212.0, 930.0, 0.97, "?"),))]
    assert saved_people(tmp_path / "none.json") == [], "no file: nobody enrolled yet"
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError):
        saved_people(tmp_path / "bad.json")


@pytest.mark.parametrize("file", ["people", "damaged"])
def test_with_no_engine_the_facebank_screen_says_so_and_lists_the_file(tmp_path, file):
    """No engine on the socket: never "nobody yet" for a facebank with people; the way out (r) is said."""
    paths = EnginePaths(tmp_path)
    write_facebank(paths.facebank) if file == "people" else paths.facebank.write_text("{")
    app = make_app(paths, start_engine=False)  # attached: the telemetry worker finds no engine

    async def scenario() -> None:
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: app.engine_state == "lost", what="the engine to be found absent")
            await pilot.press("f")
            message = app.screen.query_one("#fb-message", Static)
            await until(pilot, lambda: "not running" in str(message.render()), what="the facebank screen's answer")
            table = app.screen.query_one("#people", DataTable)
            assert "press r to start it" in str(message.render())
            assert "nobody" not in str(table.border_subtitle)
            if file == "people":
                assert [str(c) for c in table.get_row_at(0)[:2]] == ["Lin", "1"]
                await pilot.press("n")  # a change with no engine: said not done, not dropped without a word
                app.screen.query_one("#enrol-name", Input).value = "Lin-Manuel"
                await pilot.press("enter")
                await until(pilot, lambda: "nothing was changed" in str(message.render()), what="the refusal")
                assert "rename needs the engine" in str(message.render())
                assert [str(c) for c in table.get_row_at(0)[:1]] == ["Lin"]
            else:
                assert table.row_count == 0 and "not known" in str(table.border_subtitle)
                assert "cannot read the facebank file" in str(message.render())

    asyncio.run(scenario())


# --- 4 and 5. the recording line ---------------------------------------------------------------------------------
def recording(path: str) -> dict[str, Any]:
    return {**TELEMETRY, "sinks": ["vcam", "file"],
            "outputs": [{"name": "vcam", "path": "/dev/video10"}, {"name": "file", "path": path}]}


def test_the_recording_line_names_the_file_the_engine_writes(tmp_path, monkeypatch):
    """Typed a.mp4; after a size change the engine writes a-1.mp4 (telemetry `outputs`): the line says a-1.mp4,
    and Stop says both files."""
    sent: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(OutputScreen, "command", lambda self, area, done, cmd, **args: sent.append((cmd, args)))
    typed, written = tmp_path / "a.mp4", tmp_path / "a-1.mp4"

    async def scenario() -> None:
        async with detached(tmp_path).run_test(size=(100, 30)) as pilot:
            app = await fed(pilot)
            await pilot.press("o")
            app.screen.query_one("#record-path", Input).value = str(typed)
            await pilot.click("#record-start")
            assert sent == [("sink_start", {"kind": "file", "path": str(typed)})]
            line = app.screen.query_one("#record-state", Static)
            app.post_message(EngineStats(recording(str(typed))))
            await pilot.pause()
            app.post_message(EngineStats(recording(str(written))))
            await pilot.pause()
            assert f"recording to {written}" in str(line.render())
            await pilot.click("#record-stop")
            app.post_message(EngineStats(TELEMETRY))
            await pilot.pause()
            assert f"last saved {typed}, {written}" in str(line.render())

    asyncio.run(scenario())


def test_enter_in_the_recording_path_says_how_to_record_until_the_field_changes(tmp_path):
    async def scenario() -> None:
        async with detached(tmp_path).run_test(size=(100, 30)) as pilot:
            app = await fed(pilot)
            await pilot.press("o")
            app.screen.query_one("#record-path", Input).focus()
            await pilot.press(*"a.mp4", "enter")
            line = app.screen.query_one("#record-state", Static)
            for _ in range(3):  # telemetry redraws the line ten times a second
                app.post_message(EngineStats(TELEMETRY))
                await pilot.pause(0.1)
            assert "press Record (or w, then y) to start recording" in str(line.render())
            await pilot.press("x")
            app.post_message(EngineStats(TELEMETRY))
            await pilot.pause()
            assert str(line.render()) == "○ not recording"

    asyncio.run(scenario())


def test_enter_in_the_face_number_field_enrols_with_it(tmp_path, monkeypatch):
    """A photo with two faces is refused with 'type its number in face#'; the number, then Enter there, enrols."""
    photo = tmp_path / "two.jpg"
    photo.write_bytes(b"not read by the UI")
    added: list[int | None] = []

    class TwoFaces:
        def __init__(self, link) -> None:
            pass

        def people(self) -> list[PersonView]:
            return []

        def add(self, name: str, paths: list[str], choose: int | None = None) -> tuple[int, str | None]:
            added.append(choose)
            if choose is None:
                raise ControlError("2 faces were found. Pick one with its number (--face N)")
            return len(paths), None  # new photos, as the engine counts them; none soft

    monkeypatch.setattr(facebank_screen, "FacebankLink", TwoFaces)

    async def scenario() -> None:
        async with detached(tmp_path).run_test(size=(80, 24)) as pilot:
            await fed(pilot)
            await pilot.press("f", "a", *"Lin", "enter")
            app = pilot.app
            app.screen.query_one("#paths", Input).value = str(photo)
            await pilot.press("enter")
            message = app.screen.query_one("#fb-message", Static)
            await until(pilot, lambda: "face#" in str(message.render()), what="the refusal")
            choose = app.screen.query_one("#choose", Input)
            choose.focus()
            await pilot.press("1")
            # Another photo: the number typed for this one is cleared (it would pick whoever is #1 in that one)
            app.screen.query_one("#paths", Input).value = str(tmp_path / "another.jpg")
            await pilot.pause()
            assert choose.value == "", "a face number outlived the photo it was typed for"
            app.screen.query_one("#paths", Input).value = str(photo)
            await pilot.pause()
            choose.focus()
            await pilot.press("1", "enter")
            await until(pilot, lambda: "Enrolled Lin" in str(message.render()), what="the enrolment")
            assert added == [None, 1]

    asyncio.run(scenario())


# --- 6. the faces table ------------------------------------------------------------------------------------------
def test_the_faces_table_is_emptied_when_the_engine_is_lost_and_stays_so(tmp_path):
    async def scenario() -> None:
        async with detached(tmp_path).run_test(size=(80, 24)) as pilot:
            app = await fed(pilot)
            table = app.screen.query_one("#faces", DataTable)
            await until(pilot, lambda: table.row_count == 3, what="the faces")
            app.post_message(EngineLost("the engine closed the telemetry stream"))
            await pilot.pause()
            assert table.row_count == 0 and "engine lost" in str(table.border_title)
            await pilot.press("f", "l")  # the screen shows the last telemetry again when it comes back
            await pilot.pause(0.3)
            assert table.row_count == 0, "no face of the lost engine is listed again, none as 'visible'"

    asyncio.run(scenario())


def test_a_short_terminal_still_shows_face_rows(tmp_path):
    """At 60x20 the table had 4 lines: borders, its header and a horizontal scrollbar, so no row."""
    async def scenario() -> None:
        async with detached(tmp_path).run_test(size=(60, 20)) as pilot:
            app = await fed(pilot)
            await pilot.pause(0.3)
            app.post_message(EngineStats({**TELEMETRY, "time": time.time()}))
            await pilot.pause(0.3)
            table = app.screen.query_one("#faces", DataTable)
            assert table.row_count == 3 and table.scrollable_content_region.height >= 2
            await pilot.resize_terminal(80, 24)
            assert table.show_header, "the header is back where there is room"

    asyncio.run(scenario())


def test_tab_completes_a_photo_path_on_the_facebank_screen(tmp_path):
    """README: Tab completes a path. On the facebank screen's photos field Tab moved focus instead (a newcomer
    audit): it now takes the completion shown, and moves on only when there is none."""
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "lin.png").write_bytes(b"")

    async def scenario() -> None:
        async with detached(tmp_path).run_test(size=(100, 30)) as pilot:
            app = await fed(pilot)
            await pilot.press("f")
            field = app.screen.query_one("#paths", Input)
            field.focus()
            field.value = f"{tmp_path}/pho"
            field.cursor_position = len(field.value)
            await until(pilot, lambda: field._suggestion == f"{photos}/", what="the folder suggested")
            await pilot.press("tab")
            assert field.value == f"{photos}/" and app.focused is field
            await until(pilot, lambda: field._suggestion == f"{photos}/lin.png", what="the photo suggested")
            await pilot.press("tab")
            assert field.value == f"{photos}/lin.png"
            await pilot.press("tab")
            assert app.focused is not field, "nothing left to complete: Tab moves on"

    asyncio.run(scenario())


# --- 7. names, paths, URLs and engine errors are text, never markup ----------------------------------------------
# A name like "x[/bold]" crashed a screen (MarkupError); "clip [final].mp4" or "rtmp://host/[live]/***" lost the
# bracketed part ("clip .mp4"): Textual reads a str given to Static, DataTable, notify or a border title as markup.
def on_screen(widget: Any) -> str:
    """What the widget draws, line by line (a DataTable's cells as the terminal shows them)."""
    return "\n".join(widget.render_line(y).text for y in range(widget.size.height))


def test_the_faces_table_and_enrol_notice_show_names_with_brackets_as_typed(tmp_path):
    faces = [{**TELEMETRY["faces"][0], "identity": "x[/bold]"},
             {**TELEMETRY["faces"][1], "candidate": {"name": "DJ [live]", "similarity": 0.45}}]
    telemetry = {**TELEMETRY, "faces": faces,
                 "enrolment": {"name": "Lin-Manuel [/]", "track_id": 3, "state": "gathering", "progress": 0.5}}

    async def scenario() -> None:
        async with detached(tmp_path).run_test(size=(100, 30)) as pilot:
            app = await fed(pilot, telemetry)
            table = app.screen.query_one("#faces", DataTable)
            await until(pilot, lambda: table.row_count == 2, what="the faces")
            await pilot.pause()
            shown = on_screen(table)
            assert "x[/bold]" in shown and "DJ [live]?" in shown
            assert "enrolling Lin-Manuel [/] from face #3" in str(app.screen.query_one("#notice", Static).render())

    asyncio.run(scenario())


def test_the_output_screen_shows_paths_and_urls_with_brackets_whole(tmp_path, monkeypatch):
    monkeypatch.setattr(OutputScreen, "command", lambda self, *args, **kwargs: None)
    clip, saved = tmp_path / "clip [final].mp4", tmp_path / "take [final].mp4"
    clip.write_bytes(b"")
    telemetry = {**TELEMETRY, "source": {**TELEMETRY["source"], "spec": str(clip)},
                 "sinks": ["file", "stream rtmp://host/[live]/***"],
                 "outputs": [{"name": "file", "path": str(saved)},
                             {"name": "stream rtmp://host/[live]/***", "path": "rtmp://host/[live]/***",
                              "state": "running", "sent": 10}]}

    async def scenario() -> None:
        async with detached(tmp_path).run_test(size=(120, 40)) as pilot:
            app = await fed(pilot, telemetry)
            await pilot.press("o")
            await pilot.pause()
            screen = app.screen
            assert "clip [final].mp4" in str(screen.query_one("#source-now", Static).render())
            assert f"recording to {saved}" in str(screen.query_one("#record-state", Static).render())
            table = screen.query_one("#outputs", DataTable)
            await until(pilot, lambda: table.row_count == 2, what="the outputs")
            await pilot.pause()
            shown = on_screen(table)
            assert "take [final].mp4" in shown and "rtmp://host/[live]/***" in shown

            screen.query_one("#stream-url", Input).value = "rtmp://host/[live]/key"
            await pilot.click("#stream-start")
            await pilot.pause()
            assert "to rtmp://host/[live]/***?" in str(app.screen.query_one("#question", Static).render())
            await pilot.press("n")

            spec = screen.query_one("#source-spec", Input)
            spec.value = str(clip)
            await pilot.click("#switch")
            await pilot.pause()
            assert f"switching to {clip}…" in str(screen.query_one("#source-msg", Static).render())
            screen.post_message(CommandResult("source", False, "cannot open x[/]: no such file"))
            await pilot.pause()
            assert str(screen.query_one("#source-msg", Static).render()) == "cannot open x[/]: no such file"

    asyncio.run(scenario())


def test_engine_errors_with_brackets_are_notified_as_they_come(tmp_path):
    errors = ["cannot open /videos/x[/]: no such file", "error: no camera [/dev/video0] (o: pick a file)",
              "the engine closed [b]the[/b] stream"]

    async def scenario() -> None:
        async with detached(tmp_path).run_test(size=(120, 40), notifications=True) as pilot:
            app = await fed(pilot)
            app.post_message(CommandFailed("source", errors[0]))
            app.post_message(EngineLost(errors[2]))  # the engine was live: it says so
            await pilot.pause()
            app.post_message(EngineStartFailed(errors[1]))
            await until(pilot, lambda: len(app.screen.query(Toast)) == 3, what="three notices")
            await pilot.pause()
            shown = " ".join(" ".join(on_screen(toast).split()) for toast in app.screen.query(Toast))  # unwrapped
            assert "cannot open /videos/x[/]: no" in shown
            assert "no camera [/dev/video0]" in shown
            assert "the engine closed [b]the[/b] stream" in shown

    asyncio.run(scenario())


async def people_listed(pilot: Pilot, *names: str) -> tuple[BlurcastApp, DataTable]:
    """The facebank screen listing `names` (its engine calls stubbed out by the caller), the list focused."""
    app = await fed(pilot)
    await pilot.press("f")
    app.screen.post_message(PeopleLoaded([PersonView(name, ()) for name in names]))
    table = app.screen.query_one("#people", DataTable)
    await until(pilot, lambda: table.row_count == len(names), what="the people")
    table.focus()
    return app, table


def test_the_facebank_dialogs_name_people_as_typed(tmp_path, monkeypatch):
    """rich.markup.escape keeps "x[/bold]" but still loses "DJ [Live]" (Textual's tags are not case-sensitive)."""
    monkeypatch.setattr(FacebankScreen, "run_facebank", lambda self, *args, **kwargs: None)

    async def scenario() -> None:
        async with detached(tmp_path).run_test(size=(100, 30)) as pilot:
            app, _ = await people_listed(pilot, "DJ [Live]")
            await pilot.press("n")
            await pilot.pause()
            assert "Rename DJ [Live]: their photos" in str(app.screen.query("Static").first().render())
            await pilot.press("escape")
            await pilot.press("d")
            await pilot.pause()
            assert "Remove DJ [Live] from" in str(app.screen.query_one("#question", Static).render())
            await pilot.press("n")

    asyncio.run(scenario())


def test_a_recording_that_stopped_for_good_says_why_on_the_output_screen_and_in_status(tmp_path, monkeypatch):
    """A recording that filled the disk hours into a stream was only missing from the outputs: "○ not recording"."""
    from tui.format import status_rows

    monkeypatch.setattr(OutputScreen, "command", lambda self, *args, **kwargs: None)
    why = "the disk is full (what was written is in /videos/rec.mp4)"
    telemetry = {**TELEMETRY, "sinks": ["vcam"], "outputs": [{"name": "vcam", "path": None}],
                 "stopped_outputs": {"file": why}}
    assert dict(status_rows(telemetry))["outputs"] == f"virtual camera; recording STOPPED: {why}"

    async def scenario() -> None:
        async with detached(tmp_path).run_test(size=(120, 40)) as pilot:
            app = await fed(pilot, telemetry)
            await pilot.press("o")
            await pilot.pause()
            assert str(app.screen.query_one("#record-state", Static).render()) == f"✗ the recording stopped: {why}"

    asyncio.run(scenario())


def test_a_number_typed_for_no_face_in_view_enrols_nobody_and_long_ids_show_whole(tmp_path):
    """Track ids pass 1,000 within minutes of a busy stream: the table showed '161' for #1616 (its id column was 3
    wide), the number typed then picked nothing, and `e` enrolled the row under the cursor instead (a walkthrough,
    stop 49). Ids show whole (6 digits: a day's busy stream), and `e` after a number no face in view has refuses and
    names it."""
    faces = [{**TELEMETRY["faces"][0], "track_id": 1616}, {**TELEMETRY["faces"][1], "track_id": 216170}]
    telemetry = {**TELEMETRY, "faces": faces}

    async def scenario() -> None:
        async with detached(tmp_path).run_test(size=(80, 24), notifications=True) as pilot:
            app = await fed(pilot, telemetry)
            table = app.screen.query_one("#faces", DataTable)
            await until(pilot, lambda: table.row_count == 2, what="the faces")
            drawn = on_screen(table)
            assert "1616" in drawn and "216170" in drawn, drawn
            await pilot.press("1", "6", "2", "e")
            await until(pilot, lambda: app.screen.query(Toast), what="the refusal")
            shown = " ".join(" ".join(on_screen(toast).split()) for toast in app.screen.query(Toast))
            assert "No face #162 in view" in shown, shown
            assert not app.screen.query("#enrol-name"), "a name dialog opened for the row under the cursor"
            # A number typed while its face is not in view, back before `e`: that face, not the one picked before
            from tui.screens.enrol import EnrolScreen

            app.engine_state = "live"
            app.screen.selected = 1616
            app.post_message(EngineStats({**telemetry, "faces": faces[:1]}))
            await pilot.pause()
            await pilot.press("2", "1", "6", "1", "7", "0")
            app.post_message(EngineStats(telemetry))
            await pilot.pause()
            await pilot.press("e")
            await until(pilot, lambda: isinstance(app.screen, EnrolScreen), what="the name dialog")
            assert app.screen.track_id == 216170, app.screen.track_id

    asyncio.run(scenario())


def test_end_and_home_move_the_row_cursor_of_the_people_list(tmp_path, monkeypatch):
    """End then d asked to remove the first person: DataTable's End goes to the last *column* (a walkthrough,
    stop 49). In a list of rows, End and Home pick the last and the first row."""
    monkeypatch.setattr(FacebankScreen, "run_facebank", lambda self, *args, **kwargs: None)

    async def scenario() -> None:
        async with detached(tmp_path).run_test(size=(100, 30)) as pilot:
            app, table = await people_listed(pilot, "Ada", "Bo", "Cy")
            await pilot.press("end")
            assert table.cursor_row == 2
            await pilot.press("d")
            await pilot.pause()
            assert "Remove Cy from" in str(app.screen.query_one("#question", Static).render())
            await pilot.press("n", "home")
            assert table.cursor_row == 0

    asyncio.run(scenario())


def test_w_asks_about_the_file_it_will_write_and_says_a_missing_folder_first(tmp_path, monkeypatch):
    """`w` asked "record to …-092710.mp4?" and wrote …-092713.mp4 (the empty field's time-stamped name was made
    again on yes); asked about a missing folder and only then said so; asked about an existing file without a word
    that it is kept (a walkthrough, stop 49)."""
    from tui.screens.confirm import ConfirmScreen

    sent: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(OutputScreen, "command", lambda self, area, done, cmd, **args: sent.append((cmd, args)))
    existing = tmp_path / "rec1.mkv"
    existing.write_bytes(b"an earlier recording")

    async def scenario() -> None:
        async with detached(tmp_path).run_test(size=(100, 30)) as pilot:
            app = await fed(pilot)
            await pilot.press("o")
            screen = app.screen
            field = screen.query_one("#record-path", Input)
            field.value = str(tmp_path / "nowhere" / "x.mp4")
            screen.action_toggle_record()
            await pilot.pause()
            assert not isinstance(app.screen, ConfirmScreen), "asked about a folder that does not exist"
            assert "No such folder" in str(screen.query_one("#record-state", Static).render())
            field.value = str(tmp_path)
            screen.action_toggle_record()
            await pilot.pause()
            assert not isinstance(app.screen, ConfirmScreen), "asked to record to a folder"
            assert "is a folder" in str(screen.query_one("#record-state", Static).render())
            field.value = str(existing)
            screen.action_toggle_record()
            await until(pilot, lambda: isinstance(app.screen, ConfirmScreen) and app.screen.query("#question"),
                        what="the question")
            question = " ".join(str(app.screen.query_one("#question", Static).render()).split())
            assert "it exists: it is kept" in question, question
            await pilot.press("n")
            field.value = ""
            screen.action_toggle_record()
            await until(pilot, lambda: isinstance(app.screen, ConfirmScreen) and app.screen.query("#question"),
                        what="the question")
            asked = "".join(str(app.screen.query_one("#question", Static).render()).split())
            await pilot.pause(1.1)  # the time-stamped name would be another one now
            await pilot.press("y")
            await until(pilot, lambda: sent, what="the recording to start")
            assert sent[0][1]["path"] in asked, (sent, asked)

    asyncio.run(scenario())
