"""The output screen's list of outputs and its stream controls, driven headless (Textual's pilot) against a
real engine process playing the dev clip, with a real FFmpeg as the far end of the stream (loopback SRT)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable, Input, Select, Static

from engine.client import EnginePaths
from tests.helpers import answer, live, request, ui, until
from tests.stream_util import free_port, record, stream_kinds
from tui.app import BlurcastApp, make_app
from tui.screens.output import output_rows, stream_problem

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None,
                                  reason="needs ffmpeg and ffprobe with srt (Debian's ffmpeg)")


def status(paths: EnginePaths) -> dict:
    return request(paths, "status")


def table_text(app: BlurcastApp) -> str:
    table = app.screen.query_one("#outputs", DataTable)
    return "\n".join(" | ".join(str(c) for c in table.get_row(k)) for k in table.rows)


@contextlib.contextmanager
def far_end(tmp_path: Path, options: str = "") -> Iterator[tuple[str, Path]]:
    """A local FFmpeg listening for SRT (with `options` in its query) that records what comes; yields the URL
    for the engine to call and the recording, finished once the stream is stopped."""
    port = free_port()
    out = tmp_path / "far-end.ts"
    proc = record(f"srt://127.0.0.1:{port}?mode=listener{options}", out)
    try:
        yield f"srt://127.0.0.1:{port}?mode=caller", out
        proc.wait(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def stop_the_stream(pilot: Pilot) -> str:
    """Pick the stream in the list, x, y: it stops. The question's text."""
    app = pilot.app
    app.screen.query_one("#outputs", DataTable).focus()
    await pilot.press("x")
    question = await answer(pilot, "y")
    await until(pilot, lambda: "nothing leaves the engine" in table_text(app), what="the stream to stop")
    return question


@needs_ffmpeg
def test_streaming_from_the_output_screen(clip_engine: EnginePaths, dev_clip: Path, tmp_path: Path) -> None:
    """t, type the far end, Enter: asked first (n starts nothing); a bitrate out of range is the engine's error
    in place; then y: the stream shows in the list with its state, the far end records it; x, y stops it."""
    async def scenario(url: str) -> None:
        async with ui(clip_engine, dev_clip).run_test(size=(100, 30)) as pilot:
            app = await live(pilot)
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

            assert url in await stop_the_stream(pilot)
            assert not any(s.startswith("stream") for s in status(clip_engine)["sinks"])

    with far_end(tmp_path) as (url, out):
        asyncio.run(scenario(url))
    assert stream_kinds(out) == ["audio", "video"], "the far end got the anonymized stream, with the clip's sound"


PASSPHRASE = "correct-horse-battery"


def keyframe_times(path: Path) -> list[float]:
    done = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v", "-skip_frame", "nokey", "-show_entries",
                           "frame=pts_time", "-of", "csv=p=0", str(path)], capture_output=True, text=True, check=True)
    return [float(t) for t in done.stdout.replace(",", " ").split() if t != "N/A"]


async def refused(pilot: Pilot, fields: dict[str, str]) -> str:
    """Fill the stream fields, Send, yes: the refusal shown in place (and nothing started)."""
    app = pilot.app
    for field_id, value in fields.items():
        app.screen.query_one(field_id, Input).value = value
    msg = app.screen.query_one("#stream-msg", Static)
    msg.update("")
    msg.set_class(False, "error")
    await pilot.click("#stream-start")
    await answer(pilot, "y")
    await until(pilot, lambda: msg.has_class("error"), what="a refusal")
    return str(msg.render())


@needs_ffmpeg
def test_stream_options_reach_the_encoder_and_bad_ones_show_the_engines_words(
        clip_engine: EnginePaths, dev_clip: Path, tmp_path: Path) -> None:
    """Keyframe interval, x264 preset, SRT latency and passphrase from the output screen: a value out of range is
    refused with the engine's message, nothing starts; good ones reach FFmpeg (the far end, listening with the
    same passphrase, records keyframes 1 s apart and x264's ultrafast settings); the passphrase is masked on
    screen, in the question, in the list, in telemetry and in the engine's log."""
    async def scenario(url: str) -> None:
        async with ui(clip_engine, dev_clip).run_test(size=(100, 30)) as pilot:
            app = await live(pilot)
            await pilot.press("o")
            preset = app.screen.query_one("#stream-preset", Select)
            limits = await until(pilot, lambda: app.stream_limits, what="the engine's stream limits")
            await until(pilot, lambda: not preset.disabled, what="the presets")
            assert preset.value == limits["preset"]["default"]  # the engine's, not a copy
            app.screen.query_one("#stream-url", Input).value = url
            assert "keyframe_s must be in [0.5, 10]" in await refused(pilot, {"#stream-keyframe": "30"})
            assert "srt_latency_ms must be in [20, 10000]" in await refused(
                pilot, {"#stream-keyframe": "1", "#srt-latency": "5"})
            assert "srt_passphrase must have 10 to 79 bytes" in await refused(
                pilot, {"#srt-latency": "200", "#srt-passphrase": "short"})
            assert "keyframe s is a number" in await refused(pilot, {"#stream-keyframe": "1e"})  # the UI's own
            assert not any(s.startswith("stream") for s in status(clip_engine)["sinks"])

            app.screen.query_one("#stream-keyframe", Input).value = "1"
            preset.value = "ultrafast"
            passphrase = app.screen.query_one("#srt-passphrase", Input)
            passphrase.value = ""
            passphrase.focus()
            await pilot.press(*PASSPHRASE)
            assert PASSPHRASE not in app.export_screenshot(), "the passphrase shows on screen"
            await pilot.click("#stream-start")
            question = await answer(pilot, "y")
            assert url in question and "(encrypted)" in question and PASSPHRASE not in question
            await until(pilot, lambda: "sending" in table_text(app), timeout=60, what="the stream in the list")
            assert f"stream {url}&latency=200000&passphrase=***" in status(clip_engine)["sinks"]
            await pilot.pause(4.0)  # keyframes a second apart reach the far end
            assert PASSPHRASE not in json.dumps(status(clip_engine))
            await stop_the_stream(pilot)

    with far_end(tmp_path, f"&passphrase={PASSPHRASE}") as (url, out):
        asyncio.run(scenario(url))
    assert PASSPHRASE not in clip_engine.log.read_text(), "the passphrase is in the engine's log"
    assert stream_kinds(out) == ["audio", "video"], "the far end (same passphrase) got the stream"
    gaps = np.diff(keyframe_times(out))
    assert len(gaps) >= 2 and np.median(gaps) == pytest.approx(1.0, abs=0.1), gaps
    assert b"cabac=0" in out.read_bytes(), "x264's options (in the stream) are not ultrafast's"


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


def test_the_outputs_list_says_nothing_leaves_once_the_engine_is_live(tmp_path: Path) -> None:
    """The list drawn while the engine was not live ("engine not live") is redrawn when it goes live with no
    output: the rows alone are the same (none), the state is not (found as a CI failure under load)."""
    from tests.test_tui_snapshots import TELEMETRY, feed

    app = make_app(EnginePaths(tmp_path), source="0", start_engine=False, attach=False,
                   facebank_path=tmp_path / "facebank.json")

    async def scenario() -> None:
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.press("o")
            await pilot.pause()
            assert "engine not live" in table_text(app)
            await feed(pilot, {**TELEMETRY, "sinks": [], "outputs": []}, preview=False)
            await pilot.pause()
            assert app.engine_state == "live"
            assert "nothing leaves the engine" in table_text(app)

    asyncio.run(scenario())
