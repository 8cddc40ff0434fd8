"""Benchmark and end-to-end check of the streaming path, on loopback with FFmpeg at both far ends.

    python bench/bench_stream.py clip  [--json out.json]     # the dev clip with its sound, SRT in -> SRT out
    python bench/bench_stream.py file  [--json out.json]     # the dev clip as a file played live -> SRT out
    python bench/bench_stream.py 1080p [--seconds 20] [--backend auto]  # 1920x1080 30 fps over SRT: keeps up?

`clip`: a local FFmpeg sends the dev clip (H.264 + AAC, copied, paced at its frame rate) to Blurcast's SRT
listener; Blurcast anonymizes (default settings, empty facebank) and sends SRT to a second FFmpeg that
records it. Reported: the recording's streams; the A/V offset, measured on content (the recording's frames
are matched to the clip's frames, its sound is cross-correlated with the clip's sound; offset = audio shift
minus video shift); and score_video.py on the recording aligned to the clip's frames (frame k of the
recording is source frame origin + k; frames before the first one received are black).

`1080p`: the dev clip upscaled to 1920x1080 and looped, sent with `-c copy` (the sender costs no CPU here,
as a phone encodes on its own chip). Reported: output fps, added latency p50/p95 (frame decoded -> handed
to the output), input frames dropped, frames the output repeated, and the CPU of the decoding FFmpeg
processes, of the encoding FFmpeg and of the engine process, as % of one core.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = Path(os.environ.get("BLURCAST_DATA", REPO.parent / "shared" / "data"))
CLIP = DATA / "video_hamilton" / "short_hamilton_clip.mp4"
SCORER = DATA.parent / "tools" / "score_video.py"

from bench.profile_live import by_thread, thread_cpu_s  # noqa: E402
from bench.sinks import DiscardSink  # noqa: E402
from bench.stream_trace import StreamTrace  # noqa: E402
from engine import runner  # noqa: E402
from engine.config import Settings  # noqa: E402
from engine.pipeline import Pipeline  # noqa: E402
from engine.runner import Engine  # noqa: E402
from engine.service import open_sink  # noqa: E402
from engine.stages.sinks import StreamSink  # noqa: E402
from engine.stages.sources import open_source  # noqa: E402
from engine.stream_options import resolve_preset  # noqa: E402
from tests.stream_util import free_port, record, stream_kinds  # noqa: E402

log = logging.getLogger("bench")
BACKEND = "auto"  # --backend: the engine's network runtime
TRACE = False  # --trace: a per-frame timeline of the SRT path (bench/stream_trace.py)
DETECT_WAITING = True  # --no-detect-waiting: the frame loop does not start the next frame's detection (before/after)
AUDIO_RATE = 8000  # enough for cross-correlation, small enough to be quick
# Decoded frames as stored: to raw output FFmpeg would otherwise repeat the first frame back to the file's
# start (the clip's sound starts 0.84 s before its picture), shifting every frame index.
AS_STORED = ["-fps_mode", "passthrough"]


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError):
        return float("nan")


def run_stream(sender_cmd: list[str], seconds: float | None, out: Path, port_in: int, port_out: int,
               bitrate_kbps: int, preset: str = "veryfast") -> dict:
    """Sender -> Blurcast (SRT listener) -> SRT -> recorder. Returns the figures and the sink."""
    pipeline = Pipeline(Settings(backend=BACKEND))  # models loaded first: no frame waits on them
    recorder = record(f"srt://127.0.0.1:{port_out}?mode=listener", out)
    with ThreadPoolExecutor(1) as pool:
        opening = pool.submit(open_source, f"srt://:{port_in}?mode=listener", open_timeout_s=30)
        time.sleep(1.0)
        sender = subprocess.Popen(sender_cmd, stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        source = opening.result()
    engine = Engine(Settings(backend=BACKEND), source, pipeline=pipeline)
    sink = StreamSink(f"srt://127.0.0.1:{port_out}?mode=caller", source.info.width, source.info.height,
                      source.fps_fraction, audio=source.audio if source.has_audio else None,
                      bitrate_kbps=bitrate_kbps, preset=preset)
    engine.sinks.append(sink)
    engine.detect_waiting = DETECT_WAITING
    tracer = StreamTrace(source, engine, sink) if TRACE else None
    session = source._session
    decoders = [p.pid for p in session.processes()] if session else []
    cpu0 = {pid: cpu_seconds(pid) for pid in [*decoders, sink._proc.pid, os.getpid()]}
    threads0 = thread_cpu_s()
    thread = threading.Thread(target=engine.run_live, daemon=True)
    started = time.monotonic()
    thread.start()
    latest = dict(cpu0)  # sampled while running: a process that ended has no /proc entry left
    settled = None  # (time, frames, dropped) once STEADY_AFTER_S have passed
    while thread.is_alive() and (seconds is None or time.monotonic() - started < seconds):
        if seconds is None and sender.poll() is not None:
            time.sleep(1.5)  # let the last frames through
            break
        time.sleep(0.5)
        latest.update({pid: v for pid in cpu0 if not np.isnan(v := cpu_seconds(pid))})
        if settled is None and time.monotonic() - started >= STEADY_AFTER_S:
            settled = (time.monotonic(), engine.stats.frames, engine.stats.dropped + source.dropped)
    elapsed = time.monotonic() - started
    steady = {}
    if settled is not None:  # the frames SRT buffered while the engine started come at once, and most are dropped
        span = time.monotonic() - settled[0]
        frames, dropped = engine.stats.frames - settled[1], engine.stats.dropped + source.dropped - settled[2]
        steady = {"steady_fps": round(frames / span, 2), "steady_fps_in": round((frames + dropped) / span, 2),
                  "steady_dropped": dropped}
    engine_threads = by_thread(threads0, thread_cpu_s(), engine.stats.frames)
    cpu = {pid: latest[pid] - t for pid, t in cpu0.items()}
    figures = {
        "frames_out": engine.stats.frames, "fps": round(engine.stats.frames / elapsed, 2),
        "latency_p50_ms": round(float(np.percentile(engine.stats.latencies_ms, 50)), 1),
        "latency_p95_ms": round(float(np.percentile(engine.stats.latencies_ms, 95)), 1),
        "latency_max_ms": round(float(np.max(engine.stats.latencies_ms)), 1),
        **output_delays(engine),
        "dropped_input": engine.stats.dropped + source.dropped, "output_repeats": sink.repeated,
        # what the source delivered: the rate the engine had to keep (a sender's gaps are not the engine's drops)
        "fps_in": round((engine.stats.frames + engine.stats.dropped + source.dropped) / elapsed, 2),
        "coasted": engine.stats.coasted,
        "output_dropped": sink.dropped, "whole_frames": engine.stats.whole_frames,
        "cpu_decode_pct": round(100 * sum(cpu[p] for p in decoders) / elapsed, 1),
        "cpu_encode_pct": round(100 * cpu[sink._proc.pid] / elapsed, 1),
        "cpu_engine_pct": round(100 * cpu[os.getpid()] / elapsed, 1), "seconds": round(elapsed, 1),
        "origin": sink._origin, **steady,
    }
    # CPU per output frame holds on a shared machine where % of a core and fps do not (they move with the load)
    frames = max(engine.stats.frames, 1)
    figures["cpu_ms_per_output_frame"] = {
        "decode": round(1000 * sum(cpu[p] for p in decoders) / frames, 2),
        "encode": round(1000 * cpu[sink._proc.pid] / frames, 2), "engine": round(1000 * cpu[os.getpid()] / frames, 2)}
    figures["cpu_ms_per_output_frame"]["total"] = round(sum(figures["cpu_ms_per_output_frame"].values()), 2)
    # the engine's share of the stream path: decoder-video reads the pipe, source converts I420 (read()),
    # stream-video converts to I420 and writes every output slot, repeats included
    figures["engine_cpu_ms_per_output_frame_by_thread"] = engine_threads
    # each child's own unit: the decoder decodes every input frame, the encoder every output slot (repeats too)
    decoded, encoded = engine.stats.frames + figures["dropped_input"], sink.frames_sent + sink.repeated
    figures["cpu_ms_per_decoded_frame"] = round(1000 * sum(cpu[p] for p in decoders) / max(decoded, 1), 2)
    figures["cpu_ms_per_encoded_frame"] = round(1000 * cpu[sink._proc.pid] / max(encoded, 1), 2)
    if tracer is not None:
        figures["trace"] = tracer.summary()
    sender.kill()
    sender.wait()
    engine.stop_event.set()
    thread.join(timeout=5)
    engine.close()
    recorder.wait(timeout=15)
    return figures


# --- the dev clip: sync and privacy ------------------------------------------------------------------------
def decode_gray(path: Path, size: tuple[int, int] = (64, 36)) -> np.ndarray:
    w, h = size
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-map", "0:v:0", "-vf", f"scale={w}:{h}",
                          *AS_STORED, "-f", "rawvideo", "-pix_fmt", "gray", "-"],
                         capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, h, w).astype(np.float32)


def decode_audio(path: Path) -> np.ndarray:
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-map", "0:a:0", "-ac", "1", "-ar",
                          str(AUDIO_RATE), "-f", "f32le", "-"], capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.float32)


def start_time(path: Path, kind: str) -> float:
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", f"{kind}:0", "-show_entries",
                          "stream=start_time", "-of", "csv=p=0", str(path)], capture_output=True, text=True).stdout
    return float(out.split()[0].strip(","))


def video_shift(clip: np.ndarray, rec: np.ndarray) -> int:
    """d such that recording frame j shows clip frame j + d (median over sampled frames, best match)."""
    shifts = []
    for j in range(5, min(len(rec), 200), 7):
        errors = np.abs(clip - rec[j]).mean(axis=(1, 2))
        shifts.append(int(np.argmin(errors)) - j)
    return int(np.median(shifts))


def audio_lag(clip: np.ndarray, rec: np.ndarray) -> int:
    """L such that recording sample n carries clip sample n - L (FFT cross-correlation)."""
    n = 1 << int(np.ceil(np.log2(len(clip) + len(rec))))
    corr = np.fft.irfft(np.fft.rfft(rec, n) * np.conj(np.fft.rfft(clip, n)), n)
    lag = int(np.argmax(corr))
    return lag - n if lag > n // 2 else lag


def av_offset_ms(clip_path: Path, rec_path: Path, fps: float) -> tuple[float, int]:
    d_v = video_shift(decode_gray(clip_path), decode_gray(rec_path))
    lag = audio_lag(decode_audio(clip_path), decode_audio(rec_path))
    delta_v = start_time(rec_path, "v") - start_time(clip_path, "v") - d_v / fps
    delta_a = start_time(rec_path, "a") - start_time(clip_path, "a") + lag / AUDIO_RATE
    return round((delta_a - delta_v) * 1000, 1), d_v


def aligned_copy(clip: Path, rec: Path, d_v: int, out: Path) -> Path:
    """The recording cut/padded so that its frame k is the clip's frame k (black before the first one)."""
    import cv2

    cap = cv2.VideoCapture(str(clip))
    total, w, h = (int(cap.get(p)) for p in (cv2.CAP_PROP_FRAME_COUNT, cv2.CAP_PROP_FRAME_WIDTH,
                                              cv2.CAP_PROP_FRAME_HEIGHT))
    cap.release()
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(rec), "-map", "0:v:0", *AS_STORED, "-f", "rawvideo",
                          "-pix_fmt", "bgr24", "-"], capture_output=True, check=True).stdout
    frames = np.frombuffer(raw, np.uint8).reshape(-1, h, w, 3)
    writer = subprocess.Popen(["ffmpeg", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{w}x{h}",
                               "-r", "30000/1001", "-i", "-", "-c:v", "libx264", "-qp", "0", "-preset", "ultrafast",
                               str(out)], stdin=subprocess.PIPE)
    black = np.zeros((h, w, 3), np.uint8)
    for k in range(total):
        j = k - d_v
        writer.stdin.write((frames[j] if 0 <= j < len(frames) else black).tobytes())
    writer.stdin.close()
    writer.wait()
    return out


