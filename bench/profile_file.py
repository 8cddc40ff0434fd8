"""Where a file-mode frame's time goes: CPU ms per frame by thread and by stage, and the encoder's.

    python bench/profile_file.py [--size 1920x1080] [--frames 90] [--json out.json]
    python bench/profile_file.py --clip CLIP --as-is --discard [--backend auto]   # a box without FFmpeg (GPU)

The dev clip, upscaled with FFmpeg to --size, goes through `Engine.run_file` into the real file sink (x264 in
an FFmpeg child), as `blurcast run CLIP -o OUT --no-facebank` does, in this process. Reported per frame:
- CPU ms of each thread (native ones pooled: onnxruntime's intra-op thread, OpenCV's decoder threads) and of
  the encoder child, and the process's wall ms;
- each stage's wall and thread-CPU ms from the first frame on (the warm-up before it, `warm_up_s`, apart):
  decode, the detector's passes and their input preparation, tracking, the anonymizer, the look-ahead, the
  sink's pipe write and the frame loop's wait for detection, and how many calls of it a frame made (a GPU's
  cost is per call: launches, transfers, a thread hand-off).
`--as-is` takes the clip as it is (no FFmpeg re-encode), `--discard` writes into a sink that drops the frames
(no encoder): together they run where there is no FFmpeg, as on the GPU box (bench/gpu_session.sh).
Wall times on a shared machine mean something only within a run; CPU ms per frame is the steadier figure.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = Path(os.environ.get("BLURCAST_DATA", REPO.parent / "shared" / "data"))
CLIP = DATA / "video_hamilton" / "short_hamilton_clip.mp4"

log = logging.getLogger("bench")


class StageClock:
    """Wall and thread-CPU ms summed per stage, from whichever thread runs it."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._lock = threading.Lock()
        self.warm_up_s = 0.0
        self.frames_from = time.perf_counter()  # when the frames' own work began: after the warm-up

    def reset(self) -> None:
        with self._lock:
            self.wall.clear()
            self.cpu.clear()
            self.calls.clear()
            self.frames_from = time.perf_counter()

    def wrap(self, owner, attr: str, stage: str) -> None:
        inner = getattr(owner, attr)

        def timed(*args, **kwargs):
            wall, cpu = time.perf_counter(), time.thread_time()
            try:
                return inner(*args, **kwargs)
            finally:
                with self._lock:
                    self.wall[stage] += (time.perf_counter() - wall) * 1000
                    self.cpu[stage] += (time.thread_time() - cpu) * 1000
                    self.calls[stage] += 1
        setattr(owner, attr, timed)


def instrument(engine, clock: StageClock) -> None:
    import engine.stages.detectors.yunet as yunet

    pipeline, detector = engine.pipeline, engine.pipeline.detector
    clock.wrap(engine.source, "read", "decode (frame loop)")
    clock.wrap(detector, "detect", "detector: all")
    clock.wrap(detector.runner, "run", "detector: network")
    clock.wrap(detector, "_tile_pass", "detector: tiles (network included)")
    clock.wrap(detector, "_look_again", "detector: second look (network included)")
    clock.wrap(detector, "_decode", "detector: output decoding + NMS")
    for attr, stage in (("letterbox", "detector: letterbox"), ("rescale", "detector: resize"),
                        ("_derived", "detector: mirror/mosaic copy"), ("_planar", "detector: planar float input")):
        if hasattr(yunet, attr):  # what a checkout has (main or this branch)
            clock.wrap(yunet, attr, stage)
    clock.wrap(pipeline, "_detect", "frame loop: wait for detection")
    real_warm_up = pipeline.warm_up

    def warm_up(*args, **kwargs):  # start-up (CUDA plans, OpenVINO compiles) reported apart from the frames
        started = time.perf_counter()
        try:
            return real_warm_up(*args, **kwargs)
        finally:
            clock.warm_up_s += time.perf_counter() - started
            clock.reset()
    pipeline.warm_up = warm_up
    clock.wrap(pipeline.tracker, "update", "frame loop: track")
    clock.wrap(pipeline.identifier, "update", "frame loop: identify")
    clock.wrap(engine, "_look_ahead", "frame loop: anonymize held frames (look-ahead)")
    clock.wrap(engine, "_emit", "sink-writer: emit (pipe write, preview)")
    real_process = pipeline.process

    def process(frame, index, dt):
        anonymizer = pipeline.anonymizer
        if not getattr(anonymizer, "_clocked", False):
            clock.wrap(anonymizer, "apply", "frame loop: anonymize")
            anonymizer._clocked = True
        return real_process(frame, index, dt)
    pipeline.process = process


