"""The terminal UI driven headless (Textual's pilot) against a real engine process playing the dev clip."""

from __future__ import annotations

import asyncio
import contextlib
import glob
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
from textual.command import CommandPalette
from textual.widgets import Button, DataTable, HelpPanel, Input, Static

from engine.client import ControlClient, ControlError, EnginePaths, engine_running, start_background, stop_background
from engine.config import MIN_SIMILARITY, Settings
from tests.conftest import need_data
from tests.helpers import answer, live, request, ui, until, wait_for
from tui.app import make_app
from tui.messages import CommandFailed
from tui.screens.confirm import ConfirmScreen
from tui.widgets import Preview, Slider
from tui.widgets.preview import STATE_RGB

_SHIPPED = Settings()
DEFAULTS = {name: getattr(_SHIPPED, name) for name in ("similarity_threshold", "confidence", "strength", "margin",
                                                       "hold_seconds", "lookahead_frames", "panic", "paused")}


@pytest.fixture(scope="module")
def engine_paths(dev_clip, tmp_path_factory) -> EnginePaths:
    paths = EnginePaths(tmp_path_factory.mktemp("tui-engine"))
    start_background(engine_args(dev_clip), paths)
    yield paths
    stop_background(paths)


def engine_args(clip: Path) -> list[str]:
    return ["--source", str(clip), "--loop"]


@pytest.fixture
def engine(engine_paths, dev_clip) -> EnginePaths:
    """The module's engine, running (a test may have stopped it) and back on default settings afterwards."""
    if not engine_running(engine_paths):
        start_background(engine_args(dev_clip), engine_paths)
    wait_for(lambda: request(engine_paths, "status")["frames"] > 3, what="frames")
    yield engine_paths
    if engine_running(engine_paths):
        request(engine_paths, "set", settings=DEFAULTS)
        for name in ("file",):
            if name in request(engine_paths, "status")["sinks"]:  # stopping a sink that is not running is an error
                request(engine_paths, "sink_stop", name=name)


# --- live screen --------------------------------------------------------------------------------------------
def test_live_table_shows_faces_and_scores(engine, dev_clip, data_dir):
    """With the performer on the facebank (the engine enrols the photo), his row reads visible with his name and
    his score against the threshold; strangers' rows say why they are blurred and never show a non-candidate."""
    photo = data_dir / "recognition_face_recognition" / "examples" / "lin-manuel-miranda.png"
    need_data(photo)
    with ControlClient(engine.socket, timeout=60) as client:  # `paths` is facebank_add's own argument
        client.request("facebank_add", name="Lin", paths=[str(photo)], face=None)

    async def scenario() -> None:
        async with ui(engine, dev_clip).run_test() as pilot:
            app = await live(pilot)
            table = app.screen.query_one("#faces", DataTable)
            await until(pilot, lambda: table.row_count > 0, what="faces in the table")
            figures = str(app.screen.query_one("#figures", Static).render())
            assert "fps" in figures and "dropped" in figures and "source" in figures
            await until(pilot, lambda: app.screen.query_one(Preview).has_image, what="a preview frame")

            def rows() -> dict[str, list[str]]:
                return {k.value: [str(c) for c in table.get_row(k)] for k in table.rows}

            def visible_row() -> list[str] | None:
                return next((r for r in rows().values() if r[2] == "visible"), None)

            # The performer is off stage for seconds at a time in the clip: generous.
            row = await until(pilot, visible_row, timeout=40, what="the performer's visible row")
            threshold = app.telemetry["settings"]["similarity_threshold"]
            assert row[3].startswith("Lin ") and f"≥ {threshold:.2f} ✓" in row[3], row
            in_view = {str(f["track_id"]): f for f in app.telemetry["faces"] if not f["lost_frames"]}
            shown = rows()
            for key, cells in shown.items():
                face = in_view.get(key)
                if face is None or face["state"] == "visible":
                    continue
                assert cells[2].startswith("blurred: ") and len(cells[2]) > len("blurred: "), cells
                assert "✓" not in cells[3], f"a blurred face never reads as a match: {cells}"

    try:
        asyncio.run(scenario())
    finally:
        request(engine, "facebank_remove", name="Lin")


