"""A recording's cost by what goes down the encoder's pipe: I420 made by OpenCV (the file sink since stop 29) against
BGR that FFmpeg converts, same frames, same x264 settings, interleaved.

    python bench/recording_pipe.py [CLIP] [--frames 90] [--rounds 5]

Each round records the clip's first `--frames` frames through `engine.stages.sink.FileSink` once per pipe format.
Prints, per format, the CPU ms a frame of the encoder process and of the writing thread (OpenCV's conversion
included), their median over the rounds, and how far the decoded recording is from the frames (mean absolute
difference and mean signed difference, grey levels): the two differ by the colour conversion only.
"""

from __future__ import annotations

import argparse
import logging
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.config import Settings
from engine.stages.anonymize import Anonymizer
from engine.stages.sink import FileSink

log = logging.getLogger("recording_pipe")


class BgrPipeSink(FileSink):
    """The file sink as it was before stop 29: BGR down the pipe, FFmpeg's swscale makes the YUV."""

    def _command(self) -> list[str]:
        self._yuv = False
        return super()._command()


def record(sink_type: type[FileSink], frames: list[np.ndarray], path: Path) -> tuple[float, float]:
    """(encoder CPU ms a frame, writer CPU ms a frame)."""
    height, width = frames[0].shape[:2]
    anonymizer = Anonymizer(Settings())
    safes = [anonymizer.apply(frame.copy(), index, []) for index, frame in enumerate(frames)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.thread_time()
    sink = sink_type(path, width, height, 30)
    for safe in safes:
        sink.write(safe)
    writer = time.thread_time() - started
    sink.close()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    encoder = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return 1000 * encoder / len(frames), 1000 * writer / len(frames)


def fidelity(path: Path, frames: list[np.ndarray]) -> tuple[float, float]:
    cap = cv2.VideoCapture(str(path))
    diffs = []
    for frame in frames:
        ok, shown = cap.read()
        if not ok:
            break
        diffs.append(shown[:frame.shape[0], :frame.shape[1]].astype(np.int16) - frame)
    joined = np.stack(diffs)
    return float(np.abs(joined).mean()), float(joined.mean())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("clip", nargs="?", type=Path, default=Path("/tmp/clip1080.mp4"))
    parser.add_argument("--frames", type=int, default=90)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("engine").setLevel(logging.WARNING)  # not each recording's "recording ..." line
    cv2.setNumThreads(1)  # as the engine runs OpenCV (pipeline.OPENCV_THREADS): the writer's thread time is all of it
    cap, frames = cv2.VideoCapture(str(args.clip)), []
    while len(frames) < args.frames and (frame := cap.read()[1]) is not None:
        frames.append(frame)
    if not frames:
        raise SystemExit(f"no frames in {args.clip}")
    arms = {"I420 (OpenCV)": FileSink, "BGR (FFmpeg)": BgrPipeSink}
    cost: dict[str, list[tuple[float, float]]] = {name: [] for name in arms}
    with tempfile.TemporaryDirectory(prefix="blurcast-pipe-") as tmp:
        for _ in range(args.rounds):
            for name, sink_type in arms.items():
                cost[name].append(record(sink_type, frames, Path(tmp) / f"{len(cost[name])}.mp4"))
        for name, sink_type in arms.items():
            encoder = statistics.median(c[0] for c in cost[name])
            writer = statistics.median(c[1] for c in cost[name])
            record(sink_type, frames, Path(tmp) / "last.mp4")
            absolute, signed = fidelity(Path(tmp) / "last.mp4", frames)
            log.info("%-14s %dx%d: encoder %.1f + writer %.1f = %.1f CPU ms a frame (median of %d; encoder %s); "
                     "decoded against the frames: mean |diff| %.2f, mean diff %+.2f levels", name,
                     frames[0].shape[1], frames[0].shape[0], encoder, writer, encoder + writer, args.rounds,
                     " ".join(f"{c[0]:.1f}" for c in cost[name]), absolute, signed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
