"""Helpers shared by the tests that drive a real engine process, and by the UI tests (Textual's pilot against
such an engine)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

if TYPE_CHECKING:
    from textual.pilot import Pilot

    from engine.client import EnginePaths
    from tui.app import BlurcastApp

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float = 30.0, what: str = "condition", every: float = 0.1) -> T:
    """The first truthy value of `predicate()`, polled until `timeout` seconds; AssertionError after that."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"{what}: not met within {timeout:.0f} s")


def pairwise_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, m) intersection over union of two sets of (x1, y1, x2, y2) boxes."""
    ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = ix * iy
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


# --- UI tests: an app on a running engine, driven by Textual's pilot ----------------------------------------
def request(paths: EnginePaths, cmd: str, **args: Any) -> Any:
    """One control API command to the engine at `paths`, as the CLI sends it."""
    from engine.client import ControlClient

    with ControlClient(paths.socket) as client:
        return client.request(cmd, **args)


def ui(engine: EnginePaths, clip: Path, **kwargs: Any) -> BlurcastApp:
    """The UI attached to the engine at `engine` (playing `clip`), which it never starts itself."""
    from tui.app import make_app

    return make_app(engine, source=str(clip), start_engine=False, engine_args=["--source", str(clip), "--loop"],
                    **kwargs)


async def until(pilot: Pilot, predicate: Callable[[], T], timeout: float = 30.0, what: str = "condition") -> T:
    """Let the app run until `predicate()` holds (generous: the test machine has 2 busy cores)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        await pilot.pause(0.05)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


async def live(pilot: Pilot) -> BlurcastApp:
    """The app, once it is attached to its engine and has figures."""
    app = pilot.app
    await until(pilot, lambda: app.engine_state == "live" and app.telemetry, what="the UI to attach")
    return app


async def answer(pilot: Pilot, key: str) -> str:
    """Answer the y/n question now on screen with `key`; the question's text."""
    from textual.widgets import Static

    from tui.screens.confirm import ConfirmScreen

    app = pilot.app
    await until(pilot, lambda: isinstance(app.screen, ConfirmScreen) and app.screen.query("#question"),
                what="the question")
    question = str(app.screen.query_one("#question", Static).render())
    await pilot.press(key)
    return question


class CountingSink:
    """A sink that counts the frames it gets (an output beside the one a test watches)."""

    name = "counter"

    def __init__(self) -> None:
        self.frames = 0

    def write(self, frame) -> None:
        self.frames += 1

    def close(self) -> None:
        pass


# A foreground job in a terminal gets Ctrl-C with SIGINT at its default; a job started in the background of a
# script (as a CI runner may start pytest) inherits SIGINT *ignored*, and Python then never raises
# KeyboardInterrupt. `python -c AS_IN_A_TERMINAL ARGS` runs `blurcast ARGS` with the terminal's default back.
AS_IN_A_TERMINAL = ("import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
                    "sys.argv[0] = 'blurcast'; runpy.run_module('blurcast', run_name='__main__')")

