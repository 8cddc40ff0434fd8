"""Snapshots of each screen in a repeatable state: an app that never attaches to an engine, fed one fixed
telemetry event (and a synthetic preview), with no cursor blinking. Review changes with
`pytest tests/test_tui_snapshots.py --snapshot-update` and the HTML report before accepting them."""

from __future__ import annotations

import numpy as np
import pytest
from textual.pilot import Pilot
from textual.widgets import Input

import tui.screens.facebank as facebank_screen
import tui.screens.live as live_screen
from engine.client import EnginePaths
from engine.stream_options import published_stream_limits
from tui.app import BlurcastApp, make_app
from tui.facebank_link import ImageView, PersonView
from tui.messages import EngineLost, EngineStartFailed, EngineStats, PreviewFrame

TELEMETRY = {
    "event": "telemetry", "time": 0.0, "fps": 24.9, "latency_p50_ms": 41.2, "latency_p95_ms": 63.0,
    "frames": 1234, "dropped": 17, "whole_frames": 2, "faults": {},
    "source": {"spec": "/data/video_hamilton/short_hamilton_clip.mp4", "kind": "file", "state": "running",
               "width": 640, "height": 360, "fps": 29.97},
    "sinks": ["vcam"], "detector": "yunet on onnxruntime-cpu", "whole_frame": None,
    "pid": 4242, "outputs": [{"name": "vcam", "path": "/dev/video10"}], "enrolment": None,
    "faces": [
        {"track_id": 3, "box": [223.6, 87.3, 298.5, 192.4], "size": 105.1, "score": 0.925, "state": "visible",
         "lost_frames": 0, "identity": "Lin-Manuel Miranda", "similarity": 0.712, "reason": None,
         "candidate": None},
        {"track_id": 7, "box": [71.8, 136.5, 123.6, 210.3], "size": 73.8, "score": 0.88, "state": "blurred",
         "lost_frames": 0, "identity": None, "similarity": 0.45, "reason": "below threshold",
         "candidate": {"name": "Lin-Manuel Miranda", "similarity": 0.45}},
        {"track_id": 12, "box": [480.0, 150.0, 520.0, 200.0], "size": 50.0, "score": 0.41, "state": "blurred",
         "lost_frames": 0, "identity": None, "similarity": None, "reason": "not recognised yet",
         "candidate": None},
        {"track_id": 9, "box": [300.0, 10.0, 600.0, 350.0], "size": 517.0, "score": 0.31, "state": "blurred",
         "lost_frames": 22, "identity": None, "similarity": None, "reason": "lost", "candidate": None},
    ],
    "facebank": {"people": 1, "photos": 2, "embedded": 40},
    "settings": {"detector": "yunet", "backend": "auto", "confidence": 0.5, "low_confidence": 0.2,
                 "detect_width": 1280, "deadline_ms": 250.0, "hold_seconds": 0.8, "mode": "blur", "shape": "box",
                 "strength": 0.6, "margin": 0.25, "similarity_threshold": 0.56, "recognition": True,
                 "panic": False, "paused": False, "lookahead_frames": 4},
    "video_delay_ms": 174.6, "obs_sync_offset_ms": 175, "lookahead_frames": 4,
}

# The shape of the engine's `limits` reply (the control API contract); the figures are the shipped ones.
LIMITS = {
    "similarity_threshold": {"default": 0.49, "min": 0.4, "max": 1.0, "choices": None,
                             "help": "higher lets fewer strangers through, but may blur you"},
    "confidence": {"default": 0.5, "min": 0.2, "max": 0.9, "choices": None,
                   "help": "lower finds more faces, and more false ones"},
    "strength": {"default": 0.6, "min": 0.0, "max": 1.0, "choices": None, "help": "how much detail is left"},
    "margin": {"default": 0.25, "min": 0.0, "max": 1.0, "choices": None, "help": "each box grows by this per side"},
    "hold_seconds": {"default": 0.8, "min": 0.2, "max": 5.0, "choices": None,
                     "help": "how long a lost face stays blurred where it was going"},
    "lookahead_frames": {"default": 0, "min": 0, "max": 30, "choices": None,
                         "help": "frames held back so a face is also hidden before it was first detected"},
    "mode": {"default": "blur", "min": None, "max": None, "choices": ["blur", "mosaic", "fill"], "help": "how"},
}
SIZES = [(80, 24), (160, 48)]

PEOPLE = [PersonView("Lin-Manuel Miranda", (ImageView("/photos/lin/portrait.png", 412.0, 1830.0, 0.97, "good"),
                                            ImageView("/photos/lin/stage.jpg", 74.0, 96.0, 0.81, "weak"))),
          PersonView("Sam", (ImageView("/photos/sam.jpg", 160.0, 420.0, 0.93, "old model"),))]


