"""The output screen's list of outputs and its stream controls, driven headless (Textual's pilot) against a
real engine process playing the dev clip, with a real FFmpeg as the far end of the stream (loopback SRT)."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable, Input, Static

from engine.client import ControlClient, EnginePaths
from tests.stream_util import free_port, record, stream_kinds
from tui.app import BlurcastApp, make_app
from tui.screens.confirm import ConfirmScreen
from tui.screens.output import output_rows, stream_problem

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None,
                                  reason="needs ffmpeg and ffprobe with srt (Debian's ffmpeg)")


def status(paths: EnginePaths) -> dict:
    with ControlClient(paths.socket) as client:
        return client.request("status")


async def until(pilot: Pilot, predicate, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        await pilot.pause(0.05)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def ui(engine: EnginePaths, dev_clip: Path) -> BlurcastApp:
    return make_app(engine, source=str(dev_clip), start_engine=False, engine_args=["--source", str(dev_clip), "--loop"])


def table_text(app: BlurcastApp) -> str:
    table = app.screen.query_one("#outputs", DataTable)
    return "\n".join(" | ".join(str(c) for c in table.get_row(k)) for k in table.rows)


async def answer(pilot: Pilot, key: str) -> str:
    """Answer the y/n question now on screen; its text."""
    app = pilot.app
    await until(pilot, lambda: isinstance(app.screen, ConfirmScreen) and app.screen.query("#question"),
                what="the question")
    question = str(app.screen.query_one("#question", Static).render())
    await pilot.press(key)
    return question


@needs_ffmpeg
def test_streaming_from_the_output_screen(clip_engine: EnginePaths, dev_clip: Path, tmp_path: Path) -> None:
    """t, type the far end, Enter: asked first (n starts nothing); a bitrate out of range is the engine's error
    in place; then y: the stream shows in the list with its state, the far end records it; x, y stops it."""
    port = free_port()
    url = f"srt://127.0.0.1:{port}?mode=caller"
    out = tmp_path / "far-end.ts"
    far_end = record(f"srt://127.0.0.1:{port}?mode=listener", out)

    async def scenario() -> None:
        async with ui(clip_engine, dev_clip).run_test(size=(100, 30)) as pilot:
            app = pilot.app
            await until(pilot, lambda: app.engine_state == "live" and app.telemetry, what="the UI to attach")
            await pilot.press("o")
            await until(pilot, lambda: "nothing leaves the engine" in table_text(app), what="an empty list")
            await pilot.press("t")
            assert app.screen.focused is app.screen.query_one("#stream-url", Input)
            await pilot.press(*url, "enter")
            assert "Send the anonymized stream to " + url in await answer(pilot, "n")
            await pilot.pause(1.0)
            assert not any(s.startswith("stream") for s in status(clip_engine)["sinks"]), "n started a stream"

            app.screen.query_one("#stream-bitrate", Input).value = "5"
            app.screen.query_one("#stream-url", Input).focus()
            await pilot.press("enter")
            await answer(pilot, "y")
            msg = app.screen.query_one("#stream-msg", Static)
            await until(pilot, lambda: msg.has_class("error"), what="the engine's refusal")
            assert "bitrate_kbps must be in [300, 51000]" in str(msg.render())
            assert not any(s.startswith("stream") for s in status(clip_engine)["sinks"])

            app.screen.query_one("#stream-bitrate", Input).value = "-"  # the integer field lets "-" through
            app.screen.query_one("#stream-url", Input).focus()
            await pilot.press("enter")
            await answer(pilot, "y")
            await until(pilot, lambda: "kb/s is a whole number" in str(msg.render()), what="the UI's refusal")
            assert not any(s.startswith("stream") for s in status(clip_engine)["sinks"])

            app.screen.query_one("#stream-bitrate", Input).value = "800"
            await pilot.click("#stream-start")
            await answer(pilot, "y")
            await until(pilot, lambda: "sending" in table_text(app), timeout=60, what="the stream in the list")
            assert f"stream | {url} | sending" in table_text(app)
            await pilot.pause(3.0)  # a few seconds reach the far end

            table = app.screen.query_one("#outputs", DataTable)
            table.focus()
            await pilot.press("x")
            assert url in await answer(pilot, "y")
            await until(pilot, lambda: "nothing leaves the engine" in table_text(app), what="the stream to stop")
            assert not any(s.startswith("stream") for s in status(clip_engine)["sinks"])

    try:
        asyncio.run(scenario())
        far_end.wait(timeout=15)
    finally:
        if far_end.poll() is None:
            far_end.kill()
            far_end.wait()
    assert stream_kinds(out) == ["video"], "the far end got the anonymized stream"


def test_output_rows_list_every_output_with_its_state() -> None:
    t = {"sinks": ["vcam", "file", "preview", "stream srt://:9001?mode=listener"],
         "outputs": [{"name": "vcam", "path": "/dev/video10", "state": "running"},
                     {"name": "file", "path": "/rec/show.mp4", "state": "running"},
                     {"name": "preview", "path": None, "state": "running"},
                     {"name": "stream srt://:9001?mode=listener", "path": "srt://:9001?mode=listener",
                      "state": "waiting for the far end", "sent": 1, "dropped": 230, "reconnects": 2}]}
    assert [r[1:] for r in output_rows(t)] == [
        ("virtual camera", "/dev/video10", "running"), ("recording", "/rec/show.mp4", "running"),
        ("stream", "srt://:9001?mode=listener", "waiting, 230 dropped, 2× reconnected")]
    older = {"sinks": ["vcam", "stream rtmp://a/live/***"]}  # an engine without `outputs`
    assert [r[1] for r in output_rows(older)] == ["virtual camera", "stream"]
    assert stream_problem("") and stream_problem("http://x") and stream_problem("RTMPS://a/b/c") is None


STREAMING = {"sinks": ["vcam", "stream srt://:9001?mode=listener", "stream rtmps://live.twitch.tv/app/***"],
             "outputs": [{"name": "vcam", "path": "/dev/video10", "state": "running"},
                         {"name": "stream srt://:9001?mode=listener", "path": "srt://:9001?mode=listener",
                          "state": "waiting for the far end", "sent": 1, "dropped": 230, "reconnects": 0},
                         {"name": "stream rtmps://live.twitch.tv/app/***", "path": "rtmps://live.twitch.tv/app/***",
                          "state": "sending", "sent": 5210, "dropped": 3, "reconnects": 1}]}


def test_output_screen_lists_streams(tmp_path: Path, snap_compare) -> None:
    """At 80x24: the virtual camera and two streams (one waiting for its caller), the stream row and its keys."""
    from tests.test_tui_snapshots import TELEMETRY, feed, settle

    app = make_app(EnginePaths(tmp_path), source="0", start_engine=False, attach=False,
                   facebank_path=tmp_path / "facebank.json")

    async def run_before(pilot: Pilot) -> None:
        await feed(pilot, {**TELEMETRY, **STREAMING}, preview=False)
        await pilot.press("o")
        await settle(pilot)

    assert snap_compare(app, run_before=run_before, terminal_size=(80, 24))


def test_engine_status_says_how_each_stream_is_taken() -> None:
    """`blurcast engine status` over SSH: a stream waiting for its caller says so."""
    from tui.format import outputs_words

    assert outputs_words(STREAMING) == ["virtual camera → /dev/video10",
                                        "stream → srt://:9001?mode=listener (waiting for the far end, 230 dropped)",
                                        "stream → rtmps://live.twitch.tv/app/*** (sending, 3 dropped)"]
