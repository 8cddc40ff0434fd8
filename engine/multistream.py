"""One engine process serving several streams, with the networks' calls batched across them.

A GPU box anonymizes a team's or a platform's streams: each stream is an ordinary `Engine` (its own source,
pipeline, tracker, settings, facebank, sinks and control socket under its own state folder), but the
detector and the recognizer are one network each, behind a `BatchingRunner` that merges the calls the
streams make at about the same time into one batch. On a GPU one batch of N frames costs far less than N
calls; on CPU it changes little (and the CPU default stays one stream per process).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.client import private_dir
from engine.config import Settings, load_settings
from engine.pipeline import Pipeline
from engine.recognition.gallery import Gallery
from engine.recognition.identify_facebank import FacebankIdentifier
from engine.recognition.recognize import FaceEmbedder
from engine.runner import Engine
from engine.stages.sink import Sink

log = logging.getLogger(__name__)

DEFAULT_WAIT_MS = 3.0  # how long a batch waits for the other streams' calls: bounds the latency it adds


@dataclass
class _Call:
    batch: Any  # np.ndarray or torch.Tensor, batch first
    done: threading.Event = field(default_factory=threading.Event)
    result: list | None = None
    error: BaseException | None = None


class BatchingRunner:
    """A network runner shared by several threads: calls that arrive within `wait_ms` of each other (up to
    `expected` of them) run as one batch per input shape, and each caller gets back its own rows.

    Works with host arrays (`run`) and, where the wrapped runner has `run_tensor`, with device tensors.
    """

    def __init__(self, runner: Any, expected: int, wait_ms: float = DEFAULT_WAIT_MS) -> None:
        self.runner = runner
        self.name = f"{runner.name}, batched"
        self.expected = max(1, expected)
        self.wait_s = wait_ms / 1000
        self.batches = 0  # network calls made
        self.items = 0  # caller requests served
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._stopped = threading.Event()  # the worker is gone: a call now would wait forever
        self._worker = threading.Thread(target=self._serve, name=f"batch-{runner.name}", daemon=True)
        self._worker.start()
        self.plans_per_shape = getattr(runner, "plans_per_shape", False)  # CUDA: engine/models/cuda_plans.py
        self.warm_first = getattr(runner, "warm_first", False)  # CUDA: kernels loaded in the engine's warm-up
        self.takes_images = getattr(runner, "takes_images", False)  # OpenVINO: uint8 images, batched along N too
        self._switch_lock = threading.Lock()
        self._compile_now = 0  # streams asking OpenVINO to compile in the calling thread (background_compiles)

    # OpenVINO's compile switch, passed through: without it the pipeline could neither compile this frame size's
    # shapes in its warm-up (live) nor make file mode compile in the calling thread (deterministic), and every
    # shape compiled mid-stream on a thread of its own. AttributeError where the runner has none (hasattr). Each
    # stream's pipeline sets it: off counts as one more asking to compile now (a warm-up, file mode), on as one
    # fewer, so that a stream whose warm-up ends first does not switch it back on under another's.
    @property
    def background_compiles(self) -> bool:
        return self.runner.background_compiles

    @background_compiles.setter
    def background_compiles(self, value: bool) -> None:
        with self._switch_lock:
            self._compile_now = max(0, self._compile_now + (-1 if value else 1))
            self.runner.background_compiles = self._compile_now == 0

    @property
    def STATIC_AFTER(self) -> int:  # the wrapped runner's class constant, read by Pipeline.warm_up
        return self.runner.STATIC_AFTER

    def warm(self, batches: list[np.ndarray], what: str) -> None:
        warm = getattr(self.runner, "warm", None)
        if warm is not None:
            warm(batches, what)

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        return self._submit(batch)

    def run_tensor(self, batch: Any) -> list[Any]:
        return self._submit(batch)

    def close(self) -> None:
        """Stop after the calls already queued; waits for the worker, so no network call is still running
        when the process exits (native thread pools abort the process when torn down mid-call)."""
        self._calls.put(None)
        if self._worker is not threading.current_thread():
            self._worker.join(timeout=10.0)

    def _submit(self, batch: Any) -> list:
        call = _Call(batch)
        self._calls.put(call)
        # A detection started as a frame arrived may come after close: it must fail (its frame is blurred
        # whole), not hold its thread, which the interpreter joins at exit, forever.
        while not call.done.wait(0.5):
            if self._stopped.is_set() and not call.done.is_set():
                raise RuntimeError("the shared network runner was closed")
        if call.error is not None:
            raise call.error
        return call.result  # type: ignore[return-value]

    def _serve(self) -> None:
        try:
            self._serve_batches()
        finally:
            self._stopped.set()

    def _serve_batches(self) -> None:
        while (first := self._calls.get()) is not None:
            calls, deadline = [first], time.monotonic() + self.wait_s
            while len(calls) < self.expected:
                try:
                    call = self._calls.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if call is None:
                    self._calls.put(None)  # stop after this batch
                    break
                calls.append(call)
            for group in _by_shape(calls):
                self._run_group(group)

    def _run_group(self, calls: list[_Call]) -> None:
        try:
            tensors = _is_tensor(calls[0].batch)
            joined = _concat([c.batch for c in calls], tensors)
            outputs = self.runner.run_tensor(joined) if tensors else self.runner.run(joined)
            self.batches += 1
            self.items += len(calls)
            sizes = [c.batch.shape[0] for c in calls]
            split = [_split(o, sizes) for o in outputs]
            for i, call in enumerate(calls):
                call.result = [parts[i] for parts in split]
        except BaseException as exc:  # every caller fails (and its pipeline fails closed), the worker lives on
            for call in calls:
                call.error = exc
        finally:
            for call in calls:
                call.done.set()


def _is_tensor(batch: Any) -> bool:
    return not isinstance(batch, np.ndarray)


def _concat(parts: list, tensors: bool) -> Any:
    if len(parts) == 1:
        return parts[0]
    if tensors:
        import torch

        return torch.cat(parts)
    return np.concatenate(parts)


def _split(output: Any, sizes: list[int]) -> list:
    """Each caller's rows. YuNet's ONNX file reshapes to [1, N*A, C] (the batch folded into the anchors,
    batch-major), the torch port to [N, A, C]: both are cut back per caller."""
    total, parts, at = sum(sizes), [], 0
    if output.shape[0] == total:
        for n in sizes:
            parts.append(output[at: at + n])
            at += n
        return parts
    if output.shape[0] != 1 or output.shape[1] % total:
        raise ValueError(f"cannot split an output of shape {tuple(output.shape)} into batches of {sizes}")
    per_item = output.shape[1] // total
    for n in sizes:
        parts.append(output[:, at * per_item: (at + n) * per_item])
        at += n
    return parts


def _by_shape(calls: list[_Call]) -> list[list[_Call]]:
    groups: dict[tuple, list[_Call]] = {}
    for call in calls:
        groups.setdefault((_is_tensor(call.batch), tuple(call.batch.shape[1:])), []).append(call)
    return list(groups.values())


# --- the streams ---------------------------------------------------------------------------------------------
@dataclass
class StreamSpec:
    """One stream: where it reads, where its state lives (settings.json, engine.sock), what it writes."""

    name: str
    source: Any  # a source spec (camera, file, srt/rtmp/... URL), or an opened source object
    home: Path
    sinks: list[Sink] = field(default_factory=list)
    loop: bool = False
    gallery: Callable[[], Gallery] | None = None  # its own facebank's gallery; None: nobody stays visible
    facebank: Any = None  # its facebank commands (engine.service.FacebankCommands), for its control socket
    tls: Any = None  # engine.stream_options.Tls for its https:// or rtmps:// sources (None: the default)


class SharedNetworks:
    """The detector and recognizer networks, loaded once and batched across `streams` callers."""

    def __init__(self, streams: int, backend: str = "auto", device: str | None = None, half: bool = False,
                 wait_ms: float = DEFAULT_WAIT_MS) -> None:
        from engine.models.backends import make_runner, resolve_backend
        from engine.models.weights import model_path
        from engine.recognition.recognize import RECOGNIZER, recognizer_module
        from engine.stages.detectors.yunet import _torch_module as yunet_module

        self.on_device = device is not None or (resolve_backend(backend) == "torch")
        if self.on_device:
            from engine.gpu.device import DeviceRunner, pick_device

            where = pick_device(device)
            self.device = where
            detector = DeviceRunner(yunet_module(model_path("yunet")), where, half)
            recognizer = DeviceRunner(recognizer_module(model_path(RECOGNIZER)), where, half)
            detector.max_batch = streams  # the batching below merges up to one call per stream
        else:
            detector = make_runner(backend, model_path("yunet"), yunet_module, network="yunet")
            recognizer = make_runner(backend, model_path(RECOGNIZER), recognizer_module, network=RECOGNIZER)
        self.detector = BatchingRunner(detector, streams, wait_ms)
        self.recognizer = BatchingRunner(recognizer, streams, wait_ms)

    def pipeline(self, settings: Settings, gallery: Callable[[], Gallery] | None) -> Pipeline:
        """One stream's pipeline on the shared networks (YuNet; the device path where the networks are on one)."""
        identifier = FacebankIdentifier(FaceEmbedder(self.recognizer), gallery) if gallery is not None else None
        if settings.detector != "yunet":  # the shared network is YuNet: this stream gets its own detector
            return Pipeline(settings, identifier=identifier)
        if not self.on_device:
            from engine.stages.detectors.yunet import YuNetDetector

            return Pipeline(settings, detector=YuNetDetector(self.detector, settings.detect_width),
                            identifier=identifier)
        from engine.gpu.device import DeviceFrames, DeviceYuNetDetector, TensorAnonymizer

        frames = DeviceFrames(self.device)
        detector = DeviceYuNetDetector(self.detector, settings.detect_width, frames)  # type: ignore[arg-type]
        return Pipeline(settings, detector=detector, identifier=identifier,
                        anonymizer_factory=lambda s: TensorAnonymizer(s, frames))

    def close(self) -> None:
        self.detector.close()
        self.recognizer.close()