def test_threshold_slider_changes_the_engine_setting(engine, dev_clip):
    async def scenario() -> None:
        async with ui(engine, dev_clip).run_test() as pilot:
            app = await live(pilot)
            slider = app.screen.query_one("#similarity-threshold", Slider)
            await until(pilot, lambda: app.limits and not slider.disabled, what="the engine's limits")
            await until(pilot, lambda: slider.known and slider.value == pytest.approx(
                request(engine, "settings")["similarity_threshold"]), what="the slider to show the engine's value")
            await pilot.press("s")  # focuses the threshold slider
            assert app.focused is slider
            start = slider.value
            await pilot.press("right", "right")
            assert slider.value == pytest.approx(start + 0.02)
            await until(pilot, lambda: request(engine, "settings")["similarity_threshold"] == pytest.approx(
                start + 0.02), what="the engine to take the new threshold")
            await until(pilot, lambda: app.telemetry["settings"]["similarity_threshold"] == pytest.approx(
                start + 0.02), what="the telemetry to show it")
            await pilot.press("end")
            await until(pilot, lambda: request(engine, "settings")["similarity_threshold"] == 1.0, what="1.0")
            # A click on the bar's left end sets the minimum.
            await pilot.click(slider, offset=(11, 0))
            await until(pilot, lambda: request(engine, "settings")["similarity_threshold"] == MIN_SIMILARITY,
                        what="click")
            assert app.settings_delays, "the UI measured slider-to-telemetry delays"
            assert slider.value == MIN_SIMILARITY, "the slider was not pulled back by older telemetry"

    asyncio.run(scenario())


def test_panic_and_pause_keys(engine, dev_clip):
    async def scenario() -> None:
        async with ui(engine, dev_clip).run_test() as pilot:
            app = await live(pilot)
            await pilot.press("p")
            await until(pilot, lambda: request(engine, "status")["whole_frame"] == "panic", what="panic")
            await until(pilot, lambda: "PANIC" in str(app.screen.query_one("#engine-status", Static).render()),
                        what="the PANIC badge")
            before = request(engine, "status")
            frames, whole = before["frames"], before["whole_frames"]
            wait_for(lambda: request(engine, "status")["frames"] > frames + 5, what="more frames")
            t = request(engine, "status")
            assert t["whole_frames"] - whole == t["frames"] - frames, "every frame since panic was whole-blurred"
            await pilot.press("p")  # off puts faces back on air: asked first, and "n" keeps it on
            await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the panic-off question")
            await pilot.press("n")
            await pilot.pause(0.5)
            assert request(engine, "status")["whole_frame"] == "panic"
            await pilot.press("p", "y")
            await until(pilot, lambda: request(engine, "status")["whole_frame"] is None, what="panic off")
            await pilot.press("space")
            await until(pilot, lambda: request(engine, "settings")["paused"], what="pause")
            await until(pilot, lambda: "PAUSED" in str(app.screen.query_one("#engine-status", Static).render()),
                        what="the PAUSED badge")
            await pilot.press("space", "y")
            await until(pilot, lambda: not request(engine, "settings")["paused"], what="pause off")

    asyncio.run(scenario())


def test_quitting_the_ui_leaves_the_engine_running(engine, dev_clip):
    async def scenario() -> None:
        async with ui(engine, dev_clip).run_test() as pilot:
            await live(pilot)
            await pilot.press("q")

    asyncio.run(scenario())
    before = request(engine, "status")["frames"]
    wait_for(lambda: request(engine, "status")["frames"] > before + 10, what="frames after the UI quit")


def test_a_hung_engine_is_shown_stale_never_live(engine, dev_clip):
    pid = int(engine.pid.read_text())

    async def scenario() -> None:
        async with ui(engine, dev_clip).run_test() as pilot:
            app = await live(pilot)
            os.kill(pid, signal.SIGSTOP)  # alive but silent: no telemetry, no frames
            try:
                await until(pilot, lambda: app.engine_state == "stale", timeout=10, what="stale figures")
                assert app.screen.query_one("#figures").has_class("-stale")
                assert "STALE" in str(app.screen.query_one("#engine-status", Static).render())
                assert not app.screen.query_one(Preview).has_image
            finally:
                os.kill(pid, signal.SIGCONT)
            await until(pilot, lambda: app.engine_state == "live", what="live again")

    asyncio.run(scenario())


def test_engine_loss_is_shown_and_r_restarts_it(engine, dev_clip):
    messages: list[str] = []

    async def scenario() -> None:
        app = ui(engine, dev_clip)
        async with app.run_test(message_hook=lambda m: messages.append(type(m).__name__)) as pilot:
            await live(pilot)
            await until(pilot, lambda: app.screen.query_one(Preview).has_image, what="a preview frame")
            await asyncio.to_thread(stop_background, engine)
            await until(pilot, lambda: app.engine_state == "lost", what="the UI to notice")
            bar = str(app.screen.query_one("#engine-status", Static).render())
            assert "ENGINE LOST" in bar
            assert app.screen.query_one("#figures").has_class("-stale"), "old figures are greyed"
            assert "stale" in str(app.screen.query_one("#figures", Static).render())
            assert not app.screen.query_one(Preview).has_image, "no old picture shown as live"
            await pilot.press("r")
            await until(pilot, lambda: app.engine_state == "live" and "EngineStarted" in messages, timeout=90,
                        what="the restarted engine")
            assert not app.screen.query_one("#figures").has_class("-stale")

    asyncio.run(scenario())
    assert engine_running(engine)
    lifecycle = [m for m in messages if m.startswith("Engine")]
    lost, starting, started = (lifecycle.index(m) for m in ("EngineLost", "EngineStarting", "EngineStarted"))
    assert lifecycle[0] == "EngineStats" and lost < starting < started
    assert "EngineStats" not in lifecycle[lost:starting], "no figures while the engine is gone"
    assert "EngineStats" in lifecycle[starting:], "telemetry flows again after the restart"


