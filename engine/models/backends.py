"""Run a network on torch (CPU or CUDA) or on onnxruntime (CPU), with the same inputs and outputs.

Detectors and the recognizer call `runner.run(batch)` and never care which one runs: torch is the
reference implementation (`engine/models/`), onnxruntime an optional CPU backend chosen by measurement.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np

log = logging.getLogger(__name__)

TORCH_CPU_THREADS = int(os.environ.get("BLURCAST_TORCH_THREADS", "1"))


class NetworkRunner(Protocol):
    name: str

    def run(self, batch: np.ndarray) -> list[np.ndarray]: ...


def cuda_available() -> bool:
    """Whether torch can use a GPU. Without an NVIDIA driver there is none, and importing torch just to
    learn that costs a second of start-up (measured), so that is checked first."""
    if not (Path("/proc/driver/nvidia/version").exists() or shutil.which("nvidia-smi")):
        return False
    import torch

    return torch.cuda.is_available()


def resolve_backend(requested: str) -> str:
    """`auto` picks torch on CUDA (the user's rig) and onnxruntime on CPU when installed (faster there)."""
    if requested != "auto":
        return requested
    if cuda_available():
        return "torch"
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return "torch"
    return "onnxruntime"


class TorchRunner:
    def __init__(self, module_factory: Callable[[Path], object], onnx_path: Path) -> None:
        import torch

        self._torch = torch
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.module = module_factory(onnx_path).eval().to(self.device)
        self.name = f"torch-{self.device.type}"

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        torch = self._torch
        if self.device.type == "cpu":
            # One intra-op thread, set in the calling thread (OpenMP's count is per thread: the detector runs on
            # its own). The pipeline runs two networks at once on 2 cores; with 2 threads each, OpenMP teams wait
            # for each other's preempted threads: the pipeline measured 2.6-16x slower (bench/torch_cpu.py).
            torch.set_num_threads(TORCH_CPU_THREADS)
        with torch.inference_mode():
            outputs = self.module(torch.from_numpy(batch).to(self.device))
        if isinstance(outputs, torch.Tensor):
            outputs = (outputs,)
        return [o.float().cpu().numpy() for o in outputs]


class OnnxRuntimeRunner:
    def __init__(self, onnx_path: Path, threads: int = 2) -> None:
        import onnx
        import onnxruntime as ort

        model = onnx.load(str(onnx_path))
        _make_input_dynamic(model)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = threads
        # Several sessions share 2 cores: spinning threads starve each other (measured 2x slower).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.name = "onnxruntime-cpu"

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        return self.session.run(None, {self.input_name: batch})


def _make_input_dynamic(model) -> None:
    """The files fix their input size (YuNet 640x640, CenterFace 32x32); frames come in any size."""
    for value in list(model.graph.input) + list(model.graph.output):
        for axis, dim in enumerate(value.type.tensor_type.shape.dim):
            dim.dim_param = f"d{axis}"
    del model.graph.value_info[:]


def make_runner(backend: str, onnx_path: Path, module_factory: Callable[[Path], object]) -> NetworkRunner:
    chosen = resolve_backend(backend)
    runner: NetworkRunner
    if chosen == "onnxruntime":
        runner = OnnxRuntimeRunner(onnx_path)
    elif chosen == "torch":
        runner = TorchRunner(module_factory, onnx_path)
    else:
        raise ValueError(f"unknown backend {backend!r}")
    log.info("%s runs on %s", onnx_path.name, runner.name)
    return runner
