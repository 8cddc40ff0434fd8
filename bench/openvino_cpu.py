"""OpenVINO against onnxruntime on the CPU: CPU ms per call of each network, interleaved in one process.

    python bench/openvino_cpu.py [--frames 40] [--backends onnxruntime,openvino] [--json out.json]

YuNet as the live 1080p frame runs it: the main pass (1920x1080 detected at 1280x720, padded to 1280x736)
and one full-resolution tile (the tile pass's first tile), on the dev clip's frames enlarged to 1080p; the
landmarker's refine pass on each face found (a crop with the face at 160 px); MobileFaceNet on batches of
8 aligned faces (4 faces and their mirror images). Every call of every backend is made in turn on the same
input, so a load spike from the machine's other users hits all of them alike; the figure is process CPU
time (OpenVINO's and onnxruntime's own threads included), also wall time. Reported per backend: median,
p95 and worst CPU ms per call, and CPU ms per 1080p frame (main pass + one tile); the ratio to the first
backend is taken on the medians.
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
from engine.models.backends import OPENVINO_DETECTOR_THREADS, OPENVINO_THREADS, OpenVinoRunner  # noqa: E402
from engine.models.weights import model_path  # noqa: E402
from engine.recognition.recognize import (  # noqa: E402
    RECOGNIZER,
    FaceEmbedder,
    align_face,
    create_embedder,
    preprocess,
)
from engine.stages.detect import create_detector, detection_scale  # noqa: E402
from engine.stages.detectors.yunet import (  # noqa: E402
    TILE_BUDGET,
    YuNetDetector,
    tile_grid,
    tile_max_face,
)

DATA = Path(os.environ.get("BLURCAST_DATA", REPO.parent / "shared" / "data"))
CLIP = DATA / "video_hamilton" / "short_hamilton_clip.mp4"
log = logging.getLogger("openvino_cpu")


def frames_1080p(count: int) -> list[np.ndarray]:
    """`count` frames spread over the dev clip, enlarged to 1920x1080."""
    cap = cv2.VideoCapture(str(CLIP))
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    out = []
    for index in np.linspace(0, total - 1, count).astype(int):
        cap.set(cv2.CAP_PROP_POS_FRAMES, int(index))
        ok, frame = cap.read()
        if ok:
            out.append(cv2.resize(frame, (1920, 1080), interpolation=cv2.INTER_LINEAR))
    cap.release()
    return out


def timed(call, *args) -> tuple[float, float, object]:
    """(process CPU ms, wall ms, result) of one call."""
    cpu, wall = time.process_time(), time.perf_counter()
    result = call(*args)
    return (time.process_time() - cpu) * 1000, (time.perf_counter() - wall) * 1000, result


def stats(values: list[float]) -> dict[str, float]:
    a = np.asarray(values)
    return {"median": round(float(np.median(a)), 2), "p95": round(float(np.percentile(a, 95)), 2),
            "max": round(float(a.max()), 2), "n": len(a)}


def networks(backend: str) -> tuple[YuNetDetector, FaceEmbedder]:
    """The stream's detector and the recognizer on `backend`; "openvino-f32" is OpenVINO told to compute in f32
    (its default is bf16 where the CPU has bf16), the runners `auto` builds in f32 on AVX2 CPUs."""
    if backend != "openvino-f32":
        return create_detector(Settings(backend=backend)), create_embedder(Settings(backend=backend))
    detector = YuNetDetector(OpenVinoRunner(model_path("yunet"), OPENVINO_DETECTOR_THREADS, takes_images=True,
                                            precision="f32"), Settings().detect_width)
    embedder = FaceEmbedder(OpenVinoRunner(model_path(RECOGNIZER), OPENVINO_THREADS, precision="f32",
                                           per_shape=False))
    return detector, embedder


def run(frames: list[np.ndarray], backends: list[str]) -> dict:
    built = {b: networks(b) for b in backends}
    detectors = {b: built[b][0] for b in backends}
    embedders = {b: built[b][1] for b in backends}
    reference = detectors[backends[0]]  # the faces embedded come from the first backend: the same input for all
    scale = detection_scale(frames[0], reference.detect_width)
    x1, y1, x2, y2 = tile_grid(1920, 1080, TILE_BUDGET * scale * scale, tile_max_face(scale))[0]
    cpu: dict[str, dict[str, list[float]]] = {b: {"main": [], "tile": [], "frame": [], "refine": [], "embed8": []}
                                              for b in backends}
    wall: dict[str, list[float]] = {b: [] for b in backends}
    # Warm-up, not counted: OpenVINO compiles a model for a shape on its STATIC_AFTER-th call (~0.2 s, once; the
    # runner logs it). The refine crops' shapes vary: their compiles stay in the figures (refine's p95 and max).
    for warm in (True, False):
        for frame in frames[:OpenVinoRunner.STATIC_AFTER] if warm else frames:
            faces = reference._detect_at(frame, scale, 0.5)
            crops = np.stack([align_face(frame, k) for k in faces.landmarks[:4]]) if len(faces) else None
            batch = preprocess(np.concatenate([crops, crops[:, :, ::-1]])) if crops is not None else None
            for b in backends:
                det = detectors[b]
                main_cpu, main_wall, _ = timed(det._detect_at, frame, scale, 0.5)
                tile_cpu, tile_wall, _ = timed(det._detect_at, frame[y1:y2, x1:x2], 1.0, 0.5)
                refine = [timed(det.refine, frame, box)[0] for box in faces.xyxy[:4]]
                embed = timed(embedders[b].runner.run, batch)[0] if batch is not None and len(batch) == 8 else None
                if warm:
                    continue
                cpu[b]["main"].append(main_cpu)
                cpu[b]["tile"].append(tile_cpu)
                cpu[b]["frame"].append(main_cpu + tile_cpu)
                cpu[b]["refine"] += refine
                if embed is not None:
                    cpu[b]["embed8"].append(embed)
                wall[b].append(main_wall + tile_wall)
    report = {"main_pass": f"{frames[0].shape[1]}x{frames[0].shape[0]} at scale {scale:.3f}",
              "tile": f"{x2 - x1}x{y2 - y1}", "frames": len(frames), "runners": {}, "cpu_ms": {}, "wall_ms_frame": {}}
    for b in backends:
        report["runners"][b] = {"detector": detectors[b].runner_name, "embedder": embedders[b].runner_name}
        report["cpu_ms"][b] = {k: stats(v) for k, v in cpu[b].items() if v}
        report["wall_ms_frame"][b] = stats(wall[b])
    base = report["cpu_ms"][backends[0]]
    report["ratio_of_medians"] = {b: {k: round(report["cpu_ms"][b][k]["median"] / base[k]["median"], 3)
                                      for k in base if k in report["cpu_ms"][b]} for b in backends[1:]}
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=40, help="dev-clip frames, spread over the clip")
    parser.add_argument("--backends", default="onnxruntime,openvino",
                        help="comma-separated: onnxruntime, openvino (its default precision), openvino-f32, torch")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not CLIP.exists():
        log.error("no dev clip at %s (set BLURCAST_DATA)", CLIP)
        return 2
    report = run(frames_1080p(args.frames), args.backends.split(","))
    report["load_average"] = os.getloadavg()
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
