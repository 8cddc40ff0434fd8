"""CPU per 1080p frame of the stream path's two FFmpeg children and the engine's side of their pipes, by variant.

    python bench/bench_stream_pipes.py decode [--rounds 2] [--frames 240]
    python bench/bench_stream_pipes.py encode [--rounds 2] [--frames 240]
    python bench/bench_stream_pipes.py delay [--rounds 2] [--frames 240]

`decode`: the 1080p30 clip (the dev clip upscaled, as bench_stream.py 1080p sends it) is decoded by an FFmpeg
child to raw frames on its stdout, read by this process straight into arrays as engine/stages/sources/
ffmpeg_pipe.py does, and turned into BGR here where the pipe carries YUV (cv2.cvtColor, one thread, as the
engine runs OpenCV). Per variant: the child's CPU (user + system, from wait4) and the reading thread's CPU
(time.thread_time: the pipe reads and the conversion), in ms per frame, and their sum.

`encode`: the same frames, decoded once into memory as I420, are written down a pipe to FFmpeg/x264 as the
stream output does (ultrafast, zerolatency, 6 Mb/s CBR-capped, 2 s GOP, to an MPEG-TS file), with x264
parameter variants; per variant the child's CPU per frame and the output's size (the quality class: same
bitrate cap, so size says little; PSNR against the input says more and is printed too).

`delay`: the decoder's own delay with FFmpeg's threads and with one: the clip read at its rate (`-re`), the
time from FFmpeg reading the k-th video packet (its `-debug_ts` line) to the k-th frame arriving on the pipe,
median and p95 over the frames (a clip without B-frames, as phones send). The log reaches this process late
(the figures come out negative): only the difference between the variants means anything.

The variants run interleaved, `--rounds` times each, so a machine whose load moves affects all alike; the
figures are CPU time, which holds on a shared machine far better than wall time. Each row gives min and max
over the rounds.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from engine.stages.sources.ffmpeg_pipe import _read_into  # noqa: E402 (the engine's own pipe read, measured)

DATA = Path(os.environ.get("BLURCAST_DATA", REPO.parent / "shared" / "data"))
CLIP = DATA / "video_hamilton" / "short_hamilton_clip.mp4"
W, H = 1920, 1080

log = logging.getLogger("bench")

# name -> (extra decoder args before -i, output pix_fmt, extra output args, cv2 conversion or None)
DECODE_VARIANTS: dict[str, tuple[list[str], str, list[str], int | None]] = {
    "bgr24 (main)": ([], "bgr24", [], None),
    "bgr24 -threads 1": (["-threads", "1"], "bgr24", [], None),
    "bgr24 sws fast_bilinear": ([], "bgr24", ["-sws_flags", "fast_bilinear"], None),
    "yuv420p + cv2": ([], "yuv420p", [], cv2.COLOR_YUV2BGR_I420),
    "yuv420p + cv2, -threads 1": (["-threads", "1"], "yuv420p", [], cv2.COLOR_YUV2BGR_I420),
    "yuv420p + cv2, -threads 2": (["-threads", "2"], "yuv420p", [], cv2.COLOR_YUV2BGR_I420),
    "bgr24 -threads 1 -flags2 fast": (["-threads", "1", "-flags2", "fast"], "bgr24", [], None),
    "bgr24 -threads 1, 1 MB pipe": (["-threads", "1"], "bgr24", [], None),
    "yuv420p + cv2, -threads 1, 1 MB pipe": (["-threads", "1"], "yuv420p", [], cv2.COLOR_YUV2BGR_I420),
}
F_SETPIPE_SZ = 1031  # Linux fcntl: a pipe's capacity (64 KiB by default: ~95 wake-ups per 1080p BGR frame)

ENCODE_BASE = ["-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-b:v", "6000k",
               "-maxrate", "6000k", "-bufsize", "6000k", "-g", "60", "-keyint_min", "60", "-sc_threshold", "0"]
ENCODE_VARIANTS: dict[str, list[str]] = {
    "ultrafast zerolatency (main)": [],
    "-threads 1": ["-threads", "1"],
    "-threads 2": ["-threads", "2"],
    "x264 sliced-threads=0 threads=2": ["-x264-params", "sliced-threads=0:threads=2"],
    "every frame sent twice (repeats)": [],  # what a repeated frame costs: the output fills dropped frames so
    # capped CRF instead of ABR (-crf after -b:v wins in libx264): repeats quantize to nothing and are skipped
    "capped CRF 23": ["-crf", "23"],
    "capped CRF 23, every frame sent twice": ["-crf", "23"],
}
REPEATS = ("every frame sent twice (repeats)", "capped CRF 23, every frame sent twice")


def clip_1080(tmp: Path, b_frames: bool = True) -> Path:
    """The dev clip at 1080p30; without B-frames (as phones send, zerolatency) for `delay`: packet k is frame k."""
    src = tmp / "clip1080.ts"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(CLIP), "-vf", "scale=1920:1080", "-r", "30",
                    "-c:v", "libx264", "-preset", "veryfast", *([] if b_frames else ["-bf", "0"]), "-b:v", "6M",
                    "-g", "60", "-an", "-f", "mpegts", str(src)], check=True)
    return src


def run_decode(src: Path, frames: int, variant: tuple[list[str], str, list[str], int | None],
               big_pipe: bool = False) -> dict:
    pre, pix_fmt, post, conversion = variant
    cmd = ["ffmpeg", "-v", "error", "-nostdin", *pre, "-stream_loop", "-1", "-i", str(src), "-map", "0:v:0",
           "-frames:v", str(frames), *post, "-f", "rawvideo", "-pix_fmt", pix_fmt, "-fps_mode", "cfr", "pipe:1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    if big_pipe:
        fcntl.fcntl(proc.stdout.fileno(), F_SETPIPE_SZ, 1 << 20)
    shape = (H * 3 // 2, W) if pix_fmt == "yuv420p" else (H, W, 3)
    cpu0, n = time.thread_time(), 0
    while True:
        buf = np.empty(shape, np.uint8)
        if not _read_into(proc.stdout, memoryview(buf).cast("B")):
            break
        if conversion is not None:
            cv2.cvtColor(buf, conversion)
        n += 1
    reader_s = time.thread_time() - cpu0
    _, _, usage = os.wait4(proc.pid, 0)
    child_s = usage.ru_utime + usage.ru_stime
    return {"frames": n, "child_ms": 1000 * child_s / max(n, 1), "engine_ms": 1000 * reader_s / max(n, 1)}


DELAY_VARIANTS: dict[str, list[str]] = {"FFmpeg's threads (main)": [], "-threads 1": ["-threads", "1"]}


def run_delay(src: Path, frames: int, threads: list[str]) -> dict:
    cmd = ["ffmpeg", "-nostdin", "-v", "verbose", "-debug_ts", *threads, "-re", "-i", str(src), "-map", "0:v:0",
           "-frames:v", str(frames), "-f", "rawvideo", "-pix_fmt", "yuv420p", "pipe:1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    packets: list[float] = []

    def read_log() -> None:
        for line in proc.stderr:
            if line.startswith(b"demuxer -> ist_index:0") and b"type:video" in line:
                packets.append(time.monotonic())
    reader = threading.Thread(target=read_log, daemon=True)
    reader.start()
    arrivals, buf = [], np.empty((H * 3 // 2, W), np.uint8)
    while _read_into(proc.stdout, memoryview(buf).cast("B")):
        arrivals.append(time.monotonic())
    proc.wait()
    reader.join(timeout=5)
    delays = [1000 * (a - p) for a, p in zip(arrivals, packets, strict=False)][30:]  # past the start-up
    return {"delay_p50_ms": float(np.percentile(delays, 50)), "delay_p95_ms": float(np.percentile(delays, 95))}


def i420_frames(src: Path, frames: int) -> list[np.ndarray]:
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(src), "-frames:v", str(frames), "-f", "rawvideo",
                          "-pix_fmt", "yuv420p", "pipe:1"], capture_output=True, check=True).stdout
    return list(np.frombuffer(raw, np.uint8).reshape(-1, H * 3 // 2, W))


def run_encode(frames: list[np.ndarray], total: int, extra: list[str], out: Path, repeat: int = 1) -> dict:
    cmd = ["ffmpeg", "-v", "error", "-nostdin", "-y", "-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", f"{W}x{H}",
           "-framerate", "30", "-i", "pipe:0", *ENCODE_BASE, *extra, "-f", "mpegts", str(out)]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE)
    for k in range(total):
        proc.stdin.write(memoryview(frames[(k // repeat) % len(frames)]))
    proc.stdin.close()
    _, _, usage = os.wait4(proc.pid, 0)
    return {"frames": total, "child_ms": 1000 * (usage.ru_utime + usage.ru_stime) / total,
            "bytes_per_frame": out.stat().st_size // total, "psnr": psnr(out, frames) if repeat == 1 else None}


def psnr(path: Path, frames: list[np.ndarray]) -> float:
    """Luma PSNR of the encoded file's first frames against what went in."""
    n = min(len(frames), 60)
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-frames:v", str(n), "-f", "rawvideo",
                          "-pix_fmt", "yuv420p", "pipe:1"], capture_output=True, check=True).stdout
    got = np.frombuffer(raw, np.uint8).reshape(-1, H * 3 // 2, W)[:, :H].astype(np.float32)
    want = np.stack(frames[:len(got)])[:, :H].astype(np.float32)
    mse = float(np.mean((got - want) ** 2))
    return round(10 * np.log10(255 ** 2 / max(mse, 1e-9)), 2)


def summarise(results: dict[str, list[dict]]) -> dict:
    table = {}
    for name, runs in results.items():
        row = {}
        for key in runs[0]:
            if key.endswith("_ms"):
                values = [r[key] for r in runs]
                row[key] = [round(min(values), 2), round(max(values), 2)]
        if "engine_ms" in runs[0]:
            totals = [r["child_ms"] + r["engine_ms"] for r in runs]
            row["total_ms"] = [round(min(totals), 2), round(max(totals), 2)]
        for key in ("bytes_per_frame", "psnr"):
            if key in runs[0]:
                row[key] = runs[-1][key]
        table[name] = row
    return table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=("decode", "encode", "delay"))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--frames", type=int, default=240)
    parser.add_argument("--only", help="a regular expression: only the variants whose name matches")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not CLIP.is_file():
        log.error("the dev clip is missing (%s); set BLURCAST_DATA", CLIP)
        return 2
    cv2.setNumThreads(1)  # as the engine runs OpenCV (engine/pipeline.py OPENCV_THREADS)
    results: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="blurcast-bench-pipes-") as tmp:
        src = clip_1080(Path(tmp), b_frames=args.mode != "delay")
        variants = {"decode": DECODE_VARIANTS, "encode": ENCODE_VARIANTS, "delay": DELAY_VARIANTS}[args.mode]
        names = [n for n in variants if not args.only or re.search(args.only, n)]
        frames = i420_frames(src, 120) if args.mode == "encode" else None
        for round_ in range(args.rounds):
            for name in names:
                if args.mode == "delay":
                    result = run_delay(src, args.frames, variants[name])
                elif args.mode == "decode":
                    result = run_decode(src, args.frames, variants[name], big_pipe="1 MB pipe" in name)
                else:
                    result = run_encode(frames, args.frames, variants[name], Path(tmp) / "out.ts",
                                        repeat=2 if name in REPEATS else 1)
                shown = {k: v if v is None else round(v, 2) for k, v in result.items()}
                log.info("round %d %-34s %s", round_ + 1, name, shown)
                results.setdefault(name, []).append(result)
    for name, row in summarise(results).items():
        print(f"{name:34s} {json.dumps(row)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
