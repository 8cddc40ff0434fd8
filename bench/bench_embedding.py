"""Benchmark: the cost of embedding one face in the stream, the shipped recipe against the earlier one.

    python bench/bench_embedding.py [--repeat 3]

On the dev clip's performer (every 4th frame he is in, from the ground truth), interleaved face by face in one
process so that the load on a shared machine hits both alike; reported as medians, p95 and their ratio:
- earlier: one `refine` pass for the landmarks, one view through the network;
- previous: YuNet's four passes averaged, plain bilinear warp, mirror image added (the recipe until the
  anti-aliased warp);
- shipped: `engine.recognition.recognize.Landmarker` (four YuNet passes, landmarks averaged), `align_face`
  (anti-aliased beyond a 2x shrink) and the mirror image added.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = Path(os.environ.get("BLURCAST_DATA", REPO.parent / "shared" / "data"))

from engine.config import Settings  # noqa: E402
from engine.recognition.recognize import (  # noqa: E402
    SIZE,
    Landmarker,
    align_face,
    alignment_matrix,
    create_embedder,
    create_landmarker,
    l2_normalise,
    preprocess,
)

log = logging.getLogger("bench")


def performer_frames(step: int = 4) -> list[tuple[np.ndarray, np.ndarray]]:
    """(frame, performer's ground-truth box) for every `step`-th frame he is in."""
    clip = DATA / "video_hamilton"
    truth = json.loads((clip / "gt.json").read_text())["faces"]
    boxes = {f["frame"]: np.asarray(f["box"], np.float32) for f in truth if f["label"] == "allow" and not f["ignore"]}
    capture, out, index = cv2.VideoCapture(str(clip / "short_hamilton_clip.mp4")), [], 0
    while (grabbed := capture.read())[0]:
        if index in boxes and index % step == 0:
            out.append((grabbed[1], boxes[index]))
        index += 1
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    settings = Settings()
    landmarker, embedder = create_landmarker(settings), create_embedder(settings)
    frames = performer_frames()
    yunet_only = Landmarker(landmarker.detector)
    earlier, previous, shipped = [], [], []
    for _ in range(args.repeat):
        for frame, box in frames:
            fallback = landmarker.detector.detect(frame, 0.5)
            if not len(fallback):
                continue
            started = time.perf_counter()
            refined = landmarker.detector.refine(frame, box)
            face = align_face(frame, refined.landmarks[0] if len(refined) else fallback.landmarks[0])
            l2_normalise(embedder.runner.run(preprocess(face[None]))[0])
            middle = time.perf_counter()
            marks = yunet_only(frame, box, fallback.landmarks[0])
            face = cv2.warpAffine(frame, alignment_matrix(marks), (SIZE, SIZE), flags=cv2.INTER_LINEAR)
            embedder.embed_aligned(face[None])
            third = time.perf_counter()
            embedder.embed_aligned(landmarker.align(frame, box, fallback.landmarks[0])[None])
            earlier.append(middle - started)
            previous.append(third - middle)
            shipped.append(time.perf_counter() - third)
    a, p, b = (np.array(v) * 1000 for v in (earlier, previous, shipped))
    log.info("faces %d: earlier median %.1f p95 %.1f ms | previous median %.1f p95 %.1f ms | shipped median %.1f "
             "p95 %.1f ms | shipped/previous medians %.2f, p95 %.2f", len(a), np.median(a), np.percentile(a, 95),
             np.median(p), np.percentile(p, 95), np.median(b), np.percentile(b, 95), np.median(b) / np.median(p),
             np.percentile(b, 95) / np.percentile(p, 95))
    return 0


if __name__ == "__main__":
    sys.exit(main())
