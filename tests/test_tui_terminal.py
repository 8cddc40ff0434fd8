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
            # The whole screen, sliders and key bar included: a capture can land mid-paint (CI, stop 46: the top
            # lines drawn, the rest still blank), so the wait is for all of it; a screen where they never fit
            # times out here.
            return text if all(word in text for word in ("LIVE", "faces in view", "threshold", "Quit")) else None

        # The first run starts the engine: a generous wait.
        text = wait_for(live_screen, 120, "the live screen, sliders and key bar in view")
        lines = text.splitlines()
        assert len(lines) <= height and max(len(line) for line in lines) <= width
        tmux(server, "send-keys", "-t", "ui", "q")
        code = wait_for(lambda: exit_file.exists() and exit_file.read_text().strip(), 30, "the UI to exit")
        assert code == "0"
    finally:
        subprocess.run(["tmux", "-L", server, "kill-server"], capture_output=True, timeout=30)
    assert engine_running(EnginePaths(home)), "quitting the UI left the engine running"
    with ControlClient(EnginePaths(home).socket) as client:
        before = client.request("status")["frames"]
        wait_for(lambda: client.request("status")["frames"] > before + 5, 30, "frames after the UI quit")


# --- asking the terminal what it draws, over a slow link -----------------------------------------------------
ASKS = """
import json, os, select, sys
from tui.widgets.graphics_preview import detect_graphics
answer = detect_graphics()
left = b""  # what is still unread on the terminal: the app would take it as keys
while select.select([0], [], [], 0.5)[0]:
    left += os.read(0, 1024)
out = {"graphics": getattr(answer, "graphics", answer), "typed": getattr(answer, "typed", ""), "left": left.decode(),
       "cell": getattr(answer, "cell", None)}
open(sys.argv[1], "w").write(json.dumps(out))
"""


def terminal_session(tmp_path: Path, typed: bytes, answers: dict[bytes, bytes], delay: float, *,
                     script: str = ASKS, pixels: tuple[int, int] = (0, 0)) -> dict:
    """Run `script` (ASKS) on an 80x24 pty reporting `pixels` (width, height) for its window; play the terminal:
    `typed` is the user's typing before any question, and each question in `answers` is answered `delay` seconds
    after it is seen (an SSH round trip)."""
    import fcntl
    import json
    import os
    import pty
    import select
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, *pixels))
    result = tmp_path / "answer.json"
    repo = Path(__file__).resolve().parents[1]
    child = subprocess.Popen([sys.executable, "-c", script, str(result), str(tmp_path)], stdin=slave, stdout=slave,
                             stderr=slave, cwd=repo, env={**os.environ, "PYTHONPATH": str(repo)})
    os.close(slave)
    os.write(master, typed)
    seen, due = b"", []
    try:
        while child.poll() is None:
            if select.select([master], [], [], 0.02)[0]:
                try:
                    seen += os.read(master, 4096)
                except OSError:
                    break
            for question in answers:
                while seen.count(question) > sum(q == question for q, _ in due):
                    due.append((question, time.monotonic() + delay))
            for i, (question, at) in enumerate(due):
                if at and time.monotonic() >= at:
                    os.write(master, answers[question])
                    due[i] = (question, 0.0)
    finally:
        child.wait(timeout=30)
        os.close(master)
    return json.loads(result.read_text())


def test_a_slow_terminal_neither_loses_the_first_key_nor_types_its_answer(tmp_path):
    """Over SSH the terminal answers the graphics question after 0.15 s: the key typed meanwhile reaches the
    app, and no byte of the late answer does (textual-image's own 0.1 s probes dropped the key and left
    `?1;2c`, which the app read as `?`: the help panel opened by itself)."""
    got = terminal_session(tmp_path, b"f", {b"\x1b[c": b"\x1b[?1;2c"}, delay=0.15)
    assert {k: got[k] for k in ("graphics", "typed", "left")} == {"graphics": None, "typed": "f", "left": ""}


def test_enter_typed_before_or_while_the_terminal_is_asked_stays_enter(tmp_path):
    """Enter came as `\\n`, which the app reads as ctrl+j, not enter: typed before the question (the terminal
    still cooked) and while it is asked (cbreak left ICRNL on)."""
    got = terminal_session(tmp_path, b"\r", {b"\x1b[c": b"\r\x1b[?1;2c"}, delay=0.15)
    assert got["typed"] == "\r\r"


def test_the_window_size_in_pixels_gives_the_cell_size_first(tmp_path):
    """A terminal that reports its pixels to the ioctl but does not answer CSI 16t got the default 10x20."""
    got = terminal_session(tmp_path, b"", {b"\x1b[c": b"\x1b[?62;4c"}, delay=0.05, pixels=(720, 432))
    assert (got["graphics"], got["cell"]) == ("sixel", [9, 18])
    answered = terminal_session(tmp_path, b"", {b"\x1b[16t": b"\x1b[6;20;11t", b"\x1b[c": b"\x1b[?62;4c"},
                                delay=0.05)
    assert answered["cell"] == [11, 20], "no pixels from the ioctl: the terminal's answer"


