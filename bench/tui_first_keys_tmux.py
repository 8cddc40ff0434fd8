"""The first keys at launch, in a real tmux at 80x24 behind a link with latency (an SSH session): the UI runs in
a pty relayed both ways with a one-way delay, `f` is typed while the UI starts (before it takes the terminal),
and the screen is read 8 s later. Before the fix, textual-image's 0.1 s terminal probes read `f` as a bad answer
(the key was lost) and left the late answer's tail (`?1;2c`) to the app as keys (`?` opened the keys panel).

    python bench/tui_first_keys_tmux.py [--delay 0.15] [--runs 3]
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from engine.client import EnginePaths, stop_background  # noqa: E402

DATA = Path(os.environ.get("BLURCAST_DATA", REPO.parent / "shared" / "data"))
CLIP = DATA / "video_hamilton" / "short_hamilton_clip.mp4"
WEIGHTS = os.environ.get("BLURCAST_WEIGHTS", str(REPO / "weights"))

RELAY = r'''
import fcntl, heapq, os, pty, select, struct, sys, termios, time, tty
delay, cmd = float(sys.argv[1]), sys.argv[2:]
size = fcntl.ioctl(0, termios.TIOCGWINSZ, b"\0" * 8)
pid, fd = pty.fork()
if pid == 0:
    os.execvp(cmd[0], cmd)
fcntl.ioctl(fd, termios.TIOCSWINSZ, size)
tty.setraw(0)
due, n = [], 0
while True:
    wait = max(0.0, due[0][0] - time.monotonic()) if due else 1.0
    for src in select.select([0, fd], [], [], wait)[0]:
        try:
            data = os.read(src, 65536)
        except OSError:
            data = b""
        if not data and src == fd:
            sys.exit(0)
        n += 1
        heapq.heappush(due, (time.monotonic() + delay, n, fd if src == 0 else 1, data))
    while due and due[0][0] <= time.monotonic():
        _, _, target, data = heapq.heappop(due)
        os.write(target, data)
'''


def one_run(delay: float) -> tuple[bool, bool]:
    """(the early `f` showed the facebank, the keys panel opened by itself)."""
    home = Path(tempfile.mkdtemp(prefix="blurcast-keys-"))
    relay = home / "relay.py"
    relay.write_text(RELAY)
    server = f"blurcast-keys-{os.getpid()}"

    def tmux(*args: str) -> str:
        return subprocess.run(["tmux", "-L", server, *args], capture_output=True, text=True).stdout

    cmd = (f"cd {REPO} && BLURCAST_HOME={home} BLURCAST_WEIGHTS={WEIGHTS} PYTHONPATH={REPO} {sys.executable} "
           f"{relay} {delay} {sys.executable} -m tui --source {CLIP}; sleep 60")
    tmux("new-session", "-d", "-s", "ui", "-x", "80", "-y", "24", cmd)
    try:
        time.sleep(0.3)  # the UI is still importing: the key waits in the terminal's input
        tmux("send-keys", "-t", "ui", "f")
        time.sleep(8)
        screen = tmux("capture-pane", "-p", "-t", "ui")
    finally:
        tmux("kill-server")
        stop_background(EnginePaths(home))
    return "people on the facebank" in screen, "Focus Next" in screen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay", type=float, default=0.15, help="one-way latency of the link, seconds")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    results = [one_run(args.delay) for _ in range(args.runs)]
    for i, (acted, panel) in enumerate(results):
        opened = "OPENED BY ITSELF" if panel else "closed"
        print(f"run {i}: early f {'acted' if acted else 'LOST'}; keys panel {opened}")
    print(f"{sum(a for a, _ in results)}/{len(results)} early keys acted, "
          f"{sum(p for _, p in results)}/{len(results)} phantom keys panels, one-way delay {args.delay:.2f} s")


if __name__ == "__main__":
    main()