def bench_clip(tmp: Path) -> dict:
    pin, pout = free_port(), free_port()
    rec = tmp / "recorded.ts"
    sender = ["ffmpeg", "-v", "error", "-re", "-i", str(CLIP), "-c", "copy", "-f", "mpegts",
              f"srt://127.0.0.1:{pin}?mode=caller"]
    figures = run_stream(sender, None, rec, pin, pout, bitrate_kbps=3000)
    return figures | sync_and_privacy(rec, tmp)


def sync_and_privacy(rec: Path, tmp: Path) -> dict:
    """The recording of the dev clip: its streams, its A/V offset, and score_video.py aligned to the clip's frames."""
    figures: dict = {"streams": stream_kinds(rec)}
    figures["av_offset_ms"], d_v = av_offset_ms(CLIP, rec, 30000 / 1001)
    figures["video_shift_frames"] = d_v
    aligned = aligned_copy(CLIP, rec, d_v, tmp / "aligned.mp4")
    gt = CLIP.with_name("gt.json")
    if SCORER.is_file() and gt.is_file():
        score = subprocess.run([sys.executable, str(SCORER), "--input", str(CLIP), "--output", str(aligned),
                                "--gt", str(gt)], capture_output=True, text=True)
        figures["score_video"] = (score.stdout + score.stderr).strip().splitlines()[-6:]
    return figures


