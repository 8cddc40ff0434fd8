"""Does the look-ahead slider say what the engine does? For each look-ahead, the delay the UI shows for it
(frames at the source's rate) beside the engine's own measure (`video_delay_ms`: since stop 40 the median delay
from capture to the outputs measured on the frames sent; before, processing p50 + the median time a frame was
held), on an engine playing the dev clip live.

    python bench/lookahead_delay.py [--frames 0 3 8] [--seconds 8]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = Path(os.environ.get("BLURCAST_DATA", REPO.parent / "shared" / "data"))
CLIP = DATA / "video_hamilton" / "short_hamilton_clip.mp4"

from engine.client import ControlClient, EnginePaths, start_background, stop_background  # noqa: E402
from tui.format import lookahead_cost, lookahead_cost_ms  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[0, 3, 8])
    parser.add_argument("--seconds", type=float, default=8.0, help="settling time per look-ahead")
    args = parser.parse_args()
    paths = EnginePaths(Path(tempfile.mkdtemp(prefix="lookahead-delay-")))
    start_background(["--source", str(CLIP), "--loop"], paths)

    def request(cmd: str, **kw):
        with ControlClient(paths.socket) as client:
            return client.request(cmd, **kw)

    try:
        print("frames | UI shows | UI's cost ms | engine: processing p50 ms | video_delay_ms | added by holding ms")
        for n in args.frames:
            request("set", settings={"lookahead_frames": n})
            time.sleep(args.seconds)
            t = request("status")
            fps = t["source"]["fps"]
            added = t["video_delay_ms"] - t["latency_p50_ms"]
            print(f"{n} | {lookahead_cost(n, fps)[0]} | {lookahead_cost_ms(n, fps):.1f} | {t['latency_p50_ms']} | "
                  f"{t['video_delay_ms']} | {added:.1f}")
    finally:
        stop_background(paths)
    return 0


if __name__ == "__main__":
    sys.exit(main())