def test_r_after_a_crash_restarts_the_engine_as_it_ran_not_as_the_ui_started(dev_clip, tmp_path):
    """A headless rig: `engine start --source CLIP --record rec.mp4`, then the UI (whose own start would read camera
    0). The engine is killed (-9); `r` brings it back on the same clip, recording again, beside the crashed
    recording and not over it."""
    paths = EnginePaths(tmp_path / "state")
    recording = tmp_path / "rec.mp4"
    pid = start_background(["--source", str(dev_clip), "--loop", "--record", str(recording)], paths)

    async def scenario() -> None:
        app = make_app(paths, source="0", start_engine=False)  # the UI's own start: camera 0, no recording
        async with app.run_test() as pilot:
            await live(pilot)
            await until(pilot, lambda: app.telemetry["frames"] > 10, what="frames recorded")
            os.kill(pid, signal.SIGKILL)
            await until(pilot, lambda: app.engine_state == "lost", what="the UI to notice")
            await until(pilot, lambda: not Path(f"/proc/{pid}").exists(), what="the killed engine reaped, no zombie")
            await pilot.press("r")
            await until(pilot, lambda: app.engine_state == "live" and app.telemetry.get("pid") not in (None, pid),
                        timeout=90, what="the restarted engine")
            assert app.telemetry["source"]["spec"] == str(dev_clip)
            await until(pilot, lambda: [o["path"] for o in app.telemetry["outputs"] if o["name"] == "file"]
                        == [str(tmp_path / "rec-1.mp4")], what="the recording again, in a new file")

    try:
        asyncio.run(scenario())
    finally:
        stop_background(paths)
    assert recording.stat().st_size > 0
    cap = cv2.VideoCapture(str(recording))
    assert cap.read()[0], "the crashed recording is still there and playable"


# --- source & output screen ----------------------------------------------------------------------------------
def test_recording_from_the_output_screen(engine, dev_clip, tmp_path):
    target = tmp_path / "recorded.mp4"

    async def scenario() -> None:
        async with ui(engine, dev_clip).run_test() as pilot:
            app = await live(pilot)
            await pilot.press("o")
            record_path = app.screen.query_one("#record-path", Input)
            record_path.value = str(target)
            await pilot.press("w")  # starting a recording asks first
            assert str(target) in await answer(pilot, "y")
            await until(pilot, lambda: "file" in app.telemetry["sinks"], what="the file sink")
            frames = app.telemetry["frames"]
            await until(pilot, lambda: app.telemetry["frames"] > frames + 15, what="frames recorded")
            await pilot.press("w")
            await until(pilot, lambda: "file" not in app.telemetry["sinks"], what="the sink to stop")

    asyncio.run(scenario())
    # The engine finishes the file (and muxes the audio) after the sink leaves the telemetry.
    assert wait_for(lambda: count_frames(target) >= 10, what="a finished recording")


