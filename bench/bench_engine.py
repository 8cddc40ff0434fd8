"""Benchmark: Blurcast against deface on the same input, in the same run, reported as ratios.

    python bench/bench_engine.py [--clip PATH] [--seconds 20] [--json out.json]

1. File mode (every frame, encode to H.264) at 640x360, 1280x720 and 1920x1080: wall-clock fps of
   `blurcast run` and of `deface` (CenterFace, its default settings), each a fresh process, model load
   included, same input.
2. Live mode at 1280x720 and 1920x1080, 30 fps: the clip played as a camera (paced), anonymized and handed
   to a sink that discards; reports output fps, added latency p50/p95 (capture -> sink) and dropped frames.
3. `--vertical`: the 720x1280 phone selfie, detection sized by area against the old width rule.
The larger inputs are the dev clip upscaled with FFmpeg (so both tools see exactly the same pixels).
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


def upscale(src: Path, dst: Path, width: int, height: int, frames: int | None = None) -> Path:
    cut = ["-frames:v", str(frames)] if frames else []
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(src), "-vf", f"scale={width}:{height}", *cut,
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
                         "--backend", backend, "--no-facebank"])
        result[f"blurcast_{backend}_fps"] = frames / seconds
        if "deface_fps" in result:
            result[f"ratio_{backend}_vs_deface"] = result[f"blurcast_{backend}_fps"] / result["deface_fps"]
    return result


def vertical(clip: Path, out_dir: Path) -> dict:
    """A 720x1280 phone video: detection sized by the frame's area (now) against the old width rule, which
    enlarged it 1.5x (the same pixels as `detect_width=1920` by area). Same run, fresh processes."""
    frames = count_frames(clip)
    result: dict = {"frames": frames}
    for label, extra in (("area_rule", []), ("old_width_rule", ["--set", "detect_width=1920"])):
        seconds = timed([sys.executable, "-m", "blurcast", "run", str(clip), "-o", str(out_dir / "vertical.mp4"),
                         "--no-facebank", *extra])
        result[f"{label}_fps"] = frames / seconds
    result["speedup"] = result["area_rule_fps"] / result["old_width_rule_fps"]
    return result


def live_mode(clip: Path, seconds: float, backend: str) -> dict:
    import threading

    from bench.sinks import DiscardSink
    from engine.config import Settings
    from engine.runner import Engine
    from engine.stages.source import VideoSource

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
    parser.add_argument("--frames", type=int, help="use only the clip's first N frames (a busy machine)")
    parser.add_argument("--sizes", default="640x360,1280x720,1920x1080", help="file-mode sizes")
    parser.add_argument("--live-sizes", default="1280x720,1920x1080", help="live-mode sizes")
    parser.add_argument("--vertical", action="store_true", help="also the 720x1280 phone video, area vs width rule")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not args.clip.exists():
        log.error("no clip at %s (set BLURCAST_DATA)", args.clip)
        return 2
    report: dict = {"file_mode": {}, "live_mode": {}}
    with tempfile.TemporaryDirectory(prefix="blurcast-bench-") as tmp:
        out = Path(tmp)
        sized = {"640x360": upscale(args.clip, out / "clip360.mp4", 640, 360, args.frames),
                 "1280x720": upscale(args.clip, out / "clip720.mp4", 1280, 720, args.frames),
                 "1920x1080": upscale(args.clip, out / "clip1080.mp4", 1920, 1080, args.frames)}
        for label in args.sizes.split(","):
            r = file_mode(sized[label], out, args.backends.split(","))
            report["file_mode"][label] = r
            log.info("file %s: %s", label, json.dumps(r))
        for label in args.live_sizes.split(","):
            for backend in args.backends.split(","):
                r = live_mode(sized[label], args.seconds, backend)
                report["live_mode"][f"{label} {backend}"] = r
                log.info("live %s %s: %s", label, backend, json.dumps(r))
        selfie = DATA / "video_unannotated" / "selfie_portrait_d13.mp4"
        if args.vertical and selfie.exists():
            report["vertical_720x1280"] = vertical(selfie, out)
            log.info("vertical: %s", json.dumps(report["vertical_720x1280"]))
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