NO_TERMIOS = """
import json, sys
sys.modules["termios"] = None  # what native Windows has: importing it fails
from tui.terminal_probe import TerminalAnswer, ask_terminal
open(sys.argv[1], "w").write(json.dumps({"empty": ask_terminal() == TerminalAnswer()}))
"""


def test_without_termios_the_terminal_is_not_asked(tmp_path):
    """Native Windows has no termios: the probe is skipped (half blocks), the UI still starts."""
    got = terminal_session(tmp_path, b"", {b"\x1b[c": b"\x1b[?62;4c"}, delay=0.05, script=NO_TERMIOS)
    assert got == {"empty": True}


LAUNCH = """
import json, sys
from tui.app import make_app
from tui.link import EnginePaths
from tui.widgets.graphics_preview import detect_graphics

app = make_app(EnginePaths(sys.argv[2]), start_engine=False, attach=False)
answer = detect_graphics()
app.typed_ahead = answer.typed

async def look(pilot):
    await pilot.pause(1.5)
    open(sys.argv[1], "w").write(json.dumps({"mode": app.current_mode}))
    app.exit()

app.run(auto_pilot=look)
"""


def test_keys_typed_during_the_question_come_before_keys_typed_after_it(tmp_path):
    """f typed while the terminal is asked, o as the app starts: o then f left the facebank screen showing
    (Textual reads input before its Mount, where the typed-ahead keys were replayed)."""
    got = terminal_session(tmp_path, b"f", {b"\x1b[c": b"\x1b[?1;2c", b"\x1b[?1049h": b"o"}, delay=0.0,
                           script=LAUNCH)
    assert got == {"mode": "output"}


def test_the_terminal_answer_names_sixel_kitty_and_the_cell_size():
    from tui.terminal_probe import parse_answers

    assert parse_answers("\x1b[?62;4;22c").graphics == "sixel"
    kitty = parse_answers("o\x1b_Gi=31;OK\x1b\\\x1b[6;20;10tp\x1b[?62;22c")
    assert (kitty.graphics, kitty.cell, kitty.typed, kitty.complete) == ("kitty", (10, 20), "op", True)
    assert parse_answers("\x1b_Gi=31;ENOTSUPPORTED\x1b\\\x1b[?1;2c").graphics is None
    assert not parse_answers("q").complete


LATE = """
import json, sys
from textual.widgets import HelpPanel
from tui import terminal_probe
from tui.app import make_app
from tui.link import EnginePaths

app = make_app(EnginePaths(sys.argv[2]), start_engine=False, attach=False)
answer = terminal_probe.ask_terminal(wait_s=0.3)  # the answer comes after this: it reaches the app's input
getattr(terminal_probe, "ignore_late_answers", lambda: None)()  # as run_ui does

async def look(pilot):
    await pilot.pause(2.0)
    open(sys.argv[1], "w").write(json.dumps({"complete": answer.complete, "help": bool(app.screen.query(HelpPanel)),
                                             "mode": app.current_mode}))
    app.exit()

app.run(auto_pilot=look)
"""


def test_a_terminal_answer_later_than_the_wait_is_not_typed_into_the_app(tmp_path):
    """A round trip longer than the probe waits: the answer reached the app as keys and `?` opened the help."""
    got = terminal_session(tmp_path, b"", {b"\x1b[c": b"\x1b[?62;4;22c"}, delay=1.0, script=LATE)
    assert got == {"complete": False, "help": False, "mode": "live"}


USES = """
import json, sys
from tui.terminal_probe import TerminalAnswer, use_graphics
use_graphics(TerminalAnswer(graphics=sys.argv[2], cell=(9, 18)))
import textual_image.widget as widget
from textual_image._terminal import get_cell_size
out = {"renderable": widget.Image._Renderable.__module__ if hasattr(widget.Image, "_Renderable") else
       widget.Image.__module__ + "." + widget.Image.__name__, "cell": list(get_cell_size())}
open(sys.argv[1], "w").write(json.dumps(out))
"""


@pytest.mark.parametrize("graphics", ["kitty", "sixel"])
def test_textual_image_draws_as_the_answer_says_without_asking_again(tmp_path, graphics):
    """On a terminal (a pty), textual-image takes the answer given: it writes no question of its own (each one
    would be answered into the app's input)."""
    import json
    import os
    import pty

    master, slave = pty.openpty()
    result = tmp_path / "uses.json"
    repo = Path(__file__).resolve().parents[1]
    child = subprocess.run([sys.executable, "-c", USES, str(result), graphics], stdin=slave, stdout=slave,
                           stderr=subprocess.PIPE, cwd=repo, env={**os.environ, "PYTHONPATH": str(repo)}, timeout=60)
    os.close(slave)
    written = b""
    while True:
        try:
            chunk = os.read(master, 4096) if select_ready(master) else b""
        except OSError:
            chunk = b""
        if not chunk:
            break
        written += chunk
    os.close(master)
    assert child.returncode == 0, child.stderr.decode()
    assert b"\x1b[c" not in written and b"\x1b_G" not in written and b"\x1b[16t" not in written, written
    got = json.loads(result.read_text())
    assert got["cell"] == [9, 18]
    assert ("sixel" if graphics == "sixel" else "tgp") in got["renderable"].lower(), got


def select_ready(fd: int) -> bool:
    import select

    return bool(select.select([fd], [], [], 0.2)[0])
