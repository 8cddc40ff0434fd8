"""torch CPU against onnxruntime on the same inputs, same run, interleaved (fair on a shared, busy machine).

    python bench/torch_cpu.py [--repeats 30] [--json out.json]

For YuNet at the dev clip's detection size (640x360 enlarged 1.5x: 960x544) and at 1280x736, and for
SFace (the recognizer; MobileFaceNet before it)
on 4 faces: median ms of onnxruntime, of torch as `engine.models.backends.TorchRunner` runs it, and
of torch variants (2 OpenMP threads as before, channels_last input, a frozen TorchScript trace), each
called in turn inside one loop, so a load spike from the other users of the machine hits all of them alike;
then the whole pipeline's fps on 30 dev-clip frames, each backend and thread count in a fresh process.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from engine import backends  # noqa: E402
from engine.models.backends import OnnxRuntimeRunner, TorchRunner  # noqa: E402
from engine.models.sface import SFace  # noqa: E402
from engine.models.weights import model_path  # noqa: E402
from engine.models.yunet import YuNet  # noqa: E402

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


def pipelines(rounds: int = 2) -> dict[str, list[float]]:
    """fps of the whole pipeline (30 dev-clip frames, file mode), each configuration a fresh process (OpenMP
    keeps its thread teams for the life of a process), alternated `rounds` times."""
    fps: dict[str, list[float]] = {}
    for _ in range(rounds):
        for name, backend, threads in (("onnxruntime", "onnxruntime", "1"), ("torch, 2 threads (before)", "torch", "2"),
                                       ("torch, 1 thread (now)", "torch", "1")):
            env = {**os.environ, "BLURCAST_TORCH_THREADS": threads}
            done = subprocess.run([sys.executable, __file__, "--child", backend], env=env, capture_output=True,
                                  text=True, check=True)
            fps.setdefault(name, []).append(float(done.stdout.split()[-1]))
    return fps


def child(backend: str) -> None:
    """One pipeline, 30 dev-clip frames after one warm-up frame; prints its fps."""
    import cv2

    from engine.config import Settings
    from engine.pipeline import Pipeline

    data = Path(os.environ.get("BLURCAST_DATA", REPO.parent / "shared" / "data"))
    cap = cv2.VideoCapture(str(data / "video_hamilton" / "short_hamilton_clip.mp4"))
    frames = [f for ok, f in (cap.read() for _ in range(31)) if ok]
    pipeline = Pipeline(Settings(backend=backend))
    pipeline.offline = True
    pipeline.process(frames[0].copy(), 0, 1 / 30)
    started = time.perf_counter()
    for index, frame in enumerate(frames[1:], 1):
        pipeline.process(frame.copy(), index, 1 / 30)
    pipeline.close()
    sys.stdout.write(f"{(len(frames) - 1) / (time.perf_counter() - started):.1f}\n")


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
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    rng = np.random.default_rng(0)
    cases = [
        ("yunet 960x544", YuNet.from_onnx, "yunet", rng.uniform(0, 255, (1, 3, 544, 960)).astype(np.float32)),
        ("yunet 1280x736", YuNet.from_onnx, "yunet", rng.uniform(0, 255, (1, 3, 736, 1280)).astype(np.float32)),
        ("sface x4", SFace.from_onnx, "sface",
         rng.uniform(-1, 1, (4, 3, 112, 112)).astype(np.float32)),
    ]
    result = {"torch_threads": torch.get_num_threads()}
    for name, factory, model, batch in cases:
        ms = measure(variants(factory, model_path(model), batch), batch, args.repeats)
        base = ms["onnxruntime"]
        result[name] = {"median_ms": ms, "x_onnxruntime": {k: round(v / base, 2) for k, v in ms.items()}}
        log.info("%s: %s", name, result[name])
    result["pipeline_fps"] = pipelines()
    log.info("pipeline fps: %s", result["pipeline_fps"])
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
