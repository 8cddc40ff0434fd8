"""Run a network on torch (CPU or CUDA), onnxruntime or OpenVINO (CPU), with the same inputs and outputs.

Detectors and the recognizer call `runner.run(batch)` and never care which one runs: torch is the
reference implementation (`engine/models/`), onnxruntime and OpenVINO CPU backends chosen by measurement.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Protocol

import numpy as np

from engine.models.cuda_plans import cuda_kernels, network_thread, pad_batch, plans_per_shape

log = logging.getLogger(__name__)

TORCH_CPU_THREADS = int(os.environ.get("BLURCAST_TORCH_THREADS", "1"))
OPENVINO_THREADS = int(os.environ.get("BLURCAST_OPENVINO_THREADS", "1"))
# The stream's detector is on the live frame's critical path: two threads cost more CPU (13.5 against 11.6 ms a
# 1080p main pass) but finish sooner. Live 1080p30, 3 interleaved 20 s pairs each against onnxruntime: p50 45-48
# ms with one thread, 30-35 with two; p95 65-68 against 59-64; dropped 33-36 against 6-15 of ~580 frames. SRT
# 1080p30, CPU-bound, ran at the same fps either way (23.1-24.1 against 23.5-23.8; docs/measurements.md).
OPENVINO_DETECTOR_THREADS = int(os.environ.get("BLURCAST_OPENVINO_DETECTOR_THREADS", "2"))
# Networks whose input is an image's pixels as they are (0..255, no normalisation): on OpenVINO they take the uint8
# image itself (OpenVinoRunner `takes_images`).
IMAGE_NETWORKS = ("yunet", "centerface", "landmarker")
# onnxruntime threads a network's session takes (2 otherwise). The landmarker (the recognizer's YuNet: four small
# crops a face, engine/recognition/recognize.py) spends 11.2 CPU ms a face on one thread against 15.5 on two on the
# Xeon, 19.4 against 29.6 on the AVX2 EPYC, for the same wall time and the same landmarks to the bit
# (bench/landmarker_cpu.py, docs/measurements.md, stop 42). Live, it runs on the embedding worker beside the frame
# path, where its CPU is what the frames lack.
ONNXRUNTIME_THREADS: dict[str, int] = {"landmarker": 1}
# Networks `auto` runs on OpenVINO where the CPU computes in bf16 (docs/measurements.md, OpenVINO): the stream's YuNet
# in live mode (file mode keeps onnxruntime: engine/pipeline.py), ~0.7x onnxruntime's CPU per 1080p frame, its bf16
# score error is noise (bench/bf16_bias.py), the corpus's leaks within the noise floor (bench/jitter_suite.py).
# What held it back until SFace: with MobileFaceNet, the look-alike bystander of walking-and-pause
# (tests/test_recognition.py, every face embedded every frame) was left visible 5-20 frames over 9 one-pixel shifts
# of the clip (mean 10.6) against onnxruntime's 5-10 (mean 8.3). With SFace she scores at most 0.21 against him:
# 0 frames at all 9 shifts on both (bench/lookalike_shifts.py). Two earlier reasons were fixed: the live "this is
# me" enrolment (engine/enrol_track.py skips crops that other boxes cover) and SRT blurring frames whole under load
# (per-shape compiles now happen before the first frame, Pipeline.warm_up).
# And the recognizer, SFace, in both modes (stop 42): 3.3 CPU ms a face against OpenVINO f32's 11 and onnxruntime's
# 23-27, LFW View 2 the same to the last figure (99.40 %, AUC 0.9990, EER 0.67 %, TAR 99.07 % at FAR 1e-3, 98.73 % at
# 1e-4; docs/measurements.md). Its embeddings are onnxruntime's to cosine 0.9994 at worst; a pair's similarity moves
# 0.002 at the median and 0.013 at worst (1,081 pairs of 47 WIDER faces), where one grey level more or less on 5 % of
# the pixels moves it 0.0007 and 0.006 in f32 (tests/test_backends.py). Stop 41 had kept it in f32 for a test bound
# (0.001 an element between a frame and its crop, 0.0012 in bf16), now a bound on cosine, the measure decisions take.
# Without bf16 OpenVINO runs f32: slower than onnxruntime for YuNet (23 against 18 ms a main pass) and the
# landmarker (46.7 against 19.4 CPU ms a face on the AVX2 EPYC): they keep onnxruntime there (not the recognizer:
# OPENVINO_F32_AUTO).
# The landmarker's YuNet ("landmarker") and photo detection ("photo") are asked for apart from the stream's
# detector: bf16 boxes seeding the alignment took LFW from 99.27 to 99.12 %, so they stay on onnxruntime.
# On a Zen 4 EPYC (AVX-512-BF16, no AMX; stop 48, bench/openvino_cpu.py --backends onnxruntime,openvino,openvino-f32)
# bf16 took 0.66x onnxruntime's CPU for the main pass, 0.70x a live 1080p frame, 0.28x for SFace; f32 1.21x and 0.50x.
OPENVINO_AUTO: frozenset[str] = frozenset({"yunet", "sface"})
# ...and the networks `auto` runs on OpenVINO in f32 where the CPU has no bf16 but is x86 with AVX2 (openvino_avx2):
# the recognizer. SFace, one thread, on an AMD EPYC (Zen 3, AVX2 only): 16.6 CPU ms a face against onnxruntime's 35.9
# on two threads (29.7 on one), its embeddings onnxruntime's to cosine 0.9999998 (docs/measurements.md, stop 42); the
# Xeon in f32 had given 11.1 against 22.7 (stop 41). The same figures to LFW's last digit; a live frame's CPU is what
# the embedding worker takes from the frames.
OPENVINO_F32_AUTO: frozenset[str] = frozenset({"sface"})
# Networks OpenVINO runs on its dynamic model only: a shape's own was no faster (SFace in bf16 3.1-3.3 against
# 3.3-3.4 ms a face alone, 2.8 against 2.8 four at once), and a compile (~200 ms) mid-stream would only cost a core.
OPENVINO_DYNAMIC: frozenset[str] = frozenset({"sface"})
# Networks `auto` keeps on the CPU where there is a GPU: photo detection (enrolment, stills). Every photo has its own
# sizes, and CUDA plans each new input shape (~2 s for YuNet on an H200: engine/models/cuda_plans.py), longer than
# the CPU takes to detect the photo at all.
CPU_ON_CUDA: frozenset[str] = frozenset({"photo"})


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


def import_openvino():
    """The openvino module, its model converter's telemetry declined first. Importing openvino starts that telemetry
    (openvino.tools.ovc), which takes a missing consent file as consent: it wrote a client id and a run counter to
    ~/intel, and would send usage events to Google Analytics from the converter (never used here). A privacy tool
    says no for its own process, writing nothing: the consent check answers "declined"."""
    try:
        from openvino_telemetry.utils import opt_in_checker

        declined = opt_in_checker.ConsentCheckResult.DECLINED
        opt_in_checker.OptInChecker.check = lambda self, *args, **kwargs: declined
    except ImportError:  # no telemetry package: nothing to decline
        pass
    except Exception as exc:  # another telemetry package's layout: never a reason for the engine not to start
        log.warning("OpenVINO's telemetry could not be declined (%s); it may write its client id to ~/intel", exc)
    import openvino

    return openvino


@cache
def openvino_bf16() -> bool:
    """Whether OpenVINO is installed and infers in bf16 by default on this CPU (x86 with AVX-512-BF16 or AMX, where
    it was measured: a Xeon with AMX, and an AMD EPYC Zen 4 with AVX-512-BF16 and no AMX, as Ryzen 7000/9000 desktops
    have; other CPUs default to f32 or f16, not measured here: they keep onnxruntime)."""
    flags = _cpu_flags()
    if flags is not None and not flags & {"avx512_bf16", "amx_bf16"}:
        return False  # Linux says the CPU has no bf16: importing OpenVINO to ask costs 0.1-0.5 s of every start
    try:
        openvino = import_openvino()
    except ImportError:
        return False
    try:
        core = openvino.Core()
        return ("BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
                and "bfloat16" in str(core.get_property("CPU", "INFERENCE_PRECISION_HINT")))
    except Exception as exc:  # no usable CPU plugin, a broken install: keep to the other backends
        log.warning("OpenVINO is installed but its CPU plugin is not usable: %s", exc)
        return False


@cache
def openvino_avx2() -> bool:
    """Whether OpenVINO is installed on an x86 CPU with AVX2 (Linux's flags say so), where its f32 recognizer was
    measured faster than onnxruntime (two CPUs: an AVX2 EPYC and an AMX Xeon); other CPUs (ARM, or flags that cannot
    be read) were never measured: they keep onnxruntime."""
    flags = _cpu_flags()
    if flags is None or "avx2" not in flags:
        return False
    try:
        openvino = import_openvino()
    except ImportError:
        return False
    try:
        openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        return True
    except Exception as exc:  # no usable CPU plugin, a broken install: keep to onnxruntime
        log.warning("OpenVINO is installed but its CPU plugin is not usable: %s", exc)
        return False


@cache
def _cpu_flags() -> frozenset[str] | None:
    """The CPU's feature flags from /proc/cpuinfo (Linux); None where they cannot be read."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return None


def resolve_backend(requested: str, network: str | None = None) -> str:
    """`auto` picks torch on CUDA (the user's rig); on CPU, OpenVINO for the networks measured faster on it
    (OPENVINO_AUTO on bf16 CPUs, OPENVINO_F32_AUTO on any x86 with AVX2), else onnxruntime when installed (faster
    than torch there)."""
    if requested != "auto":
        return requested
    if cuda_available() and network not in CPU_ON_CUDA:
        return "torch"
    if network in OPENVINO_AUTO and openvino_bf16():
        return "openvino"
    if network in OPENVINO_F32_AUTO and openvino_avx2():
        return "openvino"
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return "torch"
    return "onnxruntime"


class TorchRunner:
    def __init__(self, module_factory: Callable[[Path], object], onnx_path: Path,
                 one_thread: bool | None = None) -> None:
        """`one_thread` (default: on CUDA with cuDNN) runs every call on the network's own thread, batches padded."""
        import torch

        self._torch = torch
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.module = module_factory(onnx_path).eval().to(self.device)
        self.name = f"torch-{self.device.type}"
        if self.device.type == "cuda":
            cuda_kernels()
        # cuDNN (BLURCAST_CUDNN=1) plans each new input shape (~2 s for YuNet), per thread: few shapes, one thread
        # (cuda_plans.py). PyTorch's own kernels, the default, need none of that.
        self.plans_per_shape = plans_per_shape(self.device.type) if one_thread is None else one_thread
        # CUDA loads its kernels on the first call (130 ms on the H200): done in the engine's warm-up, not on a frame.
        self.warm_first = self.device.type == "cuda"
        self._thread = None
        if self.plans_per_shape:  # one thread per network for the process: plans made once serve every runner
            self._thread = network_thread(f"{onnx_path.stem}-{self.device}")

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        if self._thread is None:
            return self._run(batch)
        count = len(batch)
        outputs = self._thread.call(self._run, pad_batch(batch))
        return [o[:count] for o in outputs]

    def warm(self, batches: list[np.ndarray], what: str) -> None:
        """Plan these inputs' shapes on the network's thread, behind nothing and ahead of any later call: queued
        now, not waited for (a later call waits for them in turn). Nothing to do off CUDA."""
        if self._thread is not None:
            self._thread.warm_async(self._run, batches, what)

    def _run(self, batch: np.ndarray) -> list[np.ndarray]:
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
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = threads
        # Several sessions share 2 cores: spinning threads starve each other (measured 2x slower).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        _, self.session = _loaded(onnx_path, lambda data: ort.InferenceSession(data, options,
                                                                             providers=["CPUExecutionProvider"]))
        self.input_name = self.session.get_inputs()[0].name
        self.name = "onnxruntime-cpu"

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        return self.session.run(None, {self.input_name: batch})


