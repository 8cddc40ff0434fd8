"""The terminal UI driven headless (Textual's pilot) against a real engine process playing the dev clip."""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable, Input, Static

from engine.client import ControlClient, ControlError, EnginePaths, engine_running, start_background, stop_background
from engine.config import Settings
from tests.conftest import need_data
from tests.helpers import wait_for
from tui.app import BlurcastApp, make_app
from tui.widgets import Preview, Slider

_SHIPPED = Settings()
DEFAULTS = {name: getattr(_SHIPPED, name) for name in ("similarity_threshold", "confidence", "strength", "margin",
                                                       "hold_seconds", "panic", "paused")}


def request(paths: EnginePaths, cmd: str, **args):
    with ControlClient(paths.socket) as client:
        return client.request(cmd, **args)


async def until(pilot: Pilot, predicate: Callable[[], object], timeout: float = 30.0, what: str = "condition"):
    """Let the app run until `predicate()` holds (generous: the test machine has 2 busy cores)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        await pilot.pause(0.05)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


async def live(pilot: Pilot) -> BlurcastApp:
    app = pilot.app
    await until(pilot, lambda: app.engine_state == "live" and app.telemetry, what="the UI to attach")
    return app


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


def ui(engine: EnginePaths, dev_clip: Path, **kwargs) -> BlurcastApp:
    return make_app(engine, source=str(dev_clip), start_engine=False, engine_args=engine_args(dev_clip), **kwargs)


# --- live screen --------------------------------------------------------------------------------------------
def test_live_table_shows_faces_and_scores(engine, dev_clip):
    async def scenario() -> None:
        async with ui(engine, dev_clip).run_test() as pilot:
            app = await live(pilot)
            table = app.screen.query_one("#faces", DataTable)
            await until(pilot, lambda: table.row_count > 0, what="faces in the table")
            t = app.telemetry
            assert {str(f["track_id"]) for f in t["faces"]} == {k.value for k in table.rows}
            face = t["faces"][0]
            row = [str(c) for c in table.get_row(str(face["track_id"]))]
            assert row[0] == str(face["track_id"]) and row[2].startswith(face["state"])
            figures = str(app.screen.query_one("#figures", Static).render())
            assert "fps" in figures and "dropped" in figures and "source" in figures
            await until(pilot, lambda: app.screen.query_one(Preview).has_image, what="a preview frame")
            # Scores: once the recognizer reports similarities, each one is shown against the threshold.
            threshold = t["settings"]["similarity_threshold"]
            for f in t["faces"]:
                if f["similarity"] is not None and f["identity"]:
                    cell = str(table.get_row(str(f["track_id"]))[4])
                    assert f"{f['similarity']:.2f}" in cell and f"{threshold:.2f}" in cell
                    assert ("✓" in cell) == (f["similarity"] >= threshold)

    asyncio.run(scenario())


def test_threshold_slider_changes_the_engine_setting(engine, dev_clip):
    async def scenario() -> None:
        async with ui(engine, dev_clip).run_test() as pilot:
            app = await live(pilot)
            slider = app.screen.query_one("#similarity-threshold", Slider)
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
            await until(pilot, lambda: request(engine, "settings")["similarity_threshold"] == 0.4, what="click")
            assert app.settings_delays, "the UI measured slider-to-telemetry delays"
            assert slider.value == 0.4, "the slider was not pulled back by older telemetry"

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
            await pilot.press("p")
            await until(pilot, lambda: request(engine, "status")["whole_frame"] is None, what="panic off")
            await pilot.press("space")
            await until(pilot, lambda: request(engine, "settings")["paused"], what="pause")
            await until(pilot, lambda: "PAUSED" in str(app.screen.query_one("#engine-status", Static).render()),
                        what="the PAUSED badge")
            await pilot.press("space")
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


# --- source & output screen ----------------------------------------------------------------------------------
def test_recording_from_the_output_screen(engine, dev_clip, tmp_path):
    target = tmp_path / "recorded.mp4"

    async def scenario() -> None:
        async with ui(engine, dev_clip).run_test() as pilot:
            app = await live(pilot)
            await pilot.press("o")
            record_path = app.screen.query_one("#record-path", Input)
            record_path.value = str(target)
            await pilot.press("w")
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
            await pilot.press("enter")
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
            assert row[3] == "Lin" and f"≥ {threshold:.2f} ✓" in row[4]
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
    """The screen against the real engine's facebank (errors in place, in plain words)."""
    photo = data_dir / "recognition_face_recognition" / "examples" / "lin-manuel-miranda.png"
    need_data(photo)
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
            screen.query_one("#paths", Input).value = str(photo)
            await pilot.press("enter")
            await until(pilot, lambda: "Enrolled Lin" in str(message.render()), timeout=120, what="the enrolment")
            people = screen.query_one("#people", DataTable)
            assert [k.value for k in people.rows] == ["Lin"]
            image_row = [str(c) for c in screen.query_one("#images", DataTable).get_row_at(0)]
            assert image_row[0].endswith("lin-manuel-miranda.png") and "px" in image_row[1]
            await pilot.press("d")
            await pilot.press("y")
            await until(pilot, lambda: people.row_count == 0, what="the removal")
            assert "Removed Lin" in str(message.render())

    asyncio.run(scenario())