def synthetic_preview(width: int = 96, height: int = 54) -> bytes:
    """A fixed, smooth BGR image (a stand-in for the engine's anonymized preview)."""
    y, x = np.mgrid[0:height, 0:width]
    bgr = np.stack([x * 255 // width, y * 255 // height, np.full_like(x, 90)], axis=-1).astype(np.uint8)
    bgr[12:40, 36:60] = (60, 60, 160)  # a blurred face box
    return bgr.tobytes()


class FakeFacebank:
    def __init__(self, link) -> None:
        self.link = link

    def people(self):
        return PEOPLE


@pytest.fixture
def app(tmp_path, monkeypatch) -> BlurcastApp:
    app = make_app(EnginePaths(tmp_path), source="0", start_engine=False, attach=False,
                   facebank_path=tmp_path / "facebank.json")
    # A fixed minute of history: sampling once a second would make the sparklines depend on the test's timing.
    monkeypatch.setattr(app, "_note_history", lambda t, now: None)
    app.fps_history.extend(25 + 5 * np.sin(np.arange(60) / 6))
    app.latency_history.extend(60 + 30 * np.cos(np.arange(60) / 4))
    return app


async def feed(pilot: Pilot, telemetry: dict = TELEMETRY, preview: bool = True) -> None:
    pilot.app.post_message(EngineStats(telemetry))
    await pilot.pause()
    pilot.app.limits = LIMITS
    pilot.app.stream_limits = published_stream_limits()  # the engine's own table: the UI copies none of it
    if preview:
        pilot.app.screen.post_message(PreviewFrame(96, 54, synthetic_preview()))
    await pilot.pause()


async def settle(pilot: Pilot) -> None:
    await pilot.app.workers.wait_for_complete()
    for field in pilot.app.screen.query(Input):
        field.cursor_blink = False
    await pilot.pause()


@pytest.mark.parametrize("size", SIZES)
def test_live_screen(app, snap_compare, size):
    """Faces outlined in the preview with the table's ids (#3 selected: thick); lost #9 is no row; #7 shows
    its candidate and why it is blurred; sliders with default marks."""
    async def run_before(pilot: Pilot) -> None:
        await feed(pilot)
        await settle(pilot)

    assert snap_compare(app, run_before=run_before, terminal_size=size)


@pytest.mark.parametrize("size", SIZES)
def test_live_screen_slider_help(app, snap_compare, size):
    async def run_before(pilot: Pilot) -> None:
        await feed(pilot)
        await pilot.press("s", "down", "left")  # confidence, one step below its default mark
        await settle(pilot)

    assert snap_compare(app, run_before=run_before, terminal_size=size)


@pytest.mark.parametrize("size", SIZES)
def test_live_screen_face_picked_by_number(app, snap_compare, size):
    async def run_before(pilot: Pilot) -> None:
        await feed(pilot)
        await pilot.press("1", "2")
        await settle(pilot)

    assert snap_compare(app, run_before=run_before, terminal_size=size)


@pytest.mark.parametrize("size", SIZES)
def test_enrol_dialog(app, snap_compare, size):
    async def run_before(pilot: Pilot) -> None:
        await feed(pilot)
        pilot.app.engine_state = "live"  # the enrol key needs a live engine; this app never attaches
        await pilot.press("e", *"Lin")
        await settle(pilot)

    assert snap_compare(app, run_before=run_before, terminal_size=size)


@pytest.mark.parametrize("size", SIZES)
def test_live_screen_enrolment_progress(app, snap_compare, size):
    enrolling = {**TELEMETRY, "enrolment": {"name": "Lin", "track_id": 3, "state": "gathering", "progress": 0.4,
                                            "frames": 11, "message": ""}}

    async def run_before(pilot: Pilot) -> None:
        await feed(pilot, enrolling)
        await settle(pilot)

    assert snap_compare(app, run_before=run_before, terminal_size=size)


@pytest.mark.parametrize("size", SIZES)
def test_live_screen_offers_enrolment_with_an_empty_facebank(app, snap_compare, size, monkeypatch):
    monkeypatch.setattr(live_screen, "STEADY_S", 0.0)
    empty = {**TELEMETRY, "facebank": {"people": 0, "photos": 0, "embedded": 0},
             "faces": [{**f, "state": "blurred", "identity": None, "reason": "not recognised yet", "candidate": None}
                       for f in TELEMETRY["faces"]]}

    async def run_before(pilot: Pilot) -> None:
        await feed(pilot, empty)
        await pilot.pause(live_screen.TABLE_EVERY_S + 0.05)  # the table repaints at most this often
        await feed(pilot, empty)
        await settle(pilot)

    assert snap_compare(app, run_before=run_before, terminal_size=size)


def test_a_failed_this_is_me_is_shown_then_the_offer_comes_back(app, monkeypatch):
    """The engine keeps a failed enrolment's outcome in its telemetry; the screen shows it, then offers a face again
    so the user can try once more (before, the failure stayed on screen for good and the offer never came back)."""
    from textual.widgets import Static

    monkeypatch.setattr(live_screen, "STEADY_S", 0.0)
    monkeypatch.setattr(live_screen, "FAILED_SHOWN_S", 0.5, raising=False)
    failed = {**TELEMETRY, "facebank": {"people": 0, "photos": 0, "embedded": 0},
              "faces": [{**f, "state": "blurred", "identity": None, "reason": "not recognised yet", "candidate": None}
                        for f in TELEMETRY["faces"]],
              "enrolment": {"name": "Lin", "track_id": 3, "state": "failed", "progress": 1.0, "frames": 0,
                            "message": "the frames show more than one person"}}

    async def scenario() -> None:
        async with app.run_test(size=(100, 30)) as pilot:
            await feed(pilot, failed)
            notice = pilot.app.screen.query_one("#notice", Static)
            assert "failed: the frames show more than one person" in str(notice.render())
            await pilot.pause(0.6)
            await feed(pilot, failed)
            assert "Is #" in str(notice.render()), str(notice.render())

    import asyncio
    asyncio.run(scenario())


def test_live_screen_panic(app, snap_compare):
    panic = {**TELEMETRY, "whole_frame": "panic", "settings": {**TELEMETRY["settings"], "panic": True}}

    async def run_before(pilot: Pilot) -> None:
        await feed(pilot, panic, preview=False)
        await settle(pilot)

    assert snap_compare(app, run_before=run_before)


def test_live_screen_engine_lost(app, snap_compare):
    async def run_before(pilot: Pilot) -> None:
        await feed(pilot)
        pilot.app.post_message(EngineLost("the engine closed the telemetry stream"))
        await settle(pilot)

    assert snap_compare(app, run_before=run_before)


NO_CAMERA = """the engine exited at start (code 2); see /home/me/.local/share/blurcast/engine.log:
[ WARN:0@1.6] global cap_v4l.cpp:913 open VIDEOIO(V4L2:/dev/video0): can't open camera by index
[ERROR:0@1.617] global obsensor_uvc_stream_channel.cpp:163 getStreamChannelGroup Camera index out of range
error: cannot open camera 0: it is absent or busy (another program may hold it;
`v4l2-ctl --list-devices` lists cameras)"""


@pytest.mark.parametrize("size", SIZES)
def test_no_camera_is_one_line_with_a_way_out(app, snap_compare, size):
    async def run_before(pilot: Pilot) -> None:
        pilot.app.post_message(EngineStartFailed(NO_CAMERA))
        await pilot.pause()
        pilot.app.clear_notifications()
        await settle(pilot)

    assert snap_compare(app, run_before=run_before, terminal_size=size)


@pytest.mark.parametrize("size", SIZES)
def test_keys_help(app, snap_compare, size):
    async def run_before(pilot: Pilot) -> None:
        await feed(pilot)
        await pilot.press("question_mark")
        await settle(pilot)

    assert snap_compare(app, run_before=run_before, terminal_size=size)


def test_panic_off_asks_first(app, snap_compare):
    panic = {**TELEMETRY, "whole_frame": "panic", "settings": {**TELEMETRY["settings"], "panic": True}}

    async def run_before(pilot: Pilot) -> None:
        await feed(pilot, panic, preview=False)
        pilot.app.engine_state = "live"
        await pilot.press("p")
        await settle(pilot)

    assert snap_compare(app, run_before=run_before)


def test_facebank_screen(app, snap_compare, monkeypatch):
    monkeypatch.setattr(facebank_screen, "FacebankLink", FakeFacebank)

    async def run_before(pilot: Pilot) -> None:
        await feed(pilot, preview=False)
        await pilot.press("f")
        await settle(pilot)

    assert snap_compare(app, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_output_screen(app, snap_compare, size):
    """Reattached to an engine that records: the path shows (the engine's `outputs`), not 'started outside'."""
    recording = {**TELEMETRY, "sinks": ["vcam", "file"],
                 "outputs": [{"name": "vcam", "path": "/dev/video10"}, {"name": "file", "path": "/rec/show.mp4"}]}

    async def run_before(pilot: Pilot) -> None:
        await feed(pilot, recording, preview=False)
        await pilot.press("o")
        await settle(pilot)

    assert snap_compare(app, run_before=run_before, terminal_size=size)


def test_output_screen_while_typing_a_path(app, snap_compare):
    """In a field every key is text; the footer says how to complete a path and how to get the keys back."""
    async def run_before(pilot: Pilot) -> None:
        await feed(pilot, preview=False)
        await pilot.press("o")
        pilot.app.screen.query_one("#record-path", Input).focus()
        await pilot.press(*"rec1 p w q")
        await settle(pilot)

    assert snap_compare(app, run_before=run_before)