def thread_cpu_s() -> dict[int, float]:
    ticks = os.sysconf("SC_CLK_TCK")
    out = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(task.name)] = (int(fields[11]) + int(fields[12])) / ticks
    return out


class DiscardSink:
    """Takes every SafeFrame and keeps none: the engine's cost without an encoder's."""

    name = "discard"

    def write(self, frame) -> None:
        pass

    def close(self) -> None:
        pass


def run(clip: Path, out: Path | None, backend: str = "auto") -> dict:
    from engine.config import Settings
    from engine.runner import Engine
    from engine.service import open_sink
    from engine.stages.source import VideoSource

    source = VideoSource(str(clip))
    sink = DiscardSink() if out is None else open_sink("file", source, str(out))
    engine = Engine(Settings(backend=backend), source, [sink])
    clock = StageClock()
    instrument(engine, clock)
    names: dict[int, str] = {}
    stop = threading.Event()

    def name_threads() -> None:  # the engine's threads, named while they live
        while not stop.wait(0.2):
            names.update({t.native_id: t.name.split("_")[0] for t in threading.enumerate()})
    namer = threading.Thread(target=name_threads, daemon=True)
    namer.start()
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    tasks0, wall0, cpu0 = thread_cpu_s(), time.perf_counter(), time.process_time()
    clock.frames_from = time.perf_counter()
    frames = engine.run_file()
    frames_wall = time.perf_counter() - clock.frames_from
    tasks1 = thread_cpu_s()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    engine.close()  # the encoder finishes here: its CPU is the child's
    stop.set()
    children1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    encoder = (children1.ru_utime + children1.ru_stime - children0.ru_utime - children0.ru_stime)
    threads: dict[str, float] = defaultdict(float)
    for tid, seconds in tasks1.items():
        label = names.get(tid, "native (ORT intra-op, OpenCV/FFmpeg decoder)")
        threads[label] += (seconds - tasks0.get(tid, 0.0)) * 1000 / frames
    per = 1000 / frames
    return {
        "frames": frames, "fps": round(frames / wall, 2), "wall_ms_per_frame": round(wall * per, 1),
        "warm_up_s": round(clock.warm_up_s, 2), "fps_after_warm_up": round(frames / frames_wall, 2),
        "process_cpu_ms_per_frame": round(cpu * per, 1), "encoder_cpu_ms_per_frame": round(encoder * per, 1),
        "cpu_ms_per_frame_by_thread": {k: round(v, 1) for k, v in sorted(threads.items(), key=lambda kv: -kv[1])},
        "runner": getattr(engine.pipeline.detector, "runner_name", "?"),
        "stages_ms_per_frame": {k: {"wall": round(clock.wall[k] / frames, 2), "cpu": round(clock.cpu[k] / frames, 2),
                                    "calls": round(clock.calls[k] / frames, 2)} for k in sorted(clock.wall)},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="1920x1080")
    parser.add_argument("--frames", type=int, default=90)
    parser.add_argument("--clip", type=Path, default=CLIP)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--as-is", action="store_true", help="the clip as it is: no FFmpeg scaling or frame limit")
    parser.add_argument("--discard", action="store_true", help="a sink that drops frames, not the x264 file sink")
    parser.add_argument("--backend", default="auto", help="the networks' backend (Settings.backend)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    w, h = args.size.split("x")
    with tempfile.TemporaryDirectory(prefix="blurcast-profile-file-") as tmp:
        clip = args.clip if args.as_is else Path(tmp) / "clip.mp4"
        if not args.as_is:
            subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(args.clip), "-vf", f"scale={w}:{h}", "-frames:v",
                            str(args.frames), "-c:v", "libx264", "-crf", "16", "-preset", "veryfast", "-an",
                            str(clip)], check=True)
        figures = run(clip, None if args.discard else Path(tmp) / "out.mp4", args.backend)
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