def count_frames(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    count = 0
    while cap.read()[0]:
        count += 1
    cap.release()
    return count


def test_output_screen_shows_engine_errors_in_place(engine, dev_clip):
    async def scenario() -> None:
        async with ui(engine, dev_clip).run_test() as pilot:
            app = await live(pilot)
            await pilot.press("o")
            screen = app.screen
            if not glob.glob("/dev/video*"):
                await pilot.press("v")
                msg = screen.query_one("#vcam-msg", Static)
                await until(pilot, lambda: msg.has_class("error"), what="the vcam error")
                assert "v4l2loopback" in str(msg.render())
            await pilot.click("#kind-file")
            spec = screen.query_one("#source-spec", Input)
            spec.value = "/no/such/video.mp4"
            await pilot.click("#switch")
            source_msg = screen.query_one("#source-msg", Static)
            assert source_msg.has_class("error") and "No such video file" in str(source_msg.render())
            spec.value = str(dev_clip)
            spec.focus()
            await pilot.press("enter", "y")  # Enter in the field switches what goes on air: asked first
            await until(pilot, lambda: "Now reading" in str(source_msg.render()), what="the source switch")

    asyncio.run(scenario())


# --- facebank: every change is done by the engine, through the control API -----------------------------------
def test_enrolling_on_the_facebank_screen_unblurs_the_performer(engine, dev_clip, data_dir):
    photo = data_dir / "recognition_face_recognition" / "examples" / "lin-manuel-miranda.png"
    need_data(photo)

    async def scenario() -> None:
        async with ui(engine, dev_clip).run_test() as pilot:
            app = await live(pilot)
            await pilot.press("f", "a", *"Lin", "enter")  # name, then Enter moves to the photo paths
            app.screen.query_one("#paths", Input).value = str(photo)
            await pilot.press("enter")
            message = app.screen.query_one("#fb-message", Static)
            await until(pilot, lambda: "Enrolled" in str(message.render()) or message.has_class("error"),
                        timeout=120, what="the enrolment")
            assert not message.has_class("error"), str(message.render())
            enrolled = time.monotonic()
            # The engine enrols and reloads before the UI says "Enrolled"; the telemetry shows it took it.
            await until(pilot, lambda: app.telemetry.get("facebank", {}).get("people") == 1, timeout=5,
                        what="the engine to load the new facebank")
            loaded = time.monotonic() - enrolled
            # When the performer shows depends on the clip (he is off screen for seconds at a time), not on us.
            await until(pilot, lambda: any(f["state"] == "visible" for f in app.telemetry["faces"]), timeout=20,
                        what="the performer to become visible")
            print(f"facebank in the engine {loaded:.2f} s, performer visible {time.monotonic() - enrolled:.2f} s "
                  "after the enrolment was saved")
            assert "Lin" in [k.value for k in app.screen.query_one("#people", DataTable).rows]
            # The live table shows who matched and the score against the threshold.
            await pilot.press("l")
            table = app.screen.query_one("#faces", DataTable)

            def visible_row() -> list[str] | None:
                rows = [[str(c) for c in table.get_row(k)] for k in table.rows]
                return next((r for r in rows if r[2] == "visible"), None)

            row = await until(pilot, visible_row, what="a visible face in the table")
            await until(pilot, lambda: "facebank in use: 1 person" in str(table.border_title),
                        what="the live screen to show the engine's facebank")
            threshold = app.telemetry["settings"]["similarity_threshold"]
            assert row[3].startswith("Lin ") and f"≥ {threshold:.2f} ✓" in row[3], row  # name and score, one cell
            # Threshold 0.99 (above any real match): every face is blurred again.
            await pilot.press("s", "end", "left")
            await until(pilot, lambda: app.telemetry["settings"]["similarity_threshold"] == 0.99, what="threshold")
            await until(pilot, lambda: all(f["state"] == "blurred" for f in app.telemetry["faces"]),
                        what="all faces blurred")

    try:
        asyncio.run(scenario())
    finally:
        with contextlib.suppress(ControlError):
            request(engine, "facebank_remove", name="Lin")


def test_facebank_screen_enrols_refuses_and_removes_in_the_engine(engine, dev_clip, tmp_path, data_dir):
    """The screen against the real engine's facebank at 80x24 (errors in place, whole, in plain words)."""
    photo = data_dir / "recognition_face_recognition" / "examples" / "lin-manuel-miranda.png"
    two = photo.with_name("two_people.jpg")
    need_data(photo, two)
    blank = tmp_path / "wall.png"
    cv2.imwrite(str(blank), np.full((240, 320, 3), 128, np.uint8))

    async def scenario() -> None:
        async with ui(engine, dev_clip).run_test() as pilot:
            app = await live(pilot)
            await pilot.press("f", "a", *"Lin", "enter")
            screen = app.screen
            message = screen.query_one("#fb-message", Static)
            screen.query_one("#paths", Input).value = str(blank)
            await pilot.press("enter")
            await until(pilot, lambda: message.has_class("error"), timeout=120, what="the refusal")
            assert "no face was found" in str(message.render())
            screen.query_one("#paths", Input).value = str(two)
            await pilot.press("enter")
            await until(pilot, lambda: "2 faces" in str(message.render()), timeout=120, what="the two faces")
            said = str(message.render())
            assert "face#" in said and "--face" not in said, "the field to type in, not the CLI's option"
            lines = textwrap.wrap(said, message.content_size.width)
            assert len(lines) <= message.content_size.height, f"cut at 80x24: {lines}"
            screen.query_one("#paths", Input).value = str(photo)
            await pilot.press("enter")
            await until(pilot, lambda: "Enrolled Lin" in str(message.render()), timeout=120, what="the enrolment")
            people = screen.query_one("#people", DataTable)
            assert [k.value for k in people.rows] == ["Lin"]
            image_row = [str(c) for c in screen.query_one("#images", DataTable).get_row_at(0)]
            assert image_row[0].endswith("lin-manuel-miranda.png") and "px" in image_row[1]
            await pilot.press("n")  # rename: brackets are a name's text, never markup
            app.screen.query_one("#enrol-name", Input).value = "Lin-Manuel [/]"
            await pilot.press("enter")
            await until(pilot, lambda: [k.value for k in people.rows] == ["Lin-Manuel [/]"], timeout=60,
                        what="the rename")
            assert str(message.render()) == "Renamed Lin to Lin-Manuel [/]."
            assert request(engine, "facebank_list")["people"][0]["photos"] == 1, "the photo stays with the new name"
            await pilot.press("d")
            assert "Remove Lin-Manuel [/] from" in str(app.screen.query_one("#question", Static).render())
            await pilot.press("y")
            await until(pilot, lambda: people.row_count == 0, what="the removal")
            assert "Removed Lin-Manuel [/]" in str(message.render())

    try:
        asyncio.run(scenario())
    finally:
        for name in ("Lin", "Lin-Manuel [/]"):
            with contextlib.suppress(ControlError):
                request(engine, "facebank_remove", name=name)


# --- keys that cannot misfire --------------------------------------------------------------------------------
KEYBOARD = [*(chr(c) for c in range(33, 127)), "space", "backspace", "delete", "left", "right", "home", "end",
            "up", "down", "pageup", "pagedown", "escape_not_sent"]
KEYBOARD.remove("escape_not_sent")  # escape leaves a field by design; everything else must stay in it


def engine_outputs(paths: EnginePaths) -> tuple[bool, bool, bool, str]:
    t = request(paths, "status")
    return t["settings"]["panic"], t["settings"]["paused"], "file" in t["sinks"], t["source"]["spec"]


def test_typing_the_whole_keyboard_into_each_field_changes_nothing_on_air(engine, dev_clip):
    """Every printable key, then Enter, into every text field of every screen: panic, pause, recording and
    source stay as they were, and the screen stays put (l, f, o, p, q, w, r, space, ... are text there)."""
    before = engine_outputs(engine)
    checked: list[str] = []

    async def scenario() -> None:
        async with ui(engine, dev_clip).run_test(size=(120, 40)) as pilot:
            app = await live(pilot)
            for mode in ("live", "output", "facebank"):
                app.action_show(mode)
                await pilot.pause()
                fields = [f for f in app.screen.query(Input) if f.display]
                for field in fields:
                    field.focus()
                    await pilot.press(*KEYBOARD)
                    assert app.screen.focused is field and app.current_mode == mode
                    # a number field keeps only the characters it allows; others take all 94 characters
                    assert len(field.value) >= (10 if field.type in ("integer", "number") else 90), \
                        f"#{field.id}: {field.value}"
                    await pilot.press("enter")  # a field's Enter never starts anything without a yes
                    if isinstance(app.screen, ConfirmScreen):
                        await pilot.press("n")
                    assert app.current_mode == mode
                    field.value = ""
                    checked.append(f"{mode}#{field.id}")
            # the enrol dialog's name field (it opens on a picked face)
            app.action_show("live")
            table = app.screen.query_one("#faces", DataTable)
            await until(pilot, lambda: table.row_count > 0, what="a face to pick")
            table.focus()
            await pilot.press("e")
            await until(pilot, lambda: app.screen.query("#enrol-name"), what="the enrol dialog")
            await pilot.press(*KEYBOARD)
            assert len(app.screen.query_one("#enrol-name", Input).value) >= 90
            await pilot.press("escape")
            checked.append("enrol#enrol-name")
            await pilot.pause(1.0)
            assert request(engine, "status").get("enrolment") is None, "no enrolment was sent"

    asyncio.run(scenario())
    assert len(checked) >= 4, checked
    assert engine_outputs(engine) == before, f"typing into {checked} changed what goes on air"


def test_ctrl_p_is_the_command_palette_not_panic(engine, dev_clip):
    async def scenario() -> None:
        async with ui(engine, dev_clip).run_test() as pilot:
            app = await live(pilot)
            await pilot.press("o")
            app.screen.query_one("#record-path", Input).focus()
            await pilot.press("ctrl+p")
            await until(pilot, lambda: CommandPalette.is_open(app), what="the command palette")
            assert not request(engine, "settings")["panic"]
            await pilot.press(*"Panic")
            await pilot.pause(0.5)
            await pilot.press("enter")
            await until(pilot, lambda: request(engine, "settings")["panic"], what="panic from the palette")
            await pilot.press("escape", "question_mark")  # out of the field first: there, ? is text
            await until(pilot, lambda: app.screen.query(HelpPanel), what="the keys panel")

    asyncio.run(scenario())


# --- always a way out ----------------------------------------------------------------------------------------
def test_no_camera_says_so_in_one_line_and_a_file_can_be_picked_without_restart(dev_clip, tmp_path):
    paths = EnginePaths(tmp_path / "home")
    app = make_app(paths, source="97", engine_args=["--source", "97"])  # no camera 97 on any rig

    async def scenario() -> None:
        async with app.run_test() as pilot:
            await until(pilot, lambda: app.engine_state == "lost", timeout=90, what="the failed start")
            bar = str(app.screen.query_one("#engine-status", Static).render())
            assert "camera 97" in bar and "o: pick a video file" in bar, bar
            assert "\n" not in app.engine_reason and "[ERROR" not in app.engine_reason and "global" not in bar
            assert "o: pick a video file" in str(app.screen.query_one("#notice", Static).render())
            await pilot.press("o")
            await pilot.click("#kind-file")
            app.screen.query_one("#source-spec", Input).value = str(dev_clip)
            switch = app.screen.query_one("#switch", Button)
            assert not switch.disabled, "Switch works while the engine is lost"
            await pilot.click("#switch")
            await until(pilot, lambda: app.engine_state == "live", timeout=90, what="an engine on the file")
            assert app.telemetry["source"]["spec"] == str(dev_clip)

    try:
        asyncio.run(scenario())
    finally:
        stop_background(paths)


def test_keys_pressed_while_the_engine_starts_are_not_lost(dev_clip, tmp_path, monkeypatch):
    """The first keys after launch come while the engine loads its models: p is a panic done as soon as it
    answers (it was greyed and dropped), s focuses the sliders once their ranges come (it did nothing).

    The engine process is made to start 3 s late, as on a slow rig: once it stopped importing `onnx` it started
    fast enough here to answer before the keys, and the test then checked nothing (it said so and failed)."""
    slow_start = tmp_path / "slow-start"
    slow_start.mkdir()
    (slow_start / "sitecustomize.py").write_text("import time\ntime.sleep(3.0)\n")  # runs as the engine starts
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(slow_start), os.environ.get("PYTHONPATH")) if p))
    paths = EnginePaths(tmp_path / "home")
    app = make_app(paths, source=str(dev_clip))

    async def scenario() -> None:
        async with app.run_test() as pilot:
            await until(pilot, lambda: app.engine_state == "starting", what="the engine start")
            await pilot.press("p", "s")
            assert app.engine_state == "starting", "the keys were pressed before the engine answered"
            await until(pilot, lambda: app.engine_state == "live", timeout=90, what="the engine")
            await until(pilot, lambda: request(paths, "settings")["panic"], what="the panic asked at start")
            await until(pilot, lambda: isinstance(app.focused, Slider), what="the sliders to take the keys")
            assert app.focused.id == "similarity-threshold"

    try:
        asyncio.run(scenario())
    finally:
        stop_background(paths)