def bench_file(tmp: Path) -> dict:
    """The dev clip as a file source played live (`engine serve --source clip.mp4 --out srt://...`): OpenCV's
    picture, FFmpeg's sound (engine/stages/sources/file_sound.py), SRT out to a recorder; sync and privacy as
    `clip` measures them. The clip's sound starts 0.84 s before its picture: the file's own offset is used."""
    port = free_port()
    rec = tmp / "recorded.ts"
    pipeline = Pipeline(Settings(backend=BACKEND))
    recorder = record(f"srt://127.0.0.1:{port}?mode=listener", rec)
    source = open_source(str(CLIP))
    engine = Engine(Settings(backend=BACKEND), source, pipeline=pipeline)
    sink = open_sink("stream", source, f"srt://127.0.0.1:{port}?mode=caller", bitrate_kbps=3000)
    engine.sinks.append(sink)
    started = time.monotonic()
    engine.run_live()  # to the clip's end
    elapsed = time.monotonic() - started
    figures = {"frames_out": engine.stats.frames, "fps": round(engine.stats.frames / elapsed, 2),
               "dropped_input": engine.stats.dropped, "output_repeats": sink.repeated,
               "sound": sink.has_sound}
    engine.close()
    recorder.wait(timeout=15)
    return figures | sync_and_privacy(rec, tmp)


