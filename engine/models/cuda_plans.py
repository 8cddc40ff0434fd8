"""Networks on CUDA: few input shapes, all of one network's calls on one thread, those shapes planned up front.

Measured on an NVIDIA H200 (torch 2.11 + CUDA 13, cuDNN's v8 API; docs/gpu.md, "First GPU run"): the engine's
own path on CUDA ran the dev clip in file mode at 2.3 fps, p50 16.8 ms but p95 2.1 s. cuDNN builds an execution
plan for every new input shape of every convolution, ~2 s for YuNet's ~60 layers, and the detector sees a new
shape for nearly every crop it looks at again (`YuNetDetector.refine`, second looks): 58 shapes on the dev clip,
~57 x 2 s of the run's 118 s. PyTorch caches those plans per *thread* (its cache is `thread_local`), so a shape
seen on the detector thread is planned again on the prefetch or embedding thread.

So, on CUDA:
- `NetworkThread`: every call of one network runs on one thread of its own, whichever thread asks.
- `crop_canvas` / `padded_batch`: crops are letterboxed onto one of a few square canvases and batches are padded
  to a power of two, so a stream presents a handful of shapes (its main pass and tiles, `CROP_SIDES`, the batch
  sizes), not one per crop.
- `warm_async`: those shapes are run once, on that thread, before frames depend on them (`Pipeline.warm_up`).
Zero padding beyond the 32-multiple letterbox moves refined landmarks a median 1.0 % of the face's width on the
dev clip, less than a 2 px move of the box does (tests/test_cuda_plans.py; the corpus: docs/gpu.md). A CPU backend
keeps exact shapes, where a new shape costs nothing.

The second GPU run (stop 28) measured the cure at the root: with cuDNN off (`cuda_kernels`), PyTorch's own kernels
plan nothing, and the stalls left after the measures above (the second looks' mosaics, shapes no warm-up foresaw)
went with it. The measures above now apply only where cuDNN is turned back on (`plans_per_shape`); with PyTorch's own
kernels the crops keep their exact shapes and calls run on the caller's thread, as on the CPU (docs/gpu.md).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np

log = logging.getLogger(__name__)

T = TypeVar("T")

# Square canvases for the crops the detector looks at again (face ~160 px with context: 128-1056 px a side on
# the corpus); a larger crop is rounded up to LARGE_STEP a side. Five shapes to plan, not one per crop.
CROP_SIDES = (256, 384, 512, 768, 1024)
LARGE_STEP = 512
BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64)  # the recognizer's batches (one per face; two with the mirror image on)


def crop_canvas(height: int, width: int) -> tuple[int, int]:
    """The canvas a crop of height x width (already a 32-multiple) is letterboxed onto on CUDA."""
    side = max(height, width)
    for square in CROP_SIDES:
        if side <= square:
            return square, square
    return -(-height // LARGE_STEP) * LARGE_STEP, -(-width // LARGE_STEP) * LARGE_STEP


def padded_batch(count: int) -> int:
    """The batch size `count` items are padded to on CUDA: the next of BATCH_SIZES (or a multiple of the last)."""
    for size in BATCH_SIZES:
        if count <= size:
            return size
    return -(-count // BATCH_SIZES[-1]) * BATCH_SIZES[-1]


def pad_batch(batch: np.ndarray) -> np.ndarray:
    """`batch` padded along its first axis with copies of its last item (real data: no NaN from zeros)."""
    extra = padded_batch(len(batch)) - len(batch)
    if extra == 0 or len(batch) == 0:
        return batch
    return np.concatenate([batch, np.repeat(batch[-1:], extra, axis=0)])


def cuda_kernels() -> None:
    """The convolution kernels every network on CUDA runs with: PyTorch's own, in full fp32.

    - cuDNN is off (BLURCAST_CUDNN=1 turns it back on): it builds an execution plan for each new input shape, 0.6-2.7 s
      for YuNet on the H200, while PyTorch's own kernels run a new shape at once (2-7 ms) and the engine's shapes
      no slower (YuNet at 1280x736: 2.5 against 2.9 ms a call). A 1080p file ran at 19.2 fps against 9.9 after a
      warm-up of 0.3 s against 7.9 s; a photo took 4.7 s against 26 s (`bench/cudnn_ab.py`, `bench/gpu_profile.sh`,
      docs/gpu.md). The recognizer's batches of 8-16 are slower without it (3-4.4 against 1.2-2 ms), a small
      price next to a plan's stall.
    - No TF32 (where cuDNN is turned back on, and for matrix products): with its 10-bit mantissa YuNet's outputs
      differed from onnxruntime's by up to 0.012 (CPU torch: 1e-6), enough to move a score across a threshold.
      Every quality figure of this project is measured on the CPU; the GPU must compute the same function."""
    import torch

    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.enabled = os.environ.get("BLURCAST_CUDNN", "0") == "1"


def plans_per_shape(device_type: str) -> bool:
    """Whether a network on this device plans each new input shape, so that the measures of this module apply (few
    shapes, one thread per network, planned at start): CUDA with cuDNN turned back on (BLURCAST_CUDNN=1) only.
    PyTorch's own kernels, the default on CUDA since stop 28, took a new YuNet shape in 2-7 ms against a steady
    1.7-3.5 ms a call (bench/cudnn_ab.py): the crops keep their exact shapes, and the GPU computes the CPU's function.
    Call after `cuda_kernels`."""
    import torch

    return device_type == "cuda" and torch.backends.cudnn.enabled


class NetworkThread:
    """Runs every call of one network on one thread (PyTorch's cuDNN plan cache is per thread). A call from
    that thread itself runs at once, so a network that calls back into its runner cannot deadlock."""

    def __init__(self, name: str) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"cuda-{name}")
        self._ident: int | None = None
        self._stop = threading.Event()  # set by close() and at exit: queued warm-ups are dropped
        self._pool.submit(self._remember).result()
        self._queued: set[tuple[int, ...]] = set()  # input shapes queued for planning, by any runner on this thread
        self._queued_lock = threading.Lock()
        _OPEN.add(self)

    @property
    def closed(self) -> bool:
        return self._stop.is_set()

    def not_yet_queued(self, shapes: Iterable[tuple[int, ...]]) -> list[tuple[int, ...]]:
        """Those of `shapes` that no runner on this thread has queued for planning yet; now marked as queued."""
        with self._queued_lock:
            new = [shape for shape in shapes if shape not in self._queued]
            self._queued.update(new)
        return new

    def _remember(self) -> None:
        self._ident = threading.get_ident()

    def call(self, fn: Callable[..., T], *args) -> T:
        if threading.get_ident() == self._ident:
            return fn(*args)
        return self._pool.submit(fn, *args).result()  # its exception is raised here, in the caller's thread

    def warm_async(self, fn: Callable[[np.ndarray], object], batches: Iterable[np.ndarray], what: str) -> None:
        """Queue `fn` on each batch on this thread, so that their shapes' plans exist before a frame needs them.
        Not waited for: the thread takes calls in order, so a later call waits behind them (Pipeline.warm_up
        makes one before the first frame). A failure is logged; the shape is then planned when it comes."""
        started = time.perf_counter()
        batches = list(batches)

        def plan_all() -> None:
            for batch in batches:
                if self._stop.is_set():  # closing, or the process is exiting: a plan is ~2 s, do not wait for all
                    return
                try:
                    fn(batch)
                except Exception:
                    log.exception("%s: planning input %s on CUDA failed", what, batch.shape)
            log.info("%s: %d input shapes planned on CUDA in %.1f s", what, len(batches), time.perf_counter() - started)

        self._pool.submit(plan_all)

    def close(self) -> None:
        self._stop.set()
        self._pool.shutdown(wait=False, cancel_futures=True)


_OPEN: weakref.WeakSet[NetworkThread] = weakref.WeakSet()
_SHARED: dict[str, NetworkThread] = {}
_SHARED_LOCK = threading.Lock()


def network_thread(name: str) -> NetworkThread:
    """The process's one thread for network `name`. Plans are kept per thread, so every runner of that network
    (the stream's detector, the landmarker, a detector made again for new settings, the next multi-stream engine)
    finds the shapes already planned. The price: their calls queue on one thread (a crop is ~1-2 ms on a GPU)."""
    with _SHARED_LOCK:
        if name not in _SHARED or _SHARED[name].closed:
            _SHARED[name] = NetworkThread(name)
        return _SHARED[name]


def _stop_all() -> None:
    for network in list(_OPEN):
        network.close()


# Before the interpreter joins the pools' threads at exit (atexit would run after that join): a short command or a
# Ctrl-C during start-up must not wait for every queued plan.
getattr(threading, "_register_atexit", atexit.register)(_stop_all)
