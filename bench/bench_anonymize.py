"""The anonymizer alone on real 1080p frames and the boxes the pipeline gives it: CPU ms a frame, p50/p95/max.

    python bench/bench_anonymize.py [--frames 120] [--repeat 3] [--threads 1] [--against REV] [--json out.json]

The dev clip is upscaled to 1920x1080 (its performer's face reaches 800 px there); each frame goes through the
real pipeline once to record the boxes `Anonymizer.apply` gets (found, guesses, kept), then `apply` alone is
replayed on fresh copies of the frames, `--repeat` times, timed by the calling thread's CPU clock (steady on a
shared machine, unlike wall time). `--against REV` also replays the same calls through the anonymizer of git
revision REV (its engine/stages/anonymize.py), interleaved frame by frame with this one, and gives the ratio.
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
import types
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

    def spy(frame, index, boxes, guesses=(), keep=(), revealable=None):  # `revealable`: file mode's reveal
        calls.append(([np.array(b) for b in boxes], [np.array(b) for b in guesses], [np.array(b) for b in keep]))
        return real(frame, index, calls[-1][0], calls[-1][1], calls[-1][2], revealable=revealable)
    pipeline.anonymizer.apply = spy
    for i, frame in enumerate(frames):
        pipeline.process(frame.copy(), i, 1 / 30)
    pipeline.close()
    del pipeline.anonymizer.apply  # the replays below time the anonymizer itself
    return calls, pipeline.anonymizer


def anonymizer_at(revision: str, settings) -> object:
    """The Anonymizer class as it was at a git revision, loaded beside today's."""
    source = subprocess.run(["git", "-C", str(REPO), "show", f"{revision}:engine/stages/anonymize.py"],
                            capture_output=True, text=True, check=True).stdout
    module = types.ModuleType(f"anonymize_{revision}")
    exec(compile(source, f"{revision}:engine/stages/anonymize.py", "exec"), module.__dict__)
    return module.Anonymizer(settings)


def replay(frames, calls, anonymizers: dict[str, object], repeat: int) -> dict[str, list[float]]:
    """CPU ms of each `apply`, the anonymizers taking turns on each frame (first one first, then reversed)."""
    cpu_ms: dict[str, list[float]] = {name: [] for name in anonymizers}
    order = list(anonymizers.items())
    for turn in range(repeat):
        for frame, (boxes, guesses, keep) in zip(frames, calls, strict=True):
            for name, anonymizer in order if turn % 2 == 0 else order[::-1]:
                image = frame.copy()
                started = time.thread_time()
                anonymizer.apply(image, 0, boxes, guesses=guesses, keep=keep)
                cpu_ms[name].append((time.thread_time() - started) * 1000)
    return cpu_ms


def _summary(values: list[float]) -> dict[str, float]:
    return {"mean": round(float(np.mean(values)), 2),
            **{f"p{q}": round(float(np.percentile(values, q)), 2) for q in (50, 95, 100)}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="OpenCV threads (the engine sets 1)")
    parser.add_argument("--against", help="a git revision whose anonymizer replays the same calls, interleaved")
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
    anonymizers = {"this": anonymizer}
    if args.against:
        from engine.config import Settings

        anonymizers[args.against] = anonymizer_at(args.against, Settings())
    cpu_ms = replay(frames, calls, anonymizers, args.repeat)
    widths = [float(b[2] - b[0]) for boxes, _, _ in calls for b in boxes]
    figures = {"frames": len(frames), "boxes_per_frame": round(len(widths) / max(len(calls), 1), 2),
               "face_width_p50_max": [round(float(np.median(widths)), 1), round(max(widths), 1)] if widths else None,
               "opencv_threads": args.threads, "cpu_ms": {name: _summary(v) for name, v in cpu_ms.items()}}
    if args.against:
        figures["ratio_mean"] = round(float(np.mean(cpu_ms["this"]) / np.mean(cpu_ms[args.against])), 3)
    print(json.dumps(figures))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