# The sender's colour matrix: BT.709 (the dev clip's, and phones' HD) is decoded to BGR by FFmpeg, BT.601 goes
# down the decoder's pipe as I420 (engine/stages/sources/ffmpeg_pipe.py)
# Both streams start at 0 and end together (`-t`, the picture's length): the clip's sound starts 0.84 s before its
# picture, and looped with that hole the sender sent ~27.5 frames a second, not 30 (a 0.8 s gap each loop; stop 41).
# A/V sync is `clip`'s to measure.
STEADY_AFTER_S = 3.0  # `steady_*` figures leave the start out
SENDER_MATRIX = {"bt709": ["-vf", "setpts=PTS-STARTPTS,scale=1920:1080"],
                 "bt601": ["-vf", "setpts=PTS-STARTPTS,scale=1920:1080:out_color_matrix=bt601", "-colorspace",
                           "smpte170m", "-color_primaries", "smpte170m", "-color_trc", "smpte170m"]}


def output_delays(engine: Engine) -> dict:
    """Capture to the hand-over to the outputs, the frame held while coasting included: the delay a viewer gets."""
    delays = list(engine.stats.output_delays_ms)
    if not delays:
        return {}
    return {"output_delay_p50_ms": round(float(np.percentile(delays, 50)), 1),
            "output_delay_p95_ms": round(float(np.percentile(delays, 95)), 1)}


def video_seconds(path: Path) -> float:
    """The duration of `path`'s first video stream (`-shortest` leaves the sound longer through filters)."""
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "stream=duration",
                          "-of", "json", str(path)], capture_output=True, text=True, check=True)
    return float(json.loads(out.stdout)["streams"][0]["duration"])