class MultiStreamEngine:
    """Several `Engine`s in one process on `SharedNetworks`; each with its own control socket when served."""

    def __init__(self, specs: list[StreamSpec], backend: str = "auto", device: str | None = None,
                 half: bool = False, wait_ms: float = DEFAULT_WAIT_MS) -> None:
        if len({s.name for s in specs}) != len(specs):
            raise ValueError("stream names must be unique")
        self.specs = specs
        self.networks = SharedNetworks(len(specs), backend, device, half, wait_ms)
        self.engines: dict[str, Engine] = {}
        for spec in specs:
            private_dir(spec.home)  # 0700, as the single engine's: its log and socket tell what the camera sees
            settings = load_settings(spec.home / "settings.json")
            self.engines[spec.name] = Engine(settings, _open(spec), list(spec.sinks),
                                             pipeline=self.networks.pipeline(settings, spec.gallery))
        self._threads: list[threading.Thread] = []
        self._servers: list[Any] = []

    def start(self, live: bool = True, control: bool = False) -> None:
        """Every stream's frame loop on its own thread (live: bounded latency; else file mode, every frame)."""
        if control:
            self._start_control()
        for name, engine in self.engines.items():
            target = engine.run_live if live else engine.run_file
            thread = threading.Thread(target=target, name=f"stream-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every stream stopped (or `timeout`); True when all did."""
        end = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            thread.join(None if end is None else max(0.0, end - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)

    def stop(self) -> None:
        for engine in self.engines.values():
            engine.stop_event.set()
        self.wait(timeout=5.0)
        for server in self._servers:
            server.close()
        for engine in self.engines.values():
            engine.close()
        self.networks.close()

    def telemetry(self) -> dict[str, dict]:
        return {name: engine.telemetry() for name, engine in self.engines.items()}

    def _start_control(self) -> None:
        """Each stream's control socket (`<home>/engine.sock`) with a single engine's commands, bound to that
        stream's engine and facebank: status, set, preview, sinks, facebank_*, shutdown (of that stream)."""
        from engine.client import EnginePaths
        from engine.service import EngineService

        for spec in self.specs:
            service = EngineService(self.engines[spec.name], EnginePaths(spec.home), facebank=spec.facebank,
                                    tls=spec.tls)
            service.server.start()
            self._servers.append(service.server)


def _open(spec: StreamSpec) -> Any:
    if not isinstance(spec.source, str):
        return spec.source
    from engine.stages.sources import open_source

    return open_source(spec.source, loop=spec.loop, **({"tls": spec.tls} if spec.tls is not None else {}))
