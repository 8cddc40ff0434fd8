"""Where a live frame's time goes: per-stage wall and CPU time at p50 and p95, and what the slow frames had in common.

    python bench/profile_live.py [--size 1920x1080] [--seconds 15] [--allow PHOTO] [--clip VIDEO] [--json out.json]

The dev clip (or `--clip`, e.g. a WIDER crowd rendered by bench/widerface_clips.py; scaled with FFmpeg to --size,
looped) is played as a 30 fps camera through `Engine.run_live` into a sink that discards, as bench/bench_engine.py
does. Each stage is wrapped with a timer (wall and thread
CPU): the source's decode, the wait in the mailbox, the detector's main pass and tile pass (on its own thread),
the pipeline's wait for detection, tracking, identification, anonymizing and the sinks. Frames above the p90
latency are then compared with the rest, stage by stage: which stage makes a frame slow. `--allow PHOTO`
enrols a person from a photo (the dev clip's performer), so that identification and embeddings take part.
Wall times on a shared machine are only comparable inside one run; thread CPU ms are the steadier figure.
Also reported: CPU ms per output frame of the whole process and of each thread, native ones pooled (onnxruntime's
intra-op pool and OpenCV's decoder threads are invisible to a Python thread's own CPU time), and every garbage
collection's pause (`gc`: count, gen-2 count, longest, total).
Two delays: `latency` is capture to anonymized (what the scheduler steers by); `output_delay` is capture to the
hand-over to the outputs, which adds the frames the look-ahead holds back (one while coasting): the added delay a
viewer gets, and the figure to hold against a latency bound.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = Path(os.environ.get("BLURCAST_DATA", REPO.parent / "shared" / "data"))
CLIP = DATA / "video_hamilton" / "short_hamilton_clip.mp4"

log = logging.getLogger("bench")
from engine import pipeline as pipeline_module  # noqa: E402  (LIVE_CAMERA_MOTION: a variant sets it)
from engine.runner import HEADROOM_CPU_SHARE as CPU_SHARE  # noqa: E402  (the engine's own gate; a variant lifts it)
from engine.stages.anonymize import BULK_MIN_REGIONS  # noqa: E402  (the same: a variant sets it back)


class Timings:
    """Per frame (by pipeline frame index where known), per stage: wall ms and thread CPU ms."""

    def __init__(self) -> None:
        self.rows: dict[int, dict[str, float]] = defaultdict(dict)
        self.loose: dict[str, list[float]] = defaultdict(list)  # stages not tied to a frame index
        self.current = -1  # frame index the frame loop is on

    def wrap(self, owner, attr: str, stage: str, per_frame: bool = True) -> None:
        inner = getattr(owner, attr)

        def timed(*args, **kwargs):
            wall, cpu = time.perf_counter(), time.thread_time()
            try:
                return inner(*args, **kwargs)
            finally:
                wall_ms = (time.perf_counter() - wall) * 1000
                cpu_ms = (time.thread_time() - cpu) * 1000
                if per_frame:
                    row = self.rows[self.current]
                    row[stage] = row.get(stage, 0.0) + wall_ms
                    row[stage + "_cpu"] = row.get(stage + "_cpu", 0.0) + cpu_ms
                else:
                    self.loose[stage].append(wall_ms)
                    self.loose[stage + "_cpu"].append(cpu_ms)
        setattr(owner, attr, timed)


def instrument(engine, timings: Timings) -> None:
    pipeline = engine.pipeline
    detector = pipeline.detector
    timings.wrap(detector, "_search_tiles", "tiles")  # the detector's thread or its tiles' own, for the frame it serves
    timings.wrap(detector, "detect", "detect_total")
    timings.wrap(pipeline.tracker, "update", "track")
    timings.wrap(pipeline.identifier, "update", "identify")
    timings.wrap(engine, "_emit", "sinks")
    timings.wrap(engine.source, "read", "decode", per_frame=False)
    anonymize = pipeline.anonymizer.apply
    real_process = pipeline.process

    def process(frame, index, dt):
        timings.current = index
        pipeline.anonymizer.apply = _timed_apply(anonymize, timings)
        return real_process(frame, index, dt)
    pipeline.process = process


def _timed_apply(apply, timings: Timings):
    def timed(*args, **kwargs):
        wall, cpu = time.perf_counter(), time.thread_time()
        out = apply(*args, **kwargs)
        row = timings.rows[timings.current]
        row["anonymize"] = (time.perf_counter() - wall) * 1000
        row["anonymize_cpu"] = (time.thread_time() - cpu) * 1000
        return out
    return timed


def thread_cpu_s() -> dict[int, float]:
    """CPU seconds of every thread of this process, native ones included (onnxruntime's pool, OpenCV's and
    FFmpeg's decoder threads are invisible to Python's thread_time)."""
    ticks = os.sysconf("SC_CLK_TCK")
    out = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        out[int(task.name)] = (int(fields[11]) + int(fields[12])) / ticks  # utime + stime
    return out


def by_thread(before: dict[int, float], after: dict[int, float], frames: int) -> dict[str, float]:
    """CPU ms per output frame, by Python thread name; native threads pooled as "native (ORT, OpenCV...)"."""
    names = {t.native_id: t.name.split("_")[0] for t in threading.enumerate()}
    out: dict[str, float] = defaultdict(float)
    for tid, cpu in after.items():
        out[names.get(tid, "native (ORT, OpenCV...)")] += (cpu - before.get(tid, 0.0)) * 1000 / max(frames, 1)
    return {k: round(v, 1) for k, v in sorted(out.items(), key=lambda kv: -kv[1])}


class GcPauses:
    """Every garbage collection during the run: when and how long (a gen-2 pass can hold the GIL for ms)."""

    def __init__(self) -> None:
        self.pauses: list[tuple[int, float]] = []  # (generation, ms)
        self._start = 0.0

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.pauses.append((info["generation"], (time.perf_counter() - self._start) * 1000))

    def summary(self) -> dict:
        ms = [p for _, p in self.pauses]
        return {"collections": len(ms), "gen2": sum(g == 2 for g, _ in self.pauses),
                "max_ms": round(max(ms), 2) if ms else 0.0, "total_ms": round(sum(ms), 1)}


def run(clip: Path, seconds: float, allow: Path | None, variant: dict[str, bool]) -> dict:
    from bench.sinks import DiscardSink
    from engine.config import Settings
    from engine.runner import Engine
    from engine.stages.source import VideoSource

    settings = Settings()
    identifier = _identifier(settings, allow) if allow else None
    engine = Engine(settings, VideoSource(str(clip), loop=True), [DiscardSink()], identifier=identifier)
    from engine import runner
    from engine.recognition import identify_facebank
    from engine.stages import anonymize

    runner.LIVE_COAST = int(variant.get("coast", True))
    identify_facebank.WAIT_FOR_FIRST = variant.get("first_wait", True)
    anonymize.BULK_MIN_REGIONS = BULK_MIN_REGIONS if variant.get("crowd_cover", True) else 1 << 30
    pipeline_module.LIVE_CAMERA_MOTION = int(variant.get("camera_motion", True))
    runner.HEADROOM_CPU_SHARE = CPU_SHARE if variant.get("cpu_gate", True) else float("inf")
    engine.detect_on_arrival = variant["on_arrival"]
    if variant.get("preview"):  # as while the UI's live screen asks for previews (3 a second)
        engine._preview_wanted_until = float("inf")
    engine.shed_when_behind = variant.get("shed", variant["on_arrival"])
    if not variant["background"] and identifier is not None:
        identifier.run_in_background = None  # the frame loop embeds on the frame path, as before
    timings = Timings()
    instrument(engine, timings)
    output_delays = _time_outputs(engine)
    reports: dict[int, tuple[float, float, int, bool]] = {}  # index -> (latency ms, detect wait ms, faces, any visible)
    record = engine.stats.record

    def recorded(report, latency_ms):
        reports[report.index] = (latency_ms, report.detect_ms or 0.0, len(report.faces),
                                 any(f.visible for f in report.faces))
        record(report, latency_ms)
    engine.stats.record = recorded
    gc_pauses = GcPauses()
    gc.callbacks.append(gc_pauses)
    cpu0, wall0, start_frames = time.process_time(), time.monotonic(), engine.stats.frames
    timer = threading.Timer(seconds, engine.stop_event.set)
    timer.start()
    threads: dict[str, float] = {}
    sampler = threading.Timer(seconds - 0.5, lambda: threads.update(by_thread(tasks0, thread_cpu_s(),
                                                                              engine.stats.frames - frames0)))
    tasks0, frames0 = thread_cpu_s(), engine.stats.frames
    sampler.start()  # before the end: the engine's threads are still alive to be named
    engine.run_live()
    process_cpu_s = time.process_time() - cpu0
    process_cpu_pct = 100 * process_cpu_s / (time.monotonic() - wall0)
    gc.callbacks.remove(gc_pauses)
    t = engine.telemetry()
    engine.close()
    figures = summarise(timings, reports, t, process_cpu_pct)
    delays = [output_delays[i] for i in sorted(output_delays)[30:]]  # the first second warms up, as summarise's
    figures["output_delay_p50_ms"], figures["output_delay_p95_ms"] = _pct(delays, 50), _pct(delays, 95)
    figures["cpu_ms_per_frame_by_thread"] = threads
    # per frame that went out (CPU spent on frames dropped behind included: it is what the output cost)
    figures["process_cpu_ms_per_frame"] = round(1000 * process_cpu_s / max(engine.stats.frames - start_frames, 1), 1)
    figures["gc"] = gc_pauses.summary()
    figures["shedding_frames"] = t["shedding_frames"]
    figures["coasted_frames"] = t["coasted_frames"]
    figures["whole_frames"] = t["whole_frames"]  # blurred whole: a fault, a deadline, a coasted frame no detection
    figures["coasted_undetected"] = t["coasted_undetected"]  # reached (since stop 43)
    figures["faults"] = t["faults"]
    # the engine's OBS offset: its own median delay to the outputs over its last 240 frames (since stop 40)
    figures["video_delay_p50_ms"] = t["video_delay_ms"]
    figures["embedded"] = getattr(identifier, "embedded_total", 0)
    return figures


VARIANTS = {"now": {"on_arrival": True, "background": True}, "before": {"on_arrival": False, "background": False},
            "no-arrival": {"on_arrival": False, "background": True},
            "no-background": {"on_arrival": True, "background": False},
            "no-coast": {"on_arrival": True, "background": True, "coast": False},
            "ui-attached": {"on_arrival": True, "background": True, "preview": True},
            "no-cpu-gate": {"on_arrival": True, "background": True, "cpu_gate": False},
            "no-first-wait": {"on_arrival": True, "background": True, "first_wait": False},
            "no-crowd-cover": {"on_arrival": True, "background": True, "crowd_cover": False},
            "no-camera-motion": {"on_arrival": True, "background": True, "camera_motion": False}}


def _time_outputs(engine) -> dict[int, float]:
    """Each frame's capture to its hand-over to the outputs, in ms: the latency figure (`record`) stops when the
    frame is anonymized, before the frames the look-ahead holds back (one while coasting) wait for their turn."""
    captured_at: dict[int, float] = {}
    delays: dict[int, float] = {}
    process_one, emit = engine.process_one, engine._emit

    def timed_process_one(frame, index, dt, captured):
        captured_at[index] = captured
        return process_one(frame, index, dt, captured)

    def timed_emit(safe, tag=None):
        if safe.index in captured_at:
            delays[safe.index] = (time.monotonic() - captured_at.pop(safe.index)) * 1000
        return emit(safe, tag)
    engine.process_one, engine._emit = timed_process_one, timed_emit
    return delays


def _identifier(settings, photo: Path):
    from engine.recognition.gallery import Gallery
    from engine.recognition.identify_facebank import FacebankIdentifier
    from engine.recognition.recognize import create_embedder, create_landmarker
    from facebank.enrol import Enroller

    embedder, landmarker = create_embedder(settings), create_landmarker(settings)
    vector = Enroller(settings, embedder=embedder, landmarker=landmarker).enrol(photo).embedding
    gallery = Gallery.from_people({"performer": vector[None]})
    return FacebankIdentifier(embedder, lambda: gallery, landmarker=landmarker)


def _pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


def summarise(timings: Timings, reports: dict, telemetry: dict, process_cpu_pct: float) -> dict:
    indices = sorted(i for i in reports if i in timings.rows)[30:]  # the first second warms up
    latency = [reports[i][0] for i in indices]
    stages = sorted({k for i in indices for k in timings.rows[i]})
    per_stage = {}
    slow_cut = np.percentile(latency, 90) if latency else 0
    slow = [i for i in indices if reports[i][0] >= slow_cut]
    fast = [i for i in indices if reports[i][0] < slow_cut]
    for stage in ["detect_wait", *stages]:
        def values(ids, stage=stage):
            if stage == "detect_wait":
                return [reports[i][1] for i in ids]
            return [timings.rows[i].get(stage, 0.0) for i in ids]
        per_stage[stage] = {"p50": _pct(values(indices), 50), "p95": _pct(values(indices), 95),
                            "mean_slow10pct": _pct(values(slow), 50) if slow else None,
                            "mean_rest": _pct(values(fast), 50) if fast else None}
    tiled = [i for i in indices if timings.rows[i].get("tiles", 0) > 0]
    for stage in ("decode", "decode_cpu"):
        per_stage[stage] = {"p50": _pct(timings.loose[stage], 50), "p95": _pct(timings.loose[stage], 95)}
    return {"frames": len(indices), "fps": telemetry["fps"], "dropped": telemetry["dropped"],
            "latency_p50_ms": _pct(latency, 50), "latency_p95_ms": _pct(latency, 95),
            "latency_max_ms": _pct(latency, 100), "process_cpu_pct_of_one_core": round(process_cpu_pct, 1),
            "frames_with_tiles": len(tiled), "faces_p50": _pct([reports[i][2] for i in indices], 50),
            # with --allow: the share of frames showing someone (the performer is in nearly every frame)
            "frames_with_a_visible_face_pct": round(100 * float(np.mean([reports[i][3] for i in indices])), 1),
            "stages_ms": per_stage}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="1920x1080")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--frames", type=int, default=120, help="clip frames to upscale (looped)")
    parser.add_argument("--allow", type=Path, help="enrol this photo: identification takes part")
    parser.add_argument("--clip", type=Path, default=CLIP, help="play this video instead of the dev clip")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--variants", default="now",
                        help="comma list, run in turn in one process: now (every change), before (detection after "
                             "the wait, embeddings on the frame path), no-arrival, no-background, no-coast (far "
                             "behind, frames are dropped instead of every other one coasted), ui-attached (previews "
                             "made), no-cpu-gate (more tiles a frame whenever the latency allows, however busy the "
                             "cores), no-first-wait (no wait for a new face's first embedding, as before stop 51), "
                             "no-crowd-cover (a crowd's regions covered one by one, as before stop 52), "
                             "no-camera-motion (tracks not moved with the camera, as before stop 53)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    if not args.clip.is_file():
        log.error("no video at %s (the dev clip: set BLURCAST_DATA)", args.clip)
        return 2
    w, h = args.size.split("x")
    with tempfile.TemporaryDirectory(prefix="blurcast-profile-") as tmp:
        clip = Path(tmp) / "clip.mp4"
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(args.clip), "-vf", f"scale={w}:{h}", "-frames:v",
                        str(args.frames), "-c:v", "libx264", "-crf", "16", "-preset", "veryfast", "-an", str(clip)],
                       check=True)
        figures = {f"{name}#{k}": run(clip, args.seconds, args.allow, VARIANTS[name])
                   for k, name in enumerate(args.variants.split(","))}
    figures["summary"] = {label: {key: r[key] for key in ("fps", "dropped", "latency_p50_ms", "latency_p95_ms",
                                                          "latency_max_ms", "process_cpu_pct_of_one_core",
                                                          "frames_with_a_visible_face_pct", "shedding_frames",
                                                          "coasted_frames", "whole_frames", "coasted_undetected",
                                                          "faults", "video_delay_p50_ms",
                                                          "output_delay_p50_ms", "output_delay_p95_ms",
                                                          "process_cpu_ms_per_frame", "gc")}
                          for label, r in figures.items()}
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