def bench_1080p(tmp: Path, seconds: float, preset: str, baseline: bool = True, matrix: str = "bt709") -> dict:
    src = tmp / "clip1080.ts"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(CLIP), *SENDER_MATRIX[matrix], "-r", "30",
                    "-c:v", "libx264", "-preset", "veryfast", "-b:v", "6M", "-g", "60", "-af", "asetpts=PTS-STARTPTS",
                    "-c:a", "aac", "-t", f"{video_seconds(CLIP):.3f}", "-f", "mpegts", str(src)], check=True)
    pin, pout = free_port(), free_port()
    sender = ["ffmpeg", "-v", "error", "-re", "-stream_loop", "-1", "-i", str(src), "-c", "copy", "-f", "mpegts",
              f"srt://127.0.0.1:{pin}?mode=caller"]
    figures = run_stream(sender, seconds, tmp / "recorded1080.ts", pin, pout, bitrate_kbps=6000, preset=preset)
    figures["preset"], figures["sender_matrix"] = resolve_preset(preset), matrix
    if baseline:
        figures["baseline_local_file"] = baseline_live(src, seconds)
        figures["fps_ratio_stream_to_local"] = round(figures["fps"] / max(figures["baseline_local_file"]["fps"], 1e-6),
                                                     2)
    return figures


def baseline_live(path: Path, seconds: float) -> dict:
    """The same frames from a local file played live (OpenCV decode, no network, no encoder), same run:
    on a shared machine only the ratio to this means anything."""
    from engine.stages.source import VideoSource

    engine = Engine(Settings(backend=BACKEND), VideoSource(str(path), loop=True), sinks=[DiscardSink()])
    thread = threading.Thread(target=engine.run_live, daemon=True)
    started = time.monotonic()
    thread.start()
    time.sleep(seconds)
    elapsed = time.monotonic() - started
    figures = {"fps": round(engine.stats.frames / elapsed, 2), "dropped_input": engine.stats.dropped,
               "latency_p50_ms": round(float(np.percentile(engine.stats.latencies_ms, 50)), 1),
               "latency_p95_ms": round(float(np.percentile(engine.stats.latencies_ms, 95)), 1)}
    engine.stop_event.set()
    thread.join(timeout=5)
    engine.close()
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=("clip", "file", "1080p"))
    parser.add_argument("--seconds", type=float, default=20.0, help="1080p: how long to stream")
    parser.add_argument("--preset", default="auto", help="1080p: the output's x264 preset (auto: as the engine "
                        "resolves it on this machine)")
    parser.add_argument("--no-baseline", action="store_true", help="1080p: skip the local-file baseline run "
                        "(A/B runs of two versions compare CPU per frame, which needs none)")
    parser.add_argument("--matrix", choices=tuple(SENDER_MATRIX), default="bt709", help="1080p: the sender's "
                        "colour matrix (bt709 is decoded to BGR by FFmpeg, bt601 goes as I420 to the engine)")
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument("--backend", default="auto", help="the engine's network runtime (to compare backends)")
    parser.add_argument("--trace", action="store_true", help="1080p: a per-frame timeline of the SRT path (where "
                        "a frame's wall time goes: bench/stream_trace.py)")
    parser.add_argument("--no-coast", action="store_true", help="far behind, frames are dropped instead of every "
                        "other one coasted on the tracks (the code before stop 24: before/after in one session)")
    parser.add_argument("--no-detect-waiting", action="store_true", help="the frame loop does not start the next "
                        "waiting frame's detection (the code before it did: before/after in one session)")
    args = parser.parse_args()
    global BACKEND, TRACE, DETECT_WAITING
    BACKEND, TRACE, DETECT_WAITING = args.backend, args.trace, not args.no_detect_waiting
    runner.LIVE_COAST = int(not args.no_coast)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not CLIP.is_file():
        print(f"the dev clip is missing ({CLIP}); set BLURCAST_DATA", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="blurcast-bench-stream-") as tmp:
        if args.mode == "clip":
            figures = bench_clip(Path(tmp))
        elif args.mode == "file":
            figures = bench_file(Path(tmp))
        else:
            figures = bench_1080p(Path(tmp), args.seconds, args.preset, not args.no_baseline, args.matrix)
    print(json.dumps(figures, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