# The dynamic-only runners' compiled models (the recognizer), by file and configuration: OpenVinoRunner.
_COMPILED: dict[tuple, tuple[bytes, object]] = {}
_COMPILED_LOCK = threading.Lock()


def _shared_dynamic(onnx_path: Path, takes_images: bool, config: dict,
                    load: Callable[[bytes], object]) -> tuple[bytes, object]:
    """One compiled dynamic model per file (as it is on disk now) and configuration in a process, for the runners
    that use no other (OPENVINO_DYNAMIC): the engine's recognizer and the enroller's had compiled it apart, 0.5 s
    each on the AVX2 EPYC. A compiled model serves requests from any thread (each runner keeps its own), but with the
    LATENCY hint one at a time: a detector, whose calls are on the live deadline, keeps a model of its own."""
    stat = Path(onnx_path).stat()
    key = (str(onnx_path), stat.st_size, stat.st_mtime_ns, takes_images, tuple(sorted(config.items())))
    with _COMPILED_LOCK:
        if key not in _COMPILED:
            _COMPILED[key] = _loaded(onnx_path, load)
        return _COMPILED[key]


class OpenVinoRunner:
    """OpenVINO on the CPU, in bf16 where the CPU has it (OpenVINO's default there; f32 elsewhere, or when asked).

    bf16 keeps 8 bits of mantissa: YuNet's outputs differ from fp32 by up to ~0.1 (box and landmark offsets, in
    stride units; scores by a few thousandths), measured on real frames (tests/test_backends.py, docs/measurements.md).
    A model compiled for one input shape runs 15-45 % faster than the dynamic one (1280x736: 11.9 against 14.3
    CPU ms; a 640x768 tile 6.4 against 7.8), so a shape called STATIC_AFTER times gets its own. A compile takes
    120-200 ms: live (`background_compiles`), it runs on its own thread while the dynamic model serves, since in
    the detector's thread it passed the live deadline and frames went out blurred whole; file mode compiles in the
    calling thread, so the switch lands on the same frame every run (the two differ by ~1e-3: file mode stays
    deterministic). A shape whose compile fails stays on the dynamic model. One infer request per compiled model
    and calling thread: a request holds its own buffers (the multi-stream engine calls one runner from several)."""

    STATIC_AFTER = 3  # calls of one shape: the main pass and tiles recur every frame, refine's crops rarely
    STATIC_SHAPES = 8  # at most (the least recently used goes): a frame size's main pass and tile sizes
    COUNTED_SHAPES = 64  # shapes whose calls are counted; then the count starts again (photos come in any size)

    def __init__(self, onnx_path: Path, threads: int = OPENVINO_THREADS, takes_images: bool = False,
                 precision: str | None = None, per_shape: bool = True) -> None:
        # `precision`: "f32" where `auto` chose OpenVINO in f32 (OPENVINO_F32_AUTO), or to compare with bf16 (benches);
        # None: OpenVINO's default (bf16 where the CPU has it).
        # `per_shape` False: the dynamic model for every call, where it is as fast (SFace in f32: 11.3 against 11.2
        # ms a face alone, 9.1 against 9.5 four at once) and a compile (225 ms) mid-stream would only cost a core.
        self.per_shape = per_shape
        # `takes_images`: an image network (the detectors) takes its 1 x H x W x 3 uint8 image as it is, cast to
        # float and laid out as the network's 1 x 3 x H x W inside the compiled graph (OpenVINO's preprocessing),
        # where the numpy cast and the float batch's hand-over had cost 3 of a 1280x736 main pass's 18 CPU ms;
        # the outputs are the same to the bit (tests/test_backends.py). Its `run` then takes such images only.
        self.takes_images = takes_images
        try:
            openvino = import_openvino()
        except ImportError as exc:
            raise RuntimeError("backend 'openvino' needs the openvino package: "
                               "pip install 'blurcast[openvino]' (openvino==2026.4.1)") from exc

        self._core = openvino.Core()
        # One thread by default: 11.6 against 13.5 CPU ms with two (YuNet 1280x736); the stream's detector takes two
        # (OPENVINO_DETECTOR_THREADS: its wall time is the live latency). No pinning: the calling thread must not be
        # tied to a core that another busy thread holds.
        self._config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "ENABLE_CPU_PINNING": False}
        if precision is not None:
            self._config["INFERENCE_PRECISION_HINT"] = precision

        def compile_dynamic(data: bytes):
            self._onnx = data  # every per-shape compile reads it again
            return self._compile(None)

        if per_shape:
            self._onnx, self.compiled = _loaded(onnx_path, compile_dynamic)
        else:
            self._onnx, self.compiled = _shared_dynamic(onnx_path, takes_images, self._config, compile_dynamic)
        inferred = str(self.compiled.get_property("INFERENCE_PRECISION_HINT"))
        self.name = f"openvino-cpu-{'bf16' if 'bfloat16' in inferred else 'f32'}"
        self._static: dict[tuple[int, ...], object] = {}
        self._calls: dict[tuple[int, ...], int] = {}
        self._last_use: dict[tuple[int, ...], int] = {}
        self._uses = 0
        self._pending: set[tuple[int, ...]] = set()
        self._lock = threading.Lock()
        self._local = threading.local()
        self.background_compiles = True  # the pipeline turns it off in file mode (deterministic switch)

    def _compile(self, shape: tuple[int, ...] | None):
        model = self._core.read_model(self._onnx)
        if shape is not None:  # an image's N x H x W x C is the network's N x C x H x W
            model.reshape([shape[0], shape[3], shape[1], shape[2]] if self.takes_images else list(shape))
        if self.takes_images:
            import openvino
            from openvino.preprocess import PrePostProcessor

            steps = PrePostProcessor(model)
            steps.input().tensor().set_element_type(openvino.Type.u8).set_layout(openvino.Layout("NHWC"))
            steps.input().model().set_layout(openvino.Layout("NCHW"))
            steps.input().preprocess().convert_element_type(openvino.Type.f32)
            model = steps.build()
        return self._core.compile_model(model, "CPU", self._config)

    def _compiled_for(self, shape: tuple[int, ...]):
        if not self.per_shape:
            return None, self.compiled
        with self._lock:  # two threads seeing a shape for the STATIC_AFTER-th time compile it once
            self._uses += 1
            compiled = self._static.get(shape)
            if compiled is not None:
                self._last_use[shape] = self._uses
                return (shape if compiled is not self.compiled else None), compiled
            if shape in self._pending:
                return None, self.compiled
            if len(self._calls) >= self.COUNTED_SHAPES:
                self._calls.clear()
            self._calls[shape] = self._calls.get(shape, 0) + 1
            if self._calls[shape] < self.STATIC_AFTER:
                return None, self.compiled
            self._pending.add(shape)
        if self.background_compiles:
            threading.Thread(target=self._compile_static, args=(shape,), name="openvino-compile", daemon=True).start()
            return None, self.compiled
        compiled = self._compile_static(shape)
        return (shape if compiled is not self.compiled else None), compiled

    def _compile_static(self, shape: tuple[int, ...]):
        """A model for this one shape; on failure the dynamic one, kept for the shape (never retried per frame)."""
        started = time.perf_counter()
        try:
            compiled = self._compile(shape)
            log.info("%s: compiled for input %s in %.0f ms", self.name, shape, 1000 * (time.perf_counter() - started))
        except Exception:
            log.exception("%s: compiling for input %s failed; that shape stays on the dynamic model", self.name,
                          shape)
            compiled = self.compiled
        with self._lock:
            if len(self._static) >= self.STATIC_SHAPES:  # the least recently used shape goes (a new frame size)
                del self._static[min(self._static, key=lambda k: self._last_use.get(k, 0))]
            self._static[shape] = compiled
            self._last_use[shape] = self._uses
            self._pending.discard(shape)
        return compiled

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        if self.takes_images and (batch.dtype != np.uint8 or batch.ndim != 4 or batch.shape[3] != 3):
            raise TypeError(f"{self.name} takes 1 x H x W x 3 uint8 images (engine/stages/detect.py network_batch), "
                            f"not {batch.dtype} {batch.shape}")
        key, compiled = self._compiled_for(batch.shape)
        requests = self._local.__dict__.setdefault("requests", {})
        request = requests.get(key)
        if request is None:
            request = requests[key] = compiled.create_infer_request()
        request.infer({0: batch})
        # Copies: the request reuses its output buffers on the next call.
        return [request.get_output_tensor(i).data.copy() for i in range(len(compiled.outputs))]


