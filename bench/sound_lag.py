"""How far behind its picture an encoder's sound may run before FFmpeg stops reading the picture.

    python bench/sound_lag.py [--lags 0,0.05,0.1,0.3,-0.5] [--frames 150] [--output recording|stream]

One FFmpeg as the engine's recordings and stream outputs start it (a raw I420 picture on stdin, raw s16le sound on a
second pipe, x264 + AAC into fragmented MP4). A thread writes the sound 0.5 s ahead of the frames written for the
first second, then up to `lag` seconds behind them (negative: ahead); the picture is written at 30 fps. Frames that
stop for 2 s count as blocked: FFmpeg waits for sound it has not got, and this sound waits for picture (the two
never move again). Why each encoder's sound follows the picture on a thread of its own (engine/stages/sources/
audio.py `SoundFeed`); docs/streaming.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

RATE, WIDTH, HEIGHT, FPS = 48_000, 640, 360, 30
PICTURE_QUEUE = int(os.environ.get("PICTURE_QUEUE", "0"))  # the picture input's -thread_queue_size (0: FFmpeg's)


# the encoder's settings as the engine's recordings (sink.py) and stream outputs (sinks/stream.py) use them
OUTPUTS = {"recording": ["-c:v", "libx264", "-preset", "veryfast", "-crf", "18",
                         "-x264-params", "sliced-threads=1:sync-lookahead=0:rc-lookahead=8",
                         "-movflags", "+frag_keyframe+empty_moov+default_base_moof+delay_moov",
                         "-frag_duration", "250000", "-flush_packets", "1", "-f", "mp4"],
           "stream": ["-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-b:v", "4000k",
                      "-maxrate", "4000k", "-bufsize", "4000k", "-g", "60", "-f", "mpegts"]}


def trial(lag_s: float, frames: int, out: str, output: str = "recording") -> str:
    sound_r, sound_w = os.pipe()
    cmd = [shutil.which("ffmpeg") or "ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
           *(["-thread_queue_size", str(PICTURE_QUEUE)] if PICTURE_QUEUE else []), "-f", "rawvideo",
           "-pix_fmt", "yuv420p", "-s", f"{WIDTH}x{HEIGHT}", "-r", str(FPS), "-i", "pipe:0",
           "-thread_queue_size", "4096", "-probesize", "32", "-analyzeduration", "0", "-f", "s16le", "-ar", str(RATE),
           "-ac", "2", "-i", f"pipe:{sound_r}", "-map", "0:v", "-map", "1:a", "-c:a", "aac", *OUTPUTS[output], out]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, pass_fds=(sound_r,))
    os.close(sound_r)
    sound = os.fdopen(sound_w, "wb", buffering=0)
    written = {"frames": 0}
    stop = threading.Event()

    def write_sound() -> None:
        samples = 0
        while not stop.is_set():
            # the first second with the sound ahead (as a source's sound leads the engine's picture), then `lag`
            ahead = written["frames"] < FPS
            target = max(0, int((written["frames"] / FPS + (0.5 if ahead else -lag_s)) * RATE))
            if target > samples:
                try:
                    sound.write(bytes((target - samples) * 4))
                except OSError:
                    return
                samples = target
            time.sleep(0.005)

    threading.Thread(target=write_sound, daemon=True).start()
    frame = bytes(WIDTH * HEIGHT * 3 // 2)
    done = threading.Event()

    def write_picture() -> None:
        try:
            for _ in range(frames):
                proc.stdin.write(frame)
                written["frames"] += 1
                time.sleep(1 / FPS)
        except OSError:
            pass
        done.set()

    threading.Thread(target=write_picture, daemon=True).start()
    result = "kept up"
    while not done.wait(0.1):
        before = written["frames"]
        time.sleep(2.0)
        if written["frames"] == before and not done.is_set():
            result = f"blocked after {before} of {frames} frames"
            break
    stop.set()
    proc.kill()
    proc.wait()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lags", default="0,0.05,0.1,0.3,1,-0.5", help="seconds the sound runs behind the picture")
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--output", choices=tuple(OUTPUTS), default="recording", help="the encoder's settings")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="blurcast-sound-lag-") as tmp:
        for lag in (float(v) for v in args.lags.split(",")):
            result = trial(lag, args.frames, f"{tmp}/out", args.output)
            print(f"{args.output}: sound {1000 * lag:+.0f} ms behind the picture: {result}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
