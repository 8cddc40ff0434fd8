"""Two backends, interleaved A/B pairs in one run: live 1080p, file mode 1080p (and deface), SRT 1080p30.

    python bench/ab_backends.py [--pairs 3] [--what live,file,srt] [--a onnxruntime] [--b auto] [--json out.json]

On a shared 2-core machine one timing says little: every pair runs A and B back to back, the order alternating
(A B, B A, ...) so that a load drift hits both alike, each run a fresh process. Reported per run: wall figures
(fps, latency p50/p95, dropped) and CPU ms per frame (the process's own CPU, and its children's for file mode;
SRT: engine, decoder and encoder processes), then per backend the median and the worst over the pairs.
- live: the dev clip upscaled to 1080p, played as a 30 fps camera into a discarding sink (bench_engine.live_mode),
  `--seconds` long; CPU is the engine process's over the run (model load and warm-up excluded).
- file: `blurcast run` on the clip's first `--frames` frames at 1080p, fresh process (model load included, as
  deface's), and deface once per pair on the same file (its fps is the bar: issue 7 asks >= 3x).
- srt: `bench/bench_stream.py 1080p --preset ultrafast --no-baseline` (SRT in, anonymize, SRT out).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.bench_engine import DATA, count_frames, upscale  # noqa: E402

log = logging.getLogger("ab_backends")


def live_child(clip: str, seconds: float, backend: str) -> None:
    """In a fresh process: one live run, its figures and CPU ms per frame as JSON on stdout."""
    import threading

    from bench.sinks import DiscardSink
    from engine.config import Settings
    from engine.runner import Engine
    from engine.stages.source import VideoSource

    engine = Engine(Settings(backend=backend), VideoSource(clip, loop=True), [DiscardSink()])
    # Like the model load, the warm-up before the first frame (OpenVINO's per-shape compiles) is not counted.
    engine.pipeline.warm_up(engine.source.info.width, engine.source.info.height)
    timer = threading.Timer(seconds, engine.stop_event.set)
    cpu = time.process_time()
    timer.start()
    engine.run_live()
    cpu = time.process_time() - cpu
    t = engine.telemetry()
    engine.close()
    print(json.dumps({"fps": t["fps"], "p50_ms": t["latency_p50_ms"], "p95_ms": t["latency_p95_ms"],
                      "dropped": t["dropped"], "frames": t["frames"], "detector": t["detector"],
                      "cpu_ms_per_frame": round(1000 * cpu / max(t["frames"], 1), 2)}))


def run_live(clip: Path, seconds: float, backend: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--live-child", str(clip), str(seconds), backend],
                         check=True, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    return json.loads(out.stdout.strip().splitlines()[-1])


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def deface_path() -> str | None:
    deface = shutil.which("deface") or str(Path(sys.executable).with_name("deface"))
    return deface if Path(deface).exists() else None


def run_file(clip: Path, frames: int, backend: str | None, out: Path) -> dict:
    """`blurcast run` (or deface when backend is None): fps and CPU ms per frame, model load included."""
    if backend is None:
        cmd = [str(deface_path()), str(clip), "-o", str(out)]
    else:
        cmd = [sys.executable, "-m", "blurcast", "run", str(clip), "-o", str(out), "--backend", backend,
               "--no-facebank"]
    cpu, wall = _children_cpu(), time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env={**os.environ, "PYTHONPATH": str(REPO)})
    wall, cpu = time.perf_counter() - wall, _children_cpu() - cpu
    return {"fps": round(frames / wall, 2), "cpu_ms_per_frame": round(1000 * cpu / frames, 1)}


def run_srt(seconds: float, backend: str, tmp: Path) -> dict:
    report = tmp / "srt.json"
    subprocess.run([sys.executable, str(REPO / "bench" / "bench_stream.py"), "1080p", "--preset", "ultrafast",
                    "--no-baseline", "--seconds", str(seconds), "--backend", backend, "--json", str(report)],
                   check=True, stdout=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(REPO)})
    r = json.loads(report.read_text())
    return {"fps": r["fps"], "p50_ms": r["latency_p50_ms"], "p95_ms": r["latency_p95_ms"],
            "whole_frames": r["whole_frames"], "dropped": r["dropped_input"],
            "cpu_ms_per_frame": r["cpu_ms_per_output_frame"]}


def summary(runs: list[dict]) -> dict:
    """Median and worst (the slower end) of each figure over the pairs."""
    out = {}
    for key in ("fps", "p50_ms", "p95_ms", "cpu_ms_per_frame"):
        values = [r[key] if not isinstance(r.get(key), dict) else r[key]["total"] for r in runs if key in r]
        if values:
            worst = min(values) if key == "fps" else max(values)
            out[key] = {"median": round(statistics.median(values), 2), "worst": worst}
    return out


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--live-child":
        live_child(sys.argv[2], float(sys.argv[3]), sys.argv[4])
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--what", default="live,file,srt")
    parser.add_argument("--a", default="onnxruntime")
    parser.add_argument("--b", default="auto")
    parser.add_argument("--seconds", type=float, default=15.0, help="live and SRT run time")
    parser.add_argument("--frames", type=int, default=90, help="file mode: the clip's first N frames")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    clip = DATA / "video_hamilton" / "short_hamilton_clip.mp4"
    what = args.what.split(",")
    runs: dict[str, dict[str, list[dict]]] = {w: {args.a: [], args.b: []} for w in what}
    runs.setdefault("file", {})["deface"] = []
    with tempfile.TemporaryDirectory(prefix="blurcast-ab-") as tmp_name:
        tmp = Path(tmp_name)
        full = upscale(clip, tmp / "clip1080.mp4", 1920, 1080)
        short = upscale(clip, tmp / "clip1080_short.mp4", 1920, 1080, args.frames)
        frames = count_frames(short)
        for pair in range(args.pairs):
            order = (args.a, args.b) if pair % 2 == 0 else (args.b, args.a)
            for w in what:
                if w == "file" and deface_path():  # the `bench` extra; skipped when absent
                    runs[w]["deface"].append(run_file(short, frames, None, tmp / "deface.mp4"))
                for backend in order:
                    r = (run_live(full, args.seconds, backend) if w == "live" else
                         run_file(short, frames, backend, tmp / "ours.mp4") if w == "file" else
                         run_srt(args.seconds, backend, tmp))
                    runs[w][backend].append(r)
                    log.info("pair %d %s %s: %s", pair + 1, w, backend, json.dumps(r))
    report = {"runs": runs, "summary": {w: {b: summary(rs) for b, rs in by.items() if rs} for w, by in runs.items()}}
    if "file" in what and runs["file"]["deface"]:
        report["file_ratio_vs_deface_per_pair"] = {
            b: [round(r["fps"] / d["fps"], 2) for r, d in zip(runs["file"][b], runs["file"]["deface"], strict=True)]
            for b in (args.a, args.b)}
    print(json.dumps(report["summary"], indent=1))
    print(json.dumps(report.get("file_ratio_vs_deface_per_pair", {})))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
