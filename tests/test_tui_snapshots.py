"""Snapshots of each screen in a repeatable state: an app that never attaches to an engine, fed one fixed
telemetry event (and a synthetic preview), with no cursor blinking. Review changes with
`pytest tests/test_tui_snapshots.py --snapshot-update` and the HTML report before accepting them."""

from __future__ import annotations

import numpy as np
import pytest
from textual.pilot import Pilot
from textual.widgets import Input

import tui.screens.facebank as facebank_screen
from engine.client import EnginePaths
from tui.app import BlurcastApp, make_app
from tui.facebank_link import ImageView, PersonView
from tui.messages import EngineLost, EngineStats, PreviewFrame

TELEMETRY = {
    "event": "telemetry", "time": 0.0, "fps": 24.9, "latency_p50_ms": 41.2, "latency_p95_ms": 63.0,
    "frames": 1234, "dropped": 17, "whole_frames": 2, "faults": {},
    "source": {"spec": "/data/video_hamilton/short_hamilton_clip.mp4", "kind": "file", "state": "running",
               "width": 640, "height": 360, "fps": 29.97},
    "sinks": ["vcam"], "detector": "yunet on onnxruntime-cpu", "whole_frame": None,
    "faces": [
        {"track_id": 3, "box": [223.6, 87.3, 298.5, 192.4], "size": 105.1, "score": 0.925, "state": "visible",
         "lost_frames": 0, "identity": "Lin-Manuel Miranda", "similarity": 0.712},
        {"track_id": 7, "box": [71.8, 136.5, 123.6, 210.3], "size": 73.8, "score": 0.88, "state": "blurred",
         "lost_frames": 0, "identity": "Lin-Manuel Miranda", "similarity": 0.121},
        {"track_id": 9, "box": [400.0, 100.0, 440.0, 150.0], "size": 50.0, "score": 0.31, "state": "blurred",
         "lost_frames": 4, "identity": None, "similarity": None},
    ],
    "settings": {"detector": "yunet", "backend": "auto", "confidence": 0.5, "low_confidence": 0.2,
                 "detect_width": 1280, "deadline_ms": 250.0, "hold_seconds": 0.8, "mode": "blur", "shape": "box",
                 "strength": 0.6, "margin": 0.25, "similarity_threshold": 0.56, "recognition": True,
                 "panic": False, "paused": False},
}

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
def app(tmp_path) -> BlurcastApp:
    return make_app(EnginePaths(tmp_path), source="0", start_engine=False, attach=False,
                    facebank_path=tmp_path / "facebank.json")


async def feed(pilot: Pilot, telemetry: dict = TELEMETRY) -> None:
    pilot.app.post_message(EngineStats(telemetry))
    await pilot.pause()


async def settle(pilot: Pilot) -> None:
    await pilot.app.workers.wait_for_complete()
    for field in pilot.app.screen.query(Input):
        field.cursor_blink = False
    await pilot.pause()


def test_live_screen(app, snap_compare):
    async def run_before(pilot: Pilot) -> None:
        await feed(pilot)
        pilot.app.screen.post_message(PreviewFrame(96, 54, synthetic_preview()))
        await settle(pilot)

    assert snap_compare(app, run_before=run_before)


def test_live_screen_large(app, snap_compare):
    async def run_before(pilot: Pilot) -> None:
        await feed(pilot)
        pilot.app.screen.post_message(PreviewFrame(96, 54, synthetic_preview()))
        await settle(pilot)

    assert snap_compare(app, run_before=run_before, terminal_size=(160, 48))


def test_live_screen_panic(app, snap_compare):
    panic = {**TELEMETRY, "whole_frame": "panic", "settings": {**TELEMETRY["settings"], "panic": True}}

    async def run_before(pilot: Pilot) -> None:
        await feed(pilot, panic)
        await settle(pilot)

    assert snap_compare(app, run_before=run_before)


def test_live_screen_engine_lost(app, snap_compare):
    async def run_before(pilot: Pilot) -> None:
        await feed(pilot)
        pilot.app.post_message(EngineLost("the engine closed the telemetry stream"))
        await settle(pilot)

    assert snap_compare(app, run_before=run_before)


def test_facebank_screen(app, snap_compare, monkeypatch):
    monkeypatch.setattr(facebank_screen, "FacebankLink", FakeFacebank)

    async def run_before(pilot: Pilot) -> None:
        await feed(pilot)
        await pilot.press("f")
        await settle(pilot)

    assert snap_compare(app, run_before=run_before)


def test_output_screen(app, snap_compare):
    async def run_before(pilot: Pilot) -> None:
        await feed(pilot)
        await pilot.press("o")
        await settle(pilot)

    assert snap_compare(app, run_before=run_before)
