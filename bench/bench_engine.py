"""Benchmark: Blurcast against deface on the same input, in the same run, reported as ratios.

    python bench/bench_engine.py [--clip PATH] [--seconds 20] [--json out.json]

1. File mode (every frame, encode to H.264) at 640x360 and 1280x720: wall-clock fps of `blurcast run` and of
   `deface` (CenterFace, its default settings), each a fresh process, model load included, same input.
2. Live mode at 1280x720, 30 fps: the clip played as a camera (paced), anonymized and handed to a sink
   that discards; reports output fps, added latency p50/p95 (capture -> sink) and dropped input frames.
The 1280x720 input is the dev clip upscaled with FFmpeg (so both tools see exactly the same pixels).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = Path(os.environ.get("BLURCAST_DATA", REPO.parent / "shared" / "data"))

log = logging.getLogger("bench")


def count_frames(path: Path) -> int:
    import cv2

    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.grab():
        n += 1
    return n


def upscale(src: Path, dst: Path, width: int, height: int) -> Path:
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(src), "-vf", f"scale={width}:{height}",
                    "-c:v", "libx264", "-crf", "16", "-preset", "veryfast", "-an", str(dst)], check=True)
    return dst


def timed(cmd: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def file_mode(clip: Path, out_dir: Path, backends: list[str]) -> dict:
    """Wall-clock fps of each tool as a fresh process on the same clip (model load included)."""
    frames = count_frames(clip)
    result: dict = {"frames": frames}
    deface = shutil.which("deface") or str(Path(sys.executable).with_name("deface"))
    if Path(deface).exists():
        result["deface_fps"] = frames / timed([deface, str(clip), "-o", str(out_dir / "deface.mp4")])
    for backend in backends:
        seconds = timed([sys.executable, "-m", "blurcast", "run", str(clip), "-o", str(out_dir / f"ours-{backend}.mp4"),
                         "--backend", backend])
        result[f"blurcast_{backend}_fps"] = frames / seconds
        if "deface_fps" in result:
            result[f"ratio_{backend}_vs_deface"] = result[f"blurcast_{backend}_fps"] / result["deface_fps"]
    return result


class DiscardSink:
    """Takes frames like the virtual camera would, keeps nothing (isolates the engine's own cost)."""

    name = "discard"

    def write(self, frame) -> None:
        _ = frame.image.shape

    def close(self) -> None:
        pass


def live_mode(clip: Path, seconds: float, backend: str) -> dict:
    import threading

    from engine.config import Settings
    from engine.runner import Engine
    from engine.source import VideoSource

    engine = Engine(Settings(backend=backend), VideoSource(str(clip), loop=True), [DiscardSink()])
    timer = threading.Timer(seconds, engine.stop_event.set)
    timer.start()
    engine.run_live()
    t = engine.telemetry()
    engine.close()
    return {"fps": t["fps"], "latency_p50_ms": t["latency_p50_ms"], "latency_p95_ms": t["latency_p95_ms"],
            "dropped": t["dropped"], "frames": t["frames"], "source_fps": t["source"]["fps"], "backend": backend,
            "detector": t["detector"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clip", type=Path, default=DATA / "video_hamilton" / "short_hamilton_clip.mp4")
    parser.add_argument("--seconds", type=float, default=20.0, help="live-mode run time")
    parser.add_argument("--backends", default="onnxruntime,torch")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not args.clip.exists():
        log.error("no clip at %s (set BLURCAST_DATA)", args.clip)
        return 2
    report: dict = {"file_mode": {}, "live_mode": {}}
    with tempfile.TemporaryDirectory(prefix="blurcast-bench-") as tmp:
        out = Path(tmp)
        clip720 = upscale(args.clip, out / "clip720.mp4", 1280, 720)
        for label, clip in (("640x360", args.clip), ("1280x720", clip720)):
            r = file_mode(clip, out, args.backends.split(","))
            report["file_mode"][label] = r
            log.info("file %s: %s", label, json.dumps(r))
        for backend in args.backends.split(","):
            r = live_mode(clip720, args.seconds, backend)
            report["live_mode"][f"1280x720 {backend}"] = r
            log.info("live 1280x720 %s: %s", backend, json.dumps(r))
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
