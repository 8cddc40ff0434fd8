"""Issue 10's done-when, timed in a real tmux at 80x24: the UI starts an engine on the dev clip (fresh, empty
facebank), the performer's row is picked by its number (found by IoU with gt.json's `allow` boxes), `e`, name
him. Prints when the enrolment is done and when he is first visible (both from Enter on the name), then how
many telemetry samples show him visible while in view; saves ANSI captures for the README picture
(`python scripts/ansi_to_png.py OUT/done0.ansi docs/live.png`).

    python bench/tui_enrol_tmux.py [OUT_FOLDER]
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from engine.client import ControlClient, EnginePaths, stop_background  # noqa: E402

WT, PY = str(REPO), sys.executable
DATA = Path(os.environ.get("BLURCAST_DATA", REPO.parent / "shared" / "data"))
CLIP = str(DATA / "video_hamilton" / "short_hamilton_clip.mp4")
if __name__ == "__main__":  # before anything runs: `--help` is not a folder to write captures into
    import argparse

    _parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    _parser.add_argument("out", nargs="?", type=Path, help="folder for the ANSI captures (default: a temp folder)")
    _out = _parser.parse_args().out
else:
    _out = None
OUT = _out or Path(tempfile.mkdtemp(prefix="blurcast-enrol-"))
OUT.mkdir(parents=True, exist_ok=True)
HOME = Path(tempfile.mkdtemp(prefix="blurcast-home-"))
SERVER = f"blurcast-bench-{os.getpid()}"
WEIGHTS = os.environ.get("BLURCAST_WEIGHTS", str(REPO / "weights"))
GT = json.loads((DATA / "video_hamilton" / "gt.json").read_text())
ALLOW = [f["box"] for f in GT["faces"] if f["label"] == "allow"]
OTHERS = [f["box"] for f in GT["faces"] if f["label"] != "allow"]


def iou(a: list[float], b: list[float]) -> float:
    x1, y1, x2, y2 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def is_performer(box: list[float]) -> bool:
    return max(iou(box, b) for b in ALLOW) > 0.5 and max(iou(box, b) for b in OTHERS) < 0.3


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", "-L", SERVER, *args], capture_output=True, text=True).stdout


def status() -> dict:
    with ControlClient(EnginePaths(HOME).socket) as client:
        return client.request("status")


def enrol_performer() -> float:
    """Pick the performer's row by number, e, "Lin", Enter; retry (as a user would) until the engine has him.
    Returns the monotonic time of the Enter that worked."""
    for attempt in range(8):
        faces = [f for f in status()["faces"] if not f["lost_frames"] and is_performer(f["box"])]
        if not faces:
            time.sleep(0.3)
            continue
        track = faces[0]["track_id"]
        tmux("send-keys", "-t", "ui", *str(track))
        time.sleep(0.3)
        tmux("send-keys", "-t", "ui", "e")
        time.sleep(0.8)
        tmux("send-keys", "-t", "ui", "-l", "Lin")
        tmux("send-keys", "-t", "ui", "Enter")
        named = time.monotonic()
        while time.monotonic() - named < 15:
            e = status().get("enrolment") or {}
            if e.get("track_id") == track and e.get("state") in ("done", "failed"):
                print(f"attempt {attempt}: track #{track}, enrolment {e['state']} {time.monotonic() - named:.2f} s "
                      f"after Enter: {e.get('message')}")
                if e["state"] == "done":
                    return named
                break
            time.sleep(0.1)
        time.sleep(2)
    raise SystemExit("the performer could not be enrolled in 8 attempts")


def watch(named: float) -> None:
    first_visible, samples, shots = None, [], 0
    while time.monotonic() - named < 25:
        for f in status()["faces"]:
            if f["lost_frames"] or not is_performer(f["box"]):
                continue
            at = time.monotonic() - named
            samples.append((round(at, 2), f["track_id"], f["state"], f["similarity"]))
            if f["state"] == "visible" and first_visible is None:
                first_visible = at
            if f["state"] == "visible" and at > 6 and shots < 3:
                OUT.joinpath(f"done{shots}.ansi").write_text(tmux("capture-pane", "-e", "-p", "-t", "ui"))
                shots += 1
        time.sleep(0.1)
    if first_visible is None:
        print("never visible")
        return
    before = [s for s in samples if s[0] < first_visible]
    after = [s for s in samples if s[0] >= first_visible]
    print(f"first visible {first_visible:.2f} s after Enter; in view before that: {before[:10]}")
    print(f"after that visible in {sum(s[2] == 'visible' for s in after)}/{len(after)} samples in view; "
          f"blurred: {[s for s in after if s[2] != 'visible'][:10]}")


def main() -> None:
    cmd = (f"cd {WT} && COLORTERM=truecolor BLURCAST_HOME={HOME} BLURCAST_WEIGHTS={WEIGHTS} PYTHONPATH={WT} "
           f"{PY} -m tui --source {CLIP}")
    tmux("new-session", "-d", "-s", "ui", "-x", "80", "-y", "24", cmd)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and "LIVE" not in tmux("capture-pane", "-p", "-t", "ui"):
            time.sleep(0.5)
        time.sleep(3)
        watch(enrol_performer())
    finally:
        tmux("kill-server")
        stop_background(EnginePaths(HOME))
        print(f"captures in {OUT}")


if __name__ == "__main__":
    main()
