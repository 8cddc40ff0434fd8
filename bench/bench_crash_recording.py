"""How much of a recording survives kill -9: the engine records the dev clip, and 3 s (of video) in, either
the whole process group (engine + encoder: a power cut) or the encoder alone is killed; ffprobe then counts
the frames a player can read. Prints each trial and the worst case.

    python bench/bench_crash_recording.py [--trials 5] [--at 3.0]
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.client import ControlClient, EnginePaths, start_background

log = logging.getLogger("bench_crash_recording")
REPO = Path(__file__).resolve().parents[1]
CLIP = Path(os.environ.get("BLURCAST_DATA") or REPO.parent / "shared" / "data") / "video_hamilton" / \
    "short_hamilton_clip.mp4"
FPS = 30000 / 1001


def readable_frames(path: Path) -> int:
    done = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-count_packets", "-show_entries",
                           "stream=nb_read_packets", "-of", "csv=p=0", str(path)], capture_output=True, text=True)
    return int(done.stdout.strip().strip(",") or 0) if done.returncode == 0 else 0


def encoder_of(pid: int) -> int:
    kids = [int(k) for task in Path(f"/proc/{pid}/task").iterdir() for k in (task / "children").read_text().split()]
    [encoder] = kids
    return encoder


def trial(kind: str, at_s: float, folder: Path) -> float:
    paths = EnginePaths(folder / "state")
    pid = start_background(["--source", str(CLIP), "--loop", "--no-facebank"], paths)
    try:
        with ControlClient(paths.socket, timeout=10) as client:
            client.request("sink_start", kind="file", path=str(folder / "rec.mp4"))
            start = client.request("status")["frames"]
            while client.request("status")["frames"] < start + at_s * FPS:
                time.sleep(0.02)
        os.kill(encoder_of(pid), signal.SIGKILL) if kind == "encoder" else os.killpg(pid, signal.SIGKILL)
        time.sleep(1.0)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    return readable_frames(folder / "rec.mp4") / FPS


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--at", type=float, default=3.0, help="seconds of video recorded before the kill")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for kind in ("power-cut", "encoder"):
        kept = []
        for i in range(args.trials):
            with tempfile.TemporaryDirectory(prefix="blurcast-crash-") as tmp:
                kept.append(trial(kind, args.at, Path(tmp)))
            log.info("%s trial %d: %.2f s of %.1f s readable", kind, i + 1, kept[-1], args.at)
        log.info("%s: worst %.2f s, mean %.2f s readable of %.1f s (%d trials)", kind, min(kept),
                 sum(kept) / len(kept), args.at, len(kept))
    return 0


if __name__ == "__main__":
    sys.exit(main())
