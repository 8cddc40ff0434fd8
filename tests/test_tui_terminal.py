"""The UI in a real terminal (tmux) at 80x24 and 160x48: it starts the engine, renders, and `q` exits cleanly
while the engine keeps running."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.client import ControlClient, EnginePaths, engine_running, stop_background

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tui-terminal")
    yield root
    stop_background(EnginePaths(root))  # the UI started it and, by design, left it running


def tmux(server: str, *args: str) -> str:
    return subprocess.run(["tmux", "-L", server, *args], check=True, capture_output=True, text=True,
                          timeout=30).stdout


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.mark.parametrize("size", [(80, 24), (160, 48)], ids=["80x24", "160x48"])
def test_the_ui_in_a_real_terminal(home, dev_clip, size, tmp_path):
    width, height = size
    server = f"blurcast-test-{os.getpid()}"  # a private tmux server: never touches anyone else's sessions
    exit_file = tmp_path / "exit-code"
    command = (f"cd {shlex.quote(str(Path(__file__).resolve().parents[1]))} && "
               f"BLURCAST_HOME={shlex.quote(str(home))} {shlex.quote(sys.executable)} -m tui "
               f"--source {shlex.quote(str(dev_clip))}; echo $? > {shlex.quote(str(exit_file))}; sleep 60")
    tmux(server, "new-session", "-d", "-s", "ui", "-x", str(width), "-y", str(height), command)
    try:
        def live_screen() -> str | None:
            text = tmux(server, "capture-pane", "-p", "-t", "ui")
            return text if "LIVE" in text and "faces in view" in text else None

        text = wait_for(live_screen, 120, "the live screen")  # the first run starts the engine: generous
        lines = text.splitlines()
        assert len(lines) <= height and max(len(line) for line in lines) <= width
        assert "threshold" in text and "Quit" in text, "sliders and the key bar fit"
        tmux(server, "send-keys", "-t", "ui", "q")
        code = wait_for(lambda: exit_file.exists() and exit_file.read_text().strip(), 30, "the UI to exit")
        assert code == "0"
    finally:
        subprocess.run(["tmux", "-L", server, "kill-server"], capture_output=True, timeout=30)
    assert engine_running(EnginePaths(home)), "quitting the UI left the engine running"
    with ControlClient(EnginePaths(home).socket) as client:
        before = client.request("status")["frames"]
        wait_for(lambda: client.request("status")["frames"] > before + 5, 30, "frames after the UI quit")