DYNAMIC_FORMAT = 1  # part of a cached copy's name: bump it when `_make_input_dynamic` changes


def dynamic_model(onnx_path: Path, rebuild: bool = False) -> bytes:
    """The model with every input and output dimension free, as bytes a runtime loads.

    Made once with the `onnx` package and kept beside the file (or in the user's cache where that folder is
    read-only), under the source file's checksum: importing `onnx` costs ~0.7 s of CPU at every start (its
    ml_dtypes extension), 4 % of a 90-frame 1080p file run. Written to a temporary file of its own, flushed to
    disk and renamed into place, so a killed start, or two threads or processes starting at once, never leave a
    cut file under the final name. `rebuild`: a cached copy the runtime could not load is made again."""
    from engine.models.weights import sha256_of  # lazy: weights imports this module's neighbours

    source = Path(onnx_path)
    name = f"{source.stem}.{sha256_of(source)[:16]}.v{DYNAMIC_FORMAT}.dynamic.onnx"
    places = _cache_places(source)
    for folder in places if not rebuild else []:
        cached = folder / name
        if cached.is_file():
            return cached.read_bytes()
    data = _dynamic_bytes(source)
    for folder in places:
        if _store(folder, name, data):
            break
    return data


def _cache_places(source: Path) -> list[Path]:
    """Beside the model file, then the user's cache folder (skipped where no home can be found)."""
    places = [source.parent / ".dynamic"]
    try:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        if os.path.isabs(base):
            places.append(Path(base) / "blurcast" / "models")
    except (OSError, RuntimeError):  # no HOME and no passwd entry (a container's --user)
        pass
    return places