def test_the_first_keys_reach_the_screen_not_a_hidden_button(engine, dev_clip):
    """At launch the only focused widget was the engine bar's hidden Restart button: Enter on the face under the
    cursor (this is me) and the arrows did nothing until s or t was pressed. On the output screen, a field left
    with escape gave the focus to the source kinds, where space picked a kind instead of pausing."""
    from tui.screens.enrol import EnrolScreen

    async def scenario() -> None:
        async with ui(engine, dev_clip).run_test() as pilot:
            app = await live(pilot)
            table = app.screen.query_one("#faces", DataTable)
            await until(pilot, lambda: table.row_count > 0, what="faces in the table")
            await pilot.press("enter")
            await until(pilot, lambda: isinstance(app.screen, EnrolScreen), what="Enter: this is me")
            await pilot.press("escape", "o", "s", "escape")
            kind = app.screen.query_one("#source-kind").pressed_button
            await pilot.press("space")
            await until(pilot, lambda: request(engine, "settings")["paused"], what="space to pause")
            assert app.screen.query_one("#source-kind").pressed_button is kind, "space picked no source kind"

    asyncio.run(scenario())


def test_source_given_against_a_running_engine_asks_and_never_ignores(engine, dev_clip, data_dir):
    other = data_dir / "video_unannotated" / "head_motion_d0.mp4"
    need_data(other)

    async def answer(key: str) -> None:
        async with ui(engine, dev_clip, requested_source=str(other)).run_test() as pilot:
            app = await live(pilot)
            await until(pilot, lambda: isinstance(app.screen, ConfirmScreen) and app.screen.query("#question"),
                        what="the question")
            question = str(app.screen.query_one("#question", Static).render())
            assert str(dev_clip) in question and str(other) in question
            await pilot.press(key)
            if key == "y":
                await until(pilot, lambda: request(engine, "status")["source"]["spec"] == str(other),
                            what="the switch")
            else:
                await pilot.pause(1.0)

    try:
        asyncio.run(answer("n"))
        assert request(engine, "status")["source"]["spec"] == str(dev_clip), "'n' keeps the engine's source"
        asyncio.run(answer("y"))
    finally:
        request(engine, "source", spec=str(dev_clip), loop=True)


