"""The frame kept on the device: uploaded once, detected, aligned and embedded, anonymized, downloaded once.

Each stage of the ordinary `Pipeline` gets a device twin that reads the same uploaded tensor from a
`DeviceFrames` cache (keyed by the host frame object, so the pipeline and its fail-closed rules stay as
they are):

- `DeviceYuNetDetector`: letterbox on the device, YuNet on the device, only the small head outputs come back
  for decoding (`YuNetDetector._decode`, unchanged).
- `DeviceEmbedder`: every face of a frame aligned in one `grid_sample` and embedded in one batch.
- `TensorAnonymizer`: an `Anonymizer` (so still the only maker of `SafeFrame`) whose blur, mosaic and fill
  are tensor ops; only the changed regions travel back, gathered into one transfer.

Overlap: the pipeline's detector thread (and, in file mode, its prefetch of the next frame) already runs
detection of frame n+1 while frame n is anonymized: two workers on the device.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Iterable

import numpy as np
import torch
from torch import Tensor

from engine.config import Settings
from engine.faces import Detections
from engine.gpu import tensor_ops as ops
from engine.models.backends import TORCH_CPU_THREADS
from engine.models.cuda_plans import BATCH_SIZES, cuda_kernels, network_thread, padded_batch, plans_per_shape
from engine.models.weights import model_path
from engine.pipeline import Pipeline
from engine.recognition.recognize import EMBEDDING_DIM, FLIP, FaceEmbedder, l2_normalise
from engine.stages.anonymize import _TOKEN, FADE_REGION_PX, Anonymizer, Region, SafeFrame, _edge_profile
from engine.stages.detectors.yunet import YuNetDetector
from engine.stages.identify import Identifier

log = logging.getLogger(__name__)


def pick_device(requested: str | None = None) -> torch.device:
    """`cuda` where a GPU is present, else `cpu` (the same code runs, and is tested, on both)."""
    if requested:
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class DeviceRunner:
    """A torch network on one device, fed tensors already there; fp16 weights and inputs when `half`.

    On CUDA with cuDNN (BLURCAST_CUDNN=1) every call runs on the network's own thread with its batch padded to a few
    sizes, as TorchRunner's do (engine/models/cuda_plans.py: cuDNN plans each new shape, ~2 s for YuNet, and caches
    plans per thread)."""

    def __init__(self, module: torch.nn.Module, device: torch.device, half: bool = False,
                 one_thread: bool | None = None) -> None:
        self.device = device
        self.dtype = torch.float16 if half else torch.float32
        self.module = module.eval().to(device=device, dtype=self.dtype)
        self.name = f"torch-{device.type}{'-fp16' if half else ''}"
        self._lock = threading.Lock()  # one network call at a time: streams of one module are not re-entrant
        if device.type == "cuda":
            cuda_kernels()  # PyTorch's own kernels; fp32 means fp32 (fp16, asked for, stays fp16)
        self.plans_per_shape = plans_per_shape(device.type) if one_thread is None else one_thread
        self.warm_first = device.type == "cuda"  # CUDA loads its kernels on the first call: in the warm-up
        # One thread per network and precision for the process, not per runner (cuda_plans.network_thread).
        name = f"{type(module).__name__.lower()}-{device}-{self.dtype}"
        self._thread = network_thread(name) if self.plans_per_shape else None
        # Several streams' calls merged into one batch (engine/multistream.py): each item shape is planned at every
        # batch size up to this when first seen, not one size at a time mid-stream. SharedNetworks sets it.
        self.max_batch = 1

    def run_tensor(self, batch: Tensor) -> list[Tensor]:
        if self._thread is None:
            return self._run(batch)
        self._plan_batch_sizes(tuple(batch.shape[1:]))
        count = len(batch)
        extra = padded_batch(count) - count
        if extra and count:  # copies of the last item: real data, and the items of a batch never mix
            batch = torch.cat([batch, batch[-1:].expand(extra, *batch.shape[1:])])
        return [o[:count] for o in self._thread.call(self._run, batch)]

    def warm(self, batches: list[np.ndarray], what: str) -> None:
        """Plan these inputs' shapes on the network's thread, ahead of any later call (not waited for)."""
        if self._thread is not None:
            self._thread.warm_async(lambda b: self._run(torch.from_numpy(b).to(self.device)), batches, what)
            for batch in batches:
                self._plan_batch_sizes(tuple(batch.shape[1:]))

    def _plan_batch_sizes(self, item: tuple[int, ...]) -> None:
        """Queue `item`'s other batch sizes (up to max_batch) the first time it is seen: the call that saw it
        waits behind them once, instead of each merged batch size stalling a frame later."""
        if self.max_batch <= 1 or self._thread is None:
            return
        sizes = [size for size in BATCH_SIZES if 1 < size <= padded_batch(self.max_batch)]
        shapes = self._thread.not_yet_queued([(size, *item) for size in sizes])  # once per thread, not per runner
        if shapes:
            self._thread.warm_async(lambda b: self._run(torch.from_numpy(b).to(self.device)),
                                    [np.zeros(shape, np.float32) for shape in shapes], f"{self.name} batches")

    def _run(self, batch: Tensor) -> list[Tensor]:
        if self.device.type == "cpu":
            torch.set_num_threads(TORCH_CPU_THREADS)  # see engine.backends: per calling thread, 1 on shared cores
        with torch.inference_mode(), self._lock:
            outputs = self.module(batch.to(self.dtype).contiguous(memory_format=torch.channels_last))
        outputs = (outputs,) if isinstance(outputs, Tensor) else outputs
        return [o.float() for o in outputs]

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        """The `NetworkRunner` protocol, for callers that hold host arrays."""
        return [o.cpu().numpy() for o in self.run_tensor(torch.from_numpy(batch).to(self.device))]


class DeviceFrames:
    """The device copy of each host frame in flight, uploaded on first use and shared by every stage.

    Keyed by the host array's identity (the pipeline passes the same object from detection to
    anonymization); the entry holds the array, so its id cannot be reused while cached.
    """

    def __init__(self, device: torch.device, capacity: int = 4) -> None:
        self.device = device
        self.capacity = capacity  # the pipeline holds at most the current frame and two prefetched ones
        self.uploads = 0
        self._entries: OrderedDict[int, tuple[np.ndarray, Tensor]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, frame: np.ndarray) -> Tensor:
        with self._lock:
            entry = self._entries.get(id(frame))
            if entry is not None and entry[0] is frame:
                return entry[1]
        tensor = ops.to_tensor(frame, self.device)
        with self._lock:
            self.uploads += 1
            self._entries[id(frame)] = (frame, tensor)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)
        return tensor

    def forget(self, frame: np.ndarray) -> None:
        with self._lock:
            entry = self._entries.get(id(frame))
            if entry is not None and entry[0] is frame:
                del self._entries[id(frame)]


class DeviceYuNetDetector(YuNetDetector):
    """YuNet with letterbox and network on the device; decoding (a few hundred anchors) stays on the host."""

    def __init__(self, runner: DeviceRunner, detect_width: int, frames: DeviceFrames) -> None:
        super().__init__(runner, detect_width)
        self.frames = frames

    def _detect_at(self, frame: np.ndarray, scale: float, min_score: float, crop: bool = False) -> Detections:
        image = self.frames.get(frame) if frame.base is None else ops.to_tensor(frame, self.frames.device)
        batch = ops.letterbox(image, scale, canvas=self._crop_canvas if crop else None)[None]
        outputs = [o.cpu().numpy() for o in self.runner.run_tensor(batch)]
        return self._decode(outputs, tuple(batch.shape[2:]), scale, min_score)


class DeviceEmbedder:
    """Faces of one frame -> L2-normalised 128-D embeddings: one align (grid_sample) and one network call."""

    dim = EMBEDDING_DIM

    def __init__(self, runner: DeviceRunner, frames: DeviceFrames) -> None:
        self.runner = runner
        self.runner_name = runner.name
        self.frames = frames

    def embed(self, frame: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """The bare warp and network, checked against the CPU's (tests/test_gpu_ops.py); the engine embeds through
        `Landmarker.align` (refined landmarks, a grainy face smoothed) on every device."""
        landmarks = np.asarray(landmarks, np.float32).reshape(-1, 5, 2)
        if not len(landmarks):
            return np.zeros((0, self.dim), np.float32)
        n = len(landmarks)
        faces = ops.align_batch(self.frames.get(frame), landmarks)
        if FLIP:  # the mirror image too, as the CPU embedder does (engine/recognition/recognize.py)
            faces = torch.cat([faces, faces.flip(3)])
        raw = self.runner.run_tensor(ops.embedder_input(faces))[0].reshape(len(faces), -1).cpu().numpy()
        if raw.shape[1] != self.dim or not np.isfinite(raw).all():
            raise ValueError(f"recognizer returned {raw.shape} with non-finite values or the wrong width")
        if FLIP:
            raw = l2_normalise(raw[:n]) + l2_normalise(raw[n:])
        return l2_normalise(raw)


class TensorAnonymizer(Anonymizer):
    """`Anonymizer` with the pixels worked on the device: same regions, sizes, sigmas and soft edges."""

    def __init__(self, settings: Settings, frames: DeviceFrames) -> None:
        super().__init__(settings)
        self.frames = frames
        self._profiles: dict[tuple, Tensor] = {}  # guesses' edge profiles on the device, by length

    def apply(self, frame: np.ndarray, index: int, boxes: Iterable[np.ndarray],
              guesses: Iterable[np.ndarray] = (), keep: Iterable[np.ndarray] = (),
              revealable=None) -> SafeFrame:
        # `revealable` is not kept on the device path: a face blurred for want of recognition stays blurred in the
        # frames before it was recognised (`Anonymizer.reveal` finds no original and refuses).
        boxes, guesses, keep = list(boxes), list(guesses), list(keep)
        try:
            return self._apply_on_device(frame, index, boxes, guesses, keep)
        except Exception:  # a device fault (out of memory, lost GPU): the same regions on the CPU, never raw
            log.exception("device anonymizer failed on frame %d: anonymized on the CPU", index)
            self.frames.forget(frame)
            return super().apply(frame, index, boxes, guesses, keep)

    def _apply_on_device(self, frame: np.ndarray, index: int, boxes: list, guesses: list, keep: list) -> SafeFrame:
        height, width = frame.shape[:2]
        lost = list(self._regions(guesses, width, height, self.margin))  # regions come back in one transfer
        found = list(self._regions(boxes, width, height, self.margin))
        if lost or found:
            image = self.frames.get(frame).clone()  # the cached copy stays raw for a stage that still reads it
            # Same order as the CPU path: lost tracks' guesses, then recognised faces restored, then found faces.
            saved = [(r.clipped, _crop(image, r.clipped).clone())
                     for r in self._regions(keep, width, height, 0.0)] if lost else []
            for region in lost:
                self._tensor_region(image, region, guess=True)
            for (x1, y1, x2, y2), pixels in saved:
                image[:, y1:y2, x1:x2] = pixels
            for region in found:
                self._tensor_region(image, region)
            _download(image, frame, [r.clipped for r in lost + found])
        self.frames.forget(frame)
        return SafeFrame(frame, index, False, _TOKEN)

    def whole(self, frame: np.ndarray, index: int) -> SafeFrame:
        try:
            image = ops.whole_frame(self.frames.get(frame))
            pixels = image.round().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        except Exception:  # the pipeline's last resort must not depend on the device
            log.exception("device whole-frame blur failed on frame %d: blurred on the CPU", index)
            self.frames.forget(frame)
            return super().whole(frame, index)
        self.frames.forget(frame)
        frame[:] = pixels
        return SafeFrame(frame, index, True, _TOKEN)

    def _profile(self, length: int, image: Tensor) -> Tensor:
        """A guess's edge profile (anonymize.py, `_edge_profile`) on the frame's device, kept per length."""
        key = (length, image.device, image.dtype)
        if key not in self._profiles:
            if len(self._profiles) > 512:
                self._profiles.clear()
            self._profiles[key] = torch.from_numpy(_edge_profile(length).copy()).to(image.device, image.dtype)
        return self._profiles[key]

    def _tensor_region(self, image: Tensor, region: Region, guess: bool = False) -> None:
        """`guess`: a lost track's guess, its fade as shallow as the CPU path's (anonymize.py, `_cover_region`)."""
        x1, y1, x2, y2 = region.clipped
        gx1, gy1, gx2, gy2 = region.grown
        roi = image[:, y1:y2, x1:x2]
        covered = ops.cover(roi, self.mode, self.strength)
        # A close face's box fades as a guess's past FADE_REGION_PX, as on the CPU (anonymize.py, _anonymize_region)
        guess = guess or (self.shape == "box" and max(gx2 - gx1, gy2 - gy1) > FADE_REGION_PX)
        if guess:  # two 1-D profiles go to the device, not a whole region's alpha (7 MB for a 1,660 px guess)
            across = self._profile(gx2 - gx1, image)[x1 - gx1: x2 - gx1]
            down = self._profile(gy2 - gy1, image)[y1 - gy1: y2 - gy1]
            alpha = (down[:, None] * across[None, :])[None]
        else:
            alpha = ops.soft_alpha(self.shape, gy2 - gy1, gx2 - gx1, image.device, image.dtype)
            alpha = alpha[:, y1 - gy1: y2 - gy1, x1 - gx1: x2 - gx1]
        roi.copy_(covered * alpha + roi * (1.0 - alpha))


def _crop(image: Tensor, box: tuple[int, int, int, int]) -> Tensor:
    x1, y1, x2, y2 = box
    return image[:, y1:y2, x1:x2]


def _download(image: Tensor, frame: np.ndarray, boxes: list[tuple[int, int, int, int]]) -> None:
    """Write the changed regions back into the host frame in one device-to-host transfer.

    Overlapping regions are read after every op ran, so each carries the final pixels."""
    pieces = [_crop(image, b).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).reshape(-1) for b in boxes]
    flat = torch.cat(pieces).cpu().numpy()
    at = 0
    for x1, y1, x2, y2 in boxes:
        size = (y2 - y1) * (x2 - x1) * 3
        frame[y1:y2, x1:x2] = flat[at: at + size].reshape(y2 - y1, x2 - x1, 3)
        at += size


def build_pipeline(settings: Settings, identifier: Identifier | None = None, device: str | None = None,
                   half: bool = False) -> Pipeline:
    """A `Pipeline` (same fail-closed rules) whose frame lives on `device`: YuNet, the tensor anonymizer,
    and the frame cache they share. CenterFace keeps the host path (letterbox on the host, network on torch)."""
    where = pick_device(device)
    frames = DeviceFrames(where)
    detector = None
    if settings.detector == "yunet":
        from engine.models.yunet import YuNet

        runner = DeviceRunner(YuNet.from_onnx(model_path("yunet")), where, half)
        detector = DeviceYuNetDetector(runner, settings.detect_width, frames)
    pipeline = Pipeline(settings, detector=detector, identifier=identifier,
                        anonymizer_factory=lambda s: TensorAnonymizer(s, frames))
    log.info("device pipeline on %s (%s)", where, "fp16" if half else "fp32")
    return pipeline


def device_embedder(device: str | None = None, half: bool = False) -> FaceEmbedder:
    """The recognizer on the device, as the facebank identifier's `FaceEmbedder` (crops in, embeddings out)."""
    from engine.recognition.recognize import RECOGNIZER, recognizer_module

    return FaceEmbedder(DeviceRunner(recognizer_module(model_path(RECOGNIZER)), pick_device(device), half))