def _store(folder: Path, name: str, data: bytes) -> bool:
    """`data` as `folder/name`, atomically; False where the folder cannot be written (read-only)."""
    import tempfile

    staged = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, staged = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(staged, folder / name)
        return True
    except OSError:
        if staged is not None:
            Path(staged).unlink(missing_ok=True)
        return False


def _loaded(onnx_path: Path, load: Callable[[bytes], object]) -> tuple[bytes, object]:
    """`load` applied to the dynamic model; a cached copy it cannot load (damaged on disk) is made again."""
    data = dynamic_model(onnx_path)
    try:
        return data, load(data)
    except Exception as exc:
        log.warning("the cached dynamic copy of %s did not load (%s): made again", Path(onnx_path).name, exc)
        data = dynamic_model(onnx_path, rebuild=True)
        return data, load(data)


def _dynamic_bytes(source: Path) -> bytes:
    import onnx

    model = onnx.load(str(source))
    _make_input_dynamic(model)
    return model.SerializeToString()


def _make_input_dynamic(model) -> None:
    """The files fix their input size (YuNet 640x640, CenterFace 32x32); frames come in any size."""
    for value in list(model.graph.input) + list(model.graph.output):
        for axis, dim in enumerate(value.type.tensor_type.shape.dim):
            dim.dim_param = f"d{axis}"
    del model.graph.value_info[:]


