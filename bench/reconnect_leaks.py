"""Leaks in the first frames after a live stream's start or reconnect, with and without the first-frame rule.

    python bench/reconnect_leaks.py [--gap 30] [--every 15] [--frames 3] SUBSTR [SUBSTR ...]   (clips named so)

A live pipeline (as engine/runner.py drives it) on each annotated clip whose name contains a SUBSTR: it starts at
frame 0, then "reconnects" every `--every` frames after a gap of `--gap` frames (the frames a dropped connection
loses; the tracker keeps its tracks meanwhile, as the engine's does), calling `Pipeline.new_picture()` as the runner
does. The `--frames` frames after each start are scored (`evaluation/video.py`'s measure: visibility >= its bar) with
`pipeline.FRESH_PICTURE_WHOLE` on and off: bystander face-frames left visible, and frames sent whole.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import suite
from engine import pipeline as pipeline_module
from engine.config import Settings
from engine.pipeline import Pipeline
from evaluation.video import _score_face


def _frames(video: Path) -> list:
    cap, frames = cv2.VideoCapture(str(video)), []
    while (read := cap.read())[0]:
        frames.append(read[1])
    return frames


def starts(count: int, gap: int, every: int, frames: int) -> list[list[int]]:
    """The frame indices scored after each start: 0.., then each reconnect's, `gap` frames after the last sent."""
    runs, at = [], 0
    while at + frames <= count:
        runs.append(list(range(at, at + frames)))
        at += frames + max(every - frames, 0) + gap
    return runs


def run(clip: suite.Clip, fresh: int, gap: int, every: int, frames: int) -> dict:
    truth: dict[int, list[dict]] = {}
    for face in json.loads(clip.gt.read_text())["faces"]:
        truth.setdefault(face["frame"], []).append(face)
    video = _frames(clip.video)
    pipeline_module.FRESH_PICTURE_WHOLE = fresh
    pipeline = Pipeline(Settings(backend="onnxruntime", deadline_ms=5000))
    leaked = scored = whole = 0
    try:
        for first, run_ in enumerate(starts(len(video), gap, every, frames)):
            if first:
                pipeline.new_picture()
            for i in run_:
                safe, report = pipeline.process(video[i].copy(), i, 1 / 30)
                whole += report.whole_frame is not None
                grey_in = cv2.cvtColor(video[i], cv2.COLOR_BGR2GRAY)
                grey_out = cv2.cvtColor(safe.image, cv2.COLOR_BGR2GRAY)
                for face in truth.get(i, []):
                    visible, _ = _score_face(grey_in, grey_out, face)
                    if visible is None or face.get("label") == "allow":
                        continue
                    scored += 1
                    leaked += bool(visible)
    finally:
        pipeline.close()
        pipeline_module.FRESH_PICTURE_WHOLE = 1
    return {"leaked": leaked, "scored": scored, "whole": whole}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("only", nargs="+")
    parser.add_argument("--gap", type=int, default=30)
    parser.add_argument("--every", type=int, default=15)
    parser.add_argument("--frames", type=int, default=3)
    args = parser.parse_args(argv)
    totals = {0: [0, 0, 0], 1: [0, 0, 0]}
    for clip in suite.corpus(args.only):
        for fresh in (0, 1):
            r = run(clip, fresh, args.gap, args.every, args.frames)
            totals[fresh] = [a + b for a, b in zip(totals[fresh], (r["leaked"], r["scored"], r["whole"]), strict=True)]
            print(f"{clip.name[:44]:44s} {'on ' if fresh else 'off'} {json.dumps(r)}", flush=True)
    for fresh, (leaked, scored, whole) in totals.items():
        print(f"TOTAL {'on ' if fresh else 'off'} leaked {leaked} of {scored} bystander face-frames, "
              f"{whole} frames whole")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
