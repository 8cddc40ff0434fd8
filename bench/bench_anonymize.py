"""The anonymizer alone on real 1080p frames and the boxes the pipeline gives it: CPU ms a frame, p50/p95/max.

    python bench/bench_anonymize.py [--frames 120] [--repeat 3] [--threads 1] [--json out.json]

The dev clip is upscaled to 1920x1080 (its performer's face reaches 800 px there); each frame goes through the
real pipeline once to record the boxes `Anonymizer.apply` gets (found, guesses, kept), then `apply` alone is
replayed on fresh copies of the frames, `--repeat` times, timed by the calling thread's CPU clock (steady on a
shared machine, unlike wall time). Run it in two checkouts in turn to compare code: same frames, same boxes.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = Path(os.environ.get("BLURCAST_DATA", REPO.parent / "shared" / "data"))
CLIP = DATA / "video_hamilton" / "short_hamilton_clip.mp4"

log = logging.getLogger("bench")


def load_frames(clip: Path, count: int) -> list[np.ndarray]:
    import cv2

    with tempfile.TemporaryDirectory(prefix="blurcast-anon-") as tmp:
        big = Path(tmp) / "clip1080.mp4"
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(clip), "-vf", "scale=1920:1080", "-frames:v",
                        str(count), "-c:v", "libx264", "-crf", "16", "-preset", "veryfast", "-an", str(big)],
                       check=True)
        cap = cv2.VideoCapture(str(big))
        frames = []
        while len(frames) < count:
            ok, frame = cap.read()
            if not ok:
                break
            frames.append(frame)
    return frames


def record_calls(frames: list[np.ndarray]) -> tuple[list[tuple], object]:
    """The arguments of every `apply` the real pipeline makes, one per frame."""
    from engine.config import Settings
    from engine.pipeline import Pipeline

    pipeline = Pipeline(Settings(backend="onnxruntime", deadline_ms=5000))
    pipeline.offline = True  # deterministic: every detection waited for
    calls: list[tuple] = []
    real = pipeline.anonymizer.apply

    def spy(frame, index, boxes, guesses=(), keep=()):
        calls.append(([np.array(b) for b in boxes], [np.array(b) for b in guesses], [np.array(b) for b in keep]))
        return real(frame, index, calls[-1][0], calls[-1][1], calls[-1][2])
    pipeline.anonymizer.apply = spy
    for i, frame in enumerate(frames):
        pipeline.process(frame.copy(), i, 1 / 30)
    pipeline.close()
    del pipeline.anonymizer.apply  # the replays below time the anonymizer itself
    return calls, pipeline.anonymizer


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="OpenCV threads (the engine sets 1)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    if not CLIP.is_file():
        log.error("no dev clip at %s (set BLURCAST_DATA)", CLIP)
        return 2
    import cv2

    frames = load_frames(CLIP, args.frames)
    calls, anonymizer = record_calls(frames)
    cv2.setNumThreads(args.threads)  # after the pipeline, which sets its own
    cpu_ms = []
    for _ in range(args.repeat):
        for frame, (boxes, guesses, keep) in zip(frames, calls, strict=True):
            image = frame.copy()
            started = time.thread_time()
            anonymizer.apply(image, 0, boxes, guesses=guesses, keep=keep)
            cpu_ms.append((time.thread_time() - started) * 1000)
    widths = [float(b[2] - b[0]) for boxes, _, _ in calls for b in boxes]
    figures = {"frames": len(frames), "regions_per_frame": round(len(widths) / max(len(calls), 1), 2),
               "face_width_p50_max": [round(float(np.median(widths)), 1), round(max(widths), 1)] if widths else None,
               "opencv_threads": args.threads,
               "cpu_ms": {"mean": round(float(np.mean(cpu_ms)), 2),
                          **{f"p{q}": round(float(np.percentile(cpu_ms, q)), 2) for q in (50, 95, 100)}}}
    print(json.dumps(figures))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