def make_runner(backend: str, onnx_path: Path, module_factory: Callable[[Path], object],
                network: str | None = None) -> NetworkRunner:
    """`network` (a weights name: yunet, sface...) lets `auto` choose per network."""
    chosen = resolve_backend(backend, network)
    runner: NetworkRunner
    threads = OPENVINO_DETECTOR_THREADS if network == "yunet" else OPENVINO_THREADS
    images = network in IMAGE_NETWORKS
    dynamic = network in OPENVINO_DYNAMIC
    ort_threads = ONNXRUNTIME_THREADS.get(network or "", 2)
    if chosen == "openvino" and backend == "auto":
        # f32 asked for where `auto` chose OpenVINO for it (OPENVINO_F32_AUTO), not left to OpenVINO's default
        f32 = network in OPENVINO_F32_AUTO and not (network in OPENVINO_AUTO and openvino_bf16())
        runner = _openvino_or_onnxruntime(onnx_path, threads, images, dynamic, "f32" if f32 else None, ort_threads)
    elif chosen == "onnxruntime":
        runner = OnnxRuntimeRunner(onnx_path, ort_threads)
    elif chosen == "openvino":
        runner = OpenVinoRunner(onnx_path, threads, takes_images=images, per_shape=not dynamic)
    elif chosen == "torch":
        runner = TorchRunner(module_factory, onnx_path)
    else:
        raise ValueError(f"unknown backend {backend!r}")
    log.info("%s runs on %s", onnx_path.name, runner.name)
    return runner


def _openvino_or_onnxruntime(onnx_path: Path, threads: int, images: bool = False, dynamic: bool = False,
                             precision: str | None = None, ort_threads: int = 2) -> NetworkRunner:
    """`auto`'s OpenVINO choice, and onnxruntime where OpenVINO fails to load the model: auto must always start."""
    try:
        return OpenVinoRunner(onnx_path, threads, takes_images=images, precision=precision, per_shape=not dynamic)
    except Exception:
        log.exception("OpenVINO could not load %s; running it on onnxruntime", onnx_path.name)
        return OnnxRuntimeRunner(onnx_path, ort_threads)