# --- "this is me" --------------------------------------------------------------------------------------------
def test_this_is_me_enrols_the_picked_face_and_keeps_it_visible(engine, dev_clip):
    """The done-when of issue 10, headless: with an empty facebank the UI offers the largest steady face; e and
    a name enrol it from the live picture; within 5 s of the enrolment it is visible, stays so while in view,
    and the preview outlines it in the visible colour with its id."""
    assert request(engine, "facebank_list")["people"] == [], "the test starts with an empty facebank"

    async def scenario() -> None:
        failures: list[str] = []

        def hook(message: object) -> None:
            if isinstance(message, CommandFailed):
                failures.append(message.error)

        async with ui(engine, dev_clip).run_test(size=(80, 24), message_hook=hook) as pilot:
            app = await live(pilot)
            notice = app.screen.query_one("#notice", Static)
            # The clip cuts between shots: a face may leave before its 3 s are gathered, or be too small. The UI
            # says so and the user tries again on the next offer, as a streamer would.
            for _attempt in range(6):
                await until(pilot, lambda: "Is #" in str(notice.render()), what="the enrol offer")
                track = app.screen.selected
                assert track is not None and f"#{track}" in str(notice.render())
                await pilot.press("e")
                try:
                    await until(pilot, lambda: app.screen.query("#enrol-name"), timeout=5, what="the name dialog")
                except AssertionError:  # the face left before the key: the UI said "pick a face first"
                    continue
                failures.clear()
                before = app.telemetry.get("enrolment")  # a failed attempt's outcome stays until the next one
                await pilot.press(*"Lin", "enter")

                def outcome(track: int = track, before: dict | None = before) -> dict | str | None:
                    e = app.telemetry.get("enrolment") or {}
                    if e != before and e.get("track_id") == track and e.get("state") in ("done", "failed"):
                        return e
                    return failures[0] if failures else None

                enrol = await until(pilot, outcome, timeout=30, what="the enrolment")
                if isinstance(enrol, str):  # refused at once: the face went between the offer and the key
                    assert "not in the picture" in enrol, enrol
                    continue
                if enrol["state"] == "done":
                    break
                assert enrol["message"], "a failed enrolment says why"  # left the picture, too few clear frames
                await until(pilot, lambda: "failed" in str(notice.render()), what="the failure on screen")
            assert isinstance(enrol, dict) and enrol["state"] == "done", enrol
            assert f"{enrol['name']} is on the facebank" in str(notice.render())
            done = time.monotonic()
            assert any(p["name"] == "Lin" for p in request(engine, "facebank_list")["people"])

            def visible() -> dict | None:  # he, on this track or (after a cut) on a new one
                return next((f for f in app.telemetry["faces"] if f["state"] == "visible"
                             and (f["track_id"] == track or f["identity"] == "Lin")), None)

            try:
                face = await until(pilot, visible, timeout=5, what="the enrolled face to turn visible")
            except AssertionError:
                raise AssertionError(f"not visible 5 s after the enrolment; faces: {app.telemetry['faces']}") from None
            print(f"visible {time.monotonic() - done:.2f} s after the enrolment was done")
            track = face["track_id"]
            # It stays visible while it is in view, most of the time: fail closed, a sign that another face may
            # have come under his id (a new look: his face patch changes more between two detected frames while
            # the engine, beside this UI on 2 cores, coasts) blurs him until a fresh embedding vouches for him.
            # Measured on this test's samples beside a busy process: 87-96 % shown (67-87 % before stop 25 sent a
            # fresh crop at once after such a sign; docs/measurements.md, stop 25). So 30 samples in view, not a
            # handful, and 0.7 of them shown.
            # The clip cuts between shots and the tracker keeps ids by place, so after a cut his track id may hold
            # someone else (their embeddings wiped: identity None), rightly blurred: then follow him, not the id.
            seen: list[dict] = []
            following: int | None = track
            ends = time.monotonic() + 10
            while len(seen) < 30 and time.monotonic() < ends:
                await pilot.pause(0.1)
                face = next((f for f in app.telemetry["faces"] if f["track_id"] == following), None)
                if face is None or face["identity"] is None:  # his track ended, or holds someone else now
                    following, face = None, None
                if following is None and (face := visible()) is not None:
                    following = face["track_id"]
                if face and not face["lost_frames"]:
                    seen.append(face)
            shown = sum(f["state"] == "visible" for f in seen)
            why = Counter(f["reason"] for f in seen if f["state"] != "visible")
            coasted = request(engine, "status").get("coasted_frames")
            print(f"shown in {shown} of {len(seen)} samples in view, blurred: {dict(why)}, {coasted} coasted")
            assert len(seen) >= 10 and shown >= 0.7 * len(seen), (
                f"visible in {shown} of {len(seen)} samples in view (enrolled track {enrol.get('track_id')}; "
                f"blurred: {dict(why)}; engine: {coasted} frames coasted): {seen[-1:]}")
            preview = app.screen.query_one(Preview)
            await until(pilot, lambda: preview.has_image, what="a preview frame")
            # The preview outlines him in the visible colour, with his id: the faces the UI handed the widget, in a
            # moment he is shown, drawn into its own picture.
            him = await until(pilot, lambda: next((f for f in preview._faces if f["state"] == "visible"
                                                   and f["identity"] == "Lin"), None), what="him in the preview")
            drawn, boxes = preview.annotated(preview._image)
            box = next(b for b in boxes if b.track_id == him["track_id"])
            edge = np.concatenate([drawn[box.y1, box.x1:box.x2 + 1], drawn[box.y2, box.x1:box.x2 + 1]])
            assert box.rgb == STATE_RGB["visible"]
            assert np.mean(np.all(edge == STATE_RGB["visible"], axis=1)) > 0.5, "his outline is not drawn green"

    try:
        asyncio.run(scenario())
    finally:
        with contextlib.suppress(ControlError):
            request(engine, "facebank_remove", name="Lin")


