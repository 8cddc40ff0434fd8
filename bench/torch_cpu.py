"""torch CPU against onnxruntime on the same inputs, same run, interleaved (fair on a shared, busy machine).

    python bench/torch_cpu.py [--repeats 30] [--json out.json]

For YuNet at the dev clip's detection size (640x360 enlarged 1.5x: 960x544) and at 1280x736, and for
MobileFaceNet on 4 faces: median ms of onnxruntime, of torch as `engine.backends.TorchRunner` runs it, and
of torch variants (2 OpenMP threads as before, channels_last input, a frozen TorchScript trace); then the
whole pipeline's fps on 20 dev-clip frames with each backend. Each variant is called in turn inside
one loop, so a load spike from the other users of the machine hits all of them alike; ratios are reported.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from engine import backends  # noqa: E402
from engine.backends import OnnxRuntimeRunner, TorchRunner  # noqa: E402
from engine.models.mobilefacenet import MobileFaceNet  # noqa: E402
from engine.models.yunet import YuNet  # noqa: E402
from engine.weights import model_path  # noqa: E402

log = logging.getLogger("torch_cpu")


def variants(module_factory, path: Path, example: np.ndarray) -> dict[str, Callable[[np.ndarray], object]]:
    ort = OnnxRuntimeRunner(path)
    runner = TorchRunner(module_factory, path)
    module = runner.module
    with torch.inference_mode():
        frozen = torch.jit.freeze(torch.jit.trace(module, torch.from_numpy(example).contiguous(
            memory_format=torch.channels_last)))

    def channels_last(batch: np.ndarray) -> object:
        with torch.inference_mode():
            return module(torch.from_numpy(batch).contiguous(memory_format=torch.channels_last))

    def traced(batch: np.ndarray) -> object:
        with torch.inference_mode():
            return frozen(torch.from_numpy(batch).contiguous(memory_format=torch.channels_last))

    def two_threads(batch: np.ndarray) -> object:  # TorchRunner before: the default 2 OpenMP threads
        backends.TORCH_CPU_THREADS = 2
        try:
            return runner.run(batch)
        finally:
            backends.TORCH_CPU_THREADS = 1

    return {"onnxruntime": ort.run, "torch, 1 thread (TorchRunner now)": runner.run,
            "torch, 2 threads (before)": two_threads, "torch channels_last input": channels_last,
            "torch frozen trace": traced}


def pipelines(frames: list[np.ndarray], rounds: int = 2) -> dict[str, list[float]]:
    """fps of the whole pipeline (file mode, 20 dev-clip frames): onnxruntime, torch with 1 and 2 threads."""
    from engine.config import Settings
    from engine.pipeline import Pipeline

    torch_pipeline, ort_pipeline = Pipeline(Settings(backend="torch")), Pipeline(Settings(backend="onnxruntime"))
    torch_pipeline.offline = ort_pipeline.offline = True
    fps: dict[str, list[float]] = {}
    for _ in range(rounds):
        for name, pipeline, threads in (("onnxruntime", ort_pipeline, 1), ("torch, 1 thread", torch_pipeline, 1),
                                        ("torch, 2 threads (before)", torch_pipeline, 2)):
            backends.TORCH_CPU_THREADS = threads
            started = time.perf_counter()
            for index, frame in enumerate(frames):
                pipeline.process(frame.copy(), index, 1 / 30)
            fps.setdefault(name, []).append(round(len(frames) / (time.perf_counter() - started), 1))
    backends.TORCH_CPU_THREADS = 1
    return fps


def measure(calls: dict[str, Callable], batch: np.ndarray, repeats: int) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in calls}
    for call in calls.values():  # warm-up: first calls allocate and pick kernels
        call(batch)
        call(batch)
    for _ in range(repeats):
        for name, call in calls.items():
            started = time.perf_counter()
            call(batch)
            times[name].append((time.perf_counter() - started) * 1000)
    return {name: round(statistics.median(t), 2) for name, t in times.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    rng = np.random.default_rng(0)
    cases = [
        ("yunet 960x544", YuNet.from_onnx, "yunet", rng.uniform(0, 255, (1, 3, 544, 960)).astype(np.float32)),
        ("yunet 1280x736", YuNet.from_onnx, "yunet", rng.uniform(0, 255, (1, 3, 736, 1280)).astype(np.float32)),
        ("mobilefacenet x4", MobileFaceNet.from_onnx, "mobilefacenet",
         rng.uniform(-1, 1, (4, 3, 112, 112)).astype(np.float32)),
    ]
    result = {"torch_threads": torch.get_num_threads()}
    for name, factory, model, batch in cases:
        ms = measure(variants(factory, model_path(model), batch), batch, args.repeats)
        base = ms["onnxruntime"]
        result[name] = {"median_ms": ms, "x_onnxruntime": {k: round(v / base, 2) for k, v in ms.items()}}
        log.info("%s: %s", name, result[name])
    import cv2

    data = Path(os.environ.get("BLURCAST_DATA", REPO.parent / "shared" / "data"))
    cap = cv2.VideoCapture(str(data / "video_hamilton" / "short_hamilton_clip.mp4"))
    frames = [f for ok, f in (cap.read() for _ in range(20)) if ok]
    if frames:
        result["pipeline_fps"] = pipelines(frames)
        log.info("pipeline fps: %s", result["pipeline_fps"])
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
