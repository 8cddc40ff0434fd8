"""The landmarker's runner: CPU and wall time a face, and whether the landmarks move, for each way to run it.

    python bench/landmarker_cpu.py [--frames 120] [--every 4] [--rounds 2] [--json out.json]

The landmarker (engine/recognition/recognize.py `Landmarker`) detects each face again in four crops around its box
before it is embedded. Every face YuNet finds (>= 24 px) in every `--every`-th frame of the dev clip, enlarged to
1080p, goes through it once per runner, the runners taking turns `--rounds` times in one process (a load spike from
the machine's other users hits all of them alike). Reported per runner: process CPU ms and wall ms a face (medians
over the rounds), the largest landmark difference from the first runner's in px, and the least cosine between the
two embeddings of the same face. Runners: onnxruntime on 2 threads (the default before stop 42) and 1 thread (the
landmarker's since), OpenVINO in f32 on 1 thread (the dynamic model: every crop has its own size).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from engine.config import Settings  # noqa: E402
from engine.models.backends import OnnxRuntimeRunner, OpenVinoRunner, openvino_bf16  # noqa: E402
from engine.models.weights import model_path  # noqa: E402
from engine.recognition.recognize import create_embedder, create_landmarker  # noqa: E402
from engine.stages.detect import create_detector  # noqa: E402

DATA = Path(os.environ.get("BLURCAST_DATA", REPO.parent / "shared" / "data"))
CLIP = DATA / "video_hamilton" / "short_hamilton_clip.mp4"
log = logging.getLogger("landmarker_cpu")

RUNNERS = {
    "onnxruntime-2-threads": lambda: OnnxRuntimeRunner(model_path("yunet"), 2),
    "onnxruntime-1-thread": lambda: OnnxRuntimeRunner(model_path("yunet"), 1),
    "openvino-f32-1-thread": lambda: OpenVinoRunner(model_path("yunet"), 1, takes_images=True, precision="f32",
                                                    per_shape=False),
}


def faces_of(frames: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(frame, box, landmarks) of every face >= 24 px the stream's detector finds: what the worker is handed."""
    detector = create_detector(Settings().updated({"backend": "onnxruntime"}))
    jobs = []
    for frame in frames:
        found, _ = detector.passes(frame, 0.5)
        jobs += [(frame, found.xyxy[k], found.landmarks[k]) for k in range(len(found))
                 if found.xyxy[k][2] - found.xyxy[k][0] >= 24]
    return jobs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--every", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    if not CLIP.exists():
        log.error("the dev clip is not at %s (set BLURCAST_DATA)", CLIP)
        return 2
    capture, frames = cv2.VideoCapture(str(CLIP)), []
    while len(frames) < args.frames and (frame := capture.read()[1]) is not None:
        frames.append(cv2.resize(frame, (1920, 1080), interpolation=cv2.INTER_LINEAR))
    jobs = faces_of(frames[::args.every])
    if not jobs:
        log.error("no face found in the clip's frames")
        return 1
    names = [n for n in RUNNERS if "openvino" not in n or openvino_bf16()]  # f32 OpenVINO only where it is auto's
    landmarker, embedder = create_landmarker(Settings()), create_embedder(Settings(), backend="onnxruntime")
    times: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
    results: dict[str, dict] = {}
    reference: tuple[np.ndarray, np.ndarray] | None = None
    for _ in range(args.rounds):
        for name in names:
            landmarker.detector.runner = RUNNERS[name]()
            for job in jobs[:3]:  # first calls allocate
                landmarker(*job)
            cpu0, wall0 = time.process_time(), time.perf_counter()
            points = np.stack([landmarker(*job) for job in jobs])
            cpu1, wall1 = time.process_time(), time.perf_counter()
            times[name].append((1000 * (cpu1 - cpu0) / len(jobs), 1000 * (wall1 - wall0) / len(jobs)))
            vectors = embedder.embed_aligned(np.stack([landmarker.align(*job) for job in jobs]))
            reference = reference or (points, vectors)
            results[name] = {"landmarks_max_diff_px": round(float(np.abs(points - reference[0]).max()), 5),
                             "cosine_min": round(float((vectors * reference[1]).sum(1).min()), 6)}
    base_cpu = float(np.median([c for c, _ in times[names[0]]]))
    for name in names:
        cpu, wall = float(np.median([c for c, _ in times[name]])), float(np.median([w for _, w in times[name]]))
        results[name] |= {"cpu_ms_per_face": round(cpu, 2), "wall_ms_per_face": round(wall, 2),
                          "cpu_ratio_to_first": round(cpu / base_cpu, 3)}
    report = {"faces": len(jobs), "rounds": args.rounds, "runners": results}
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