# --- sliders and status --------------------------------------------------------------------------------------
def test_sliders_take_ranges_and_defaults_from_the_engine(engine, dev_clip):
    limits = request(engine, "limits")

    async def scenario() -> None:
        async with ui(engine, dev_clip).run_test() as pilot:
            app = await live(pilot)
            await until(pilot, lambda: app.limits, what="the limits")
            for slider in app.screen.query(Slider):
                lim = limits[slider.name]
                assert (slider.minimum, slider.maximum, slider.default) == (lim["min"], lim["max"], lim["default"])
                assert slider.help == lim["help"] and slider.help
            await pilot.press("s")
            help_line = app.screen.query_one("#slider-help", Static)
            assert limits["similarity_threshold"]["help"] in str(help_line.render())
            await pilot.press("down")
            confidence = app.screen.query_one("#confidence", Slider)
            assert app.focused is confidence
            await pilot.press("right", "right")
            await until(pilot, lambda: request(engine, "settings")["confidence"] != lim_default("confidence"),
                        what="the change")
            await pilot.press("d")
            await until(pilot, lambda: request(engine, "settings")["confidence"] == lim_default("confidence"),
                        what="the reset to the default")

    def lim_default(name: str) -> float:
        return limits[name]["default"]

    asyncio.run(scenario())


def test_lookahead_slider_sets_the_engine_and_shows_its_cost(engine, dev_clip):
    """a: the look-ahead slider (range and default from the engine); → holds a frame more in the engine, and the
    slider and its help say the delay that costs at the rate the engine processes; the engine's OBS sync offset
    grows with it."""
    limits = request(engine, "limits")["lookahead_frames"]

    async def scenario() -> None:
        async with ui(engine, dev_clip).run_test() as pilot:
            app = await live(pilot)
            slider = app.screen.query_one("#lookahead-frames", Slider)
            await until(pilot, lambda: app.limits and not slider.disabled, what="the engine's limits")
            assert (slider.minimum, slider.maximum, slider.default) == (limits["min"], limits["max"], limits["default"])
            await pilot.press("a")
            assert app.focused is slider
            await pilot.press("right", "right", "right")
            await until(pilot, lambda: request(engine, "settings")["lookahead_frames"] == 3,
                        what="the engine to hold 3")
            cost = 3000 / app.telemetry["fps"]  # the dev clip processed at ~30 fps: ~100 ms
            shown = slider.shown()
            assert shown.startswith("3 +") and shown in str(slider.render())
            assert abs(float(shown.removeprefix("3 +").removesuffix("ms")) - cost) <= 0.05 * cost, (shown, cost)
            assert "ms at" in str(app.screen.query_one("#slider-help", Static).render())
            # ... and, while it holds frames, what they did so far: the engine's counts, as telemetry gives them
            await until(pilot, lambda: app.telemetry.get("lookahead_frames") == 3
                        and f"so far {app.telemetry.get('backfilled', 0)} hidden late"
                        in str(app.screen.query_one("#slider-help", Static).render()),
                        what="the look-ahead's counts on its help line")
            await until(pilot, lambda: app.telemetry.get("lookahead_frames") == 3
                        and (app.telemetry.get("obs_sync_offset_ms") or 0) >= 0.8 * cost, timeout=20,
                        what="the held frames in the OBS sync offset")

    asyncio.run(scenario())


def test_engine_status_says_it_in_words(engine):
    env = {**os.environ, "BLURCAST_HOME": str(engine.root)}
    cmd = [sys.executable, "-m", "blurcast", "engine", "status"]
    request(engine, "panic", on=True)
    try:
        text = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, check=True).stdout
        as_json = json.loads(subprocess.run([*cmd, "--json"], env=env, capture_output=True, text=True, timeout=60,
                                            check=True).stdout)
    finally:
        request(engine, "panic", on=False)
    for word in ("PANIC", "source", "outputs", "facebank", "fps", "latency", "faults"):
        assert word in text, f"{word} missing from:\n{text}"
    assert as_json["settings"]["panic"] is True and "pid" in as_json and "outputs" in as_json
    assert str(as_json["pid"]) in text
