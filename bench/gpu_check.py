"""The GPU check: every figure the GPU engine needs, from one run, into one JSON.

    python bench/gpu_check.py --out gpu_check.json [--device cuda] [--smoke] [--junit pytest.xml]

1. environment: torch/CUDA/GPU, onnxruntime, OpenCV.
2. parity: each network (YuNet, CenterFace, SFace) in torch on the device, fp32 and fp16, against
   onnxruntime on the CPU, on the same real images (max abs difference; embeddings' cosine); the device
   detector's faces against the onnxruntime detector's; the tensor anonymizer against the OpenCV one.
3. single_stream: the device pipeline in file mode (every frame) on the dev clip scaled to 1080p and 4K:
   fps, per-frame latency p50 / p95 / max, fp32 and fp16.
4. streams_1080p30: how many 1080p 30 fps live streams one device holds in one process (multistream,
   batched), each with p95 added latency <= 50 ms, >= 95 % of frames out and <= 1 % dropped.
`--smoke` runs every section small (320x180 and 640x360, a few frames, 2 s, up to 2 streams) so that the
script itself is tested on CPU (tests/test_gpu_check.py); its figures mean nothing.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections import deque
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = Path(os.environ.get("BLURCAST_DATA", REPO.parent / "shared" / "data"))
CLIP = DATA / "video_hamilton" / "short_hamilton_clip.mp4"

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.sinks import DiscardSink  # noqa: E402
from engine.config import Settings  # noqa: E402
from engine.gpu.device import DeviceFrames, DeviceRunner, TensorAnonymizer, build_pipeline  # noqa: E402
from engine.models.backends import OnnxRuntimeRunner  # noqa: E402
from engine.models.centerface import CenterFace  # noqa: E402
from engine.models.sface import SFace  # noqa: E402
from engine.models.weights import WeightsError, model_path  # noqa: E402
from engine.models.yunet import YuNet  # noqa: E402
from engine.multistream import MultiStreamEngine, StreamSpec  # noqa: E402
from engine.runner import Engine  # noqa: E402
from engine.stages.anonymize import Anonymizer  # noqa: E402
from engine.stages.detect import create_detector  # noqa: E402
from engine.stages.source import SourceInfo  # noqa: E402

log = logging.getLogger("gpu_check")
LIVE_FPS = 30.0
P95_BUDGET_MS = 50.0
STARTUP_LIMIT_S = 180.0  # a stream's start (models, planned shapes) before its trial is timed


# --- inputs ---------------------------------------------------------------------------------------------------
def clip_frames(count: int, width: int, height: int) -> list[np.ndarray]:
    """The first `count` dev-clip frames scaled to width x height (the clip is 640x360)."""
    cap, frames = cv2.VideoCapture(str(CLIP)), []
    while len(frames) < count:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(cv2.resize(frame, (width, height), interpolation=cv2.INTER_LINEAR))
    if not frames:
        raise SystemExit(f"no frames from {CLIP}: set BLURCAST_DATA to the shared data folder")
    return frames


class MemorySource:
    """Preloaded frames played as a camera at `fps` (a copy per read: the anonymizer works in place).
    No decoding: the figures are the engine's, not the video decoder's."""

    kind = "camera"
    loop = True

    def __init__(self, frames: list[np.ndarray], fps: float, paced: bool, limit: int | None = None) -> None:
        self.frames, self.paced, self.limit, self.count = frames, paced, limit, 0
        h, w = frames[0].shape[:2]
        self.spec = f"memory:{w}x{h}"
        self.info = SourceInfo(self.spec, "camera", w, h, fps, None)
        self._next = time.monotonic()

    def read(self) -> np.ndarray | None:
        if self.limit is not None and self.count >= self.limit:
            return None
        if self.paced:
            self._next += 1.0 / self.info.fps
            time.sleep(max(0.0, self._next - time.monotonic()))
        frame = self.frames[self.count % len(self.frames)].copy()
        self.count += 1
        return frame

    def reopen(self, attempts: int = 1, wait: float = 0.5) -> bool:
        return False

    def close(self) -> None:
        pass


# --- 1. environment -------------------------------------------------------------------------------------------
def environment(device: torch.device) -> dict[str, Any]:
    import onnxruntime as ort

    info: dict[str, Any] = {
        "python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(), "device": str(device), "onnxruntime": ort.__version__,
        "onnxruntime_providers": ort.get_available_providers(), "opencv": cv2.__version__,
        "cpu_cores": os.cpu_count(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1))
    return info


# --- 2. parity ------------------------------------------------------------------------------------------------
def parity(device: torch.device, smoke: bool) -> dict[str, Any]:
    paths = sorted(DATA.glob("detection_widerface_val/images/*.jpg"))[: 1 if smoke else 4]
    images = [cv2.imread(str(p)) for p in paths]
    faces = [cv2.resize(cv2.imread(str(p)), (112, 112))
             for p in sorted(DATA.glob("recognition_faceapi_bbt/*/*1.png"))[: 4 if smoke else 32]]
    size = (320, 192) if smoke else (640, 384)
    yunet_in = [_letterboxed(i, *size) for i in images]
    centerface_in = [b[:, ::-1].copy() for b in yunet_in]  # RGB
    recognizer_in = np.ascontiguousarray(((np.stack(faces)[..., ::-1].astype(np.float32) - 127.5) / 128)
                                         .transpose(0, 3, 1, 2))
    out: dict[str, Any] = {}
    for name, module, path, batches in (
        ("yunet", YuNet, "yunet", yunet_in),
        ("centerface", CenterFace, "centerface", centerface_in),
        ("sface", SFace, "sface", [recognizer_in]),
    ):
        try:  # a model that did not travel is reported, not provisioned (a GPU box has no network)
            model_path(path, provision=False)
        except WeightsError as exc:
            out[name] = {"skipped": str(exc)}
            continue
        reference = OnnxRuntimeRunner(model_path(path))
        for half in (False,) if smoke else (False, True):  # fp16 on CPU is emulated, ~50x slower
            runner = DeviceRunner(module.from_onnx(model_path(path)), device, half)
            diffs, cosines = [], []
            for batch in batches:
                ours, theirs = runner.run(batch), reference.run(batch)
                diffs += [float(np.abs(a - b.reshape(a.shape)).max()) for a, b in zip(ours, theirs, strict=True)]
                if name == "sface":
                    a, b = _unit(ours[0]), _unit(theirs[0].reshape(ours[0].shape))
                    cosines.append(float((a * b).sum(1).min()))
            key = f"{name}_{'fp16' if half else 'fp32'}"
            out[key] = {"max_abs_diff": max(diffs), "inputs": len(batches) if name != "sface" else len(faces)}
            if cosines:
                out[key]["min_cosine"] = min(cosines)
    precisions = (False,) if smoke else (False, True)
    out["detector_faces"] = _detector_parity(device, images, 640 if smoke else 1280, precisions)
    out["anonymizer"] = _anonymizer_parity(device, smoke)
    return out


def _letterboxed(image: np.ndarray, width: int, height: int) -> np.ndarray:
    scale = min(width / image.shape[1], height / image.shape[0])
    canvas = np.zeros((height, width, 3), np.uint8)
    resized = cv2.resize(image, (round(image.shape[1] * scale), round(image.shape[0] * scale)))
    canvas[: resized.shape[0], : resized.shape[1]] = resized
    return np.ascontiguousarray(canvas.transpose(2, 0, 1)[None], dtype=np.float32)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


def _detector_parity(device: torch.device, images: list[np.ndarray], width: int,
                     precisions: tuple[bool, ...]) -> dict[str, Any]:
    """Faces found by the device detector (fp32, fp16) against the onnxruntime detector, same images."""
    from engine.gpu.device import DeviceYuNetDetector

    host = create_detector(Settings(backend="onnxruntime", detect_width=width))
    result = {}
    for half in precisions:
        runner = DeviceRunner(YuNet.from_onnx(model_path("yunet")), device, half)
        detector = DeviceYuNetDetector(runner, width, DeviceFrames(device))
        found = same = 0
        worst = 0.0
        for image in images:
            a, b = host.detect(image, 0.5), detector.detect(image, 0.5)
            found += len(a)
            for box in a.xyxy:
                if len(b):
                    err = float(np.abs(b.xyxy - box).max(axis=1).min())
                    same += err < 2.0
                    worst = max(worst, err)
        result["fp16" if half else "fp32"] = {"onnxruntime_faces": found, "matched_within_2px": same,
                                              "worst_box_diff_px": round(worst, 3)}
    return result


def _anonymizer_parity(device: torch.device, smoke: bool) -> dict[str, Any]:
    frames = clip_frames(3 if smoke else 60, 640, 360)
    detector = create_detector(Settings(backend="onnxruntime"))
    result = {}
    for mode in ("blur", "mosaic", "fill"):
        settings, cache, means, maxes = Settings(mode=mode), DeviceFrames(device), [], []
        for frame in frames[::3]:
            boxes = detector.detect(frame, 0.5).xyxy
            cpu, dev = frame.copy(), frame.copy()
            Anonymizer(settings).apply(cpu, 0, boxes)
            TensorAnonymizer(settings, cache).apply(dev, 0, boxes)
            diff = np.abs(cpu.astype(np.int16) - dev.astype(np.int16))
            means.append(float(diff.mean()))
            maxes.append(int(diff.max()))
        result[mode] = {"mean_abs_diff": round(max(means), 4), "max_abs_diff": max(maxes)}
    return result


# --- 3. single stream -----------------------------------------------------------------------------------------
def single_stream(device: torch.device, sizes: list[tuple[int, int]], count: int,
                  precisions: tuple[bool, ...]) -> dict[str, Any]:
    out = {}
    for width, height in sizes:
        frames = clip_frames(count, width, height)
        for half in precisions:
            out[f"{width}x{height}_{'fp16' if half else 'fp32'}"] = _file_mode(frames, device, half)
    return out


def _file_mode(frames: list[np.ndarray], device: torch.device, half: bool) -> dict[str, Any]:
    settings = Settings()  # the product's defaults (detect_width 1280: 1080p and 4K are shrunk for detection)
    pipeline = build_pipeline(settings, device=str(device), half=half)
    pipeline.offline = True
    pipeline.process(frames[0].copy(), 0, 1 / LIVE_FPS)  # first call: kernels load, cuDNN picks
    sink = DiscardSink()
    engine = Engine(settings, MemorySource(frames, LIVE_FPS, paced=False, limit=len(frames)), [sink],
                    pipeline=pipeline)
    started = time.perf_counter()
    written = engine.run_file()
    _sync(device)
    seconds = time.perf_counter() - started
    latencies = list(engine.stats.latencies_ms)
    engine.close()
    return {"frames": written, "fps": round(written / seconds, 2), "detect_width": settings.detect_width,
            **_percentiles(latencies),
            "whole_frames": engine.stats.whole_frames, "faults": dict(pipeline.faults)}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"latency_p50_ms": None, "latency_p95_ms": None, "latency_max_ms": None}
    return {"latency_p50_ms": round(float(np.percentile(values, 50)), 2),
            "latency_p95_ms": round(float(np.percentile(values, 95)), 2),
            "latency_max_ms": round(float(max(values)), 2)}


# --- 4. streams held ------------------------------------------------------------------------------------------
def streams_held(device: torch.device, width: int, height: int, seconds: float, max_streams: int,
                 half: bool) -> dict[str, Any]:
    """Double the stream count while every stream holds; then bisect between the last good and first bad."""
    frames = clip_frames(60, width, height)
    trials: dict[int, dict] = {}
    good, bad, n = 0, None, 1
    while n <= max_streams:
        trials[n] = _live_trial(frames, n, device, seconds, half)
        if not trials[n]["holds"]:
            bad = n
            break
        good, n = n, n * 2
    while bad is not None and bad - good > 1:
        mid = (good + bad) // 2
        trials[mid] = _live_trial(frames, mid, device, seconds, half)
        good, bad = (mid, bad) if trials[mid]["holds"] else (good, mid)
    return {"size": f"{width}x{height}", "fps": LIVE_FPS, "p95_budget_ms": P95_BUDGET_MS, "seconds": seconds,
            "detect_width": Settings().detect_width,
            "fp16": half, "streams_held": good, "first_failing": bad, "capped_at": max_streams,
            "trials": {str(k): v for k, v in sorted(trials.items())}}


def _live_trial(frames: list[np.ndarray], n: int, device: torch.device, seconds: float, half: bool) -> dict:
    import tempfile

    home = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    sinks = [DiscardSink() for _ in range(n)]
    specs = [StreamSpec(f"s{i}", MemorySource(frames, LIVE_FPS, paced=True), home / f"s{i}", sinks=[sinks[i]])
             for i in range(n)]
    multi = MultiStreamEngine(specs, device=str(device), half=half)
    multi.start(live=True)
    started = time.monotonic()  # each engine plans its shapes before its first frame (engine/models/cuda_plans.py)
    while time.monotonic() - started < STARTUP_LIMIT_S and not all(e.stats.frames for e in multi.engines.values()):
        time.sleep(0.1)
    startup_s = time.monotonic() - started
    time.sleep(min(2.0, seconds / 4))  # then the first frames' own kernels
    for engine in multi.engines.values():  # from here on, every frame's latency (not only the last 240)
        engine.stats.latencies_ms = deque(maxlen=int(seconds * LIVE_FPS * 2))
    base = [(e.stats.frames, e.stats.dropped, e.stats.whole_frames) for e in multi.engines.values()]
    threading.Event().wait(seconds)
    per_stream = []
    for (frames0, dropped0, whole0), engine in zip(base, multi.engines.values(), strict=True):
        out, dropped = engine.stats.frames - frames0, engine.stats.dropped - dropped0
        per_stream.append({"out_fps": round(out / seconds, 2), "dropped": dropped,
                           **_percentiles(list(engine.stats.latencies_ms)),
                           "whole_frames": engine.stats.whole_frames - whole0,  # in the timed window
                           "whole_frames_at_start": whole0})
    batches, items = multi.networks.detector.batches, multi.networks.detector.items
    multi.stop()
    worst_p95 = max((s["latency_p95_ms"] or 1e9) for s in per_stream)
    # A stream that keeps its rate by hiding frames whole (a stalled detector) does not hold either.
    holds = all((s["latency_p95_ms"] or 1e9) <= P95_BUDGET_MS and s["out_fps"] >= 0.95 * LIVE_FPS
                and s["dropped"] <= 0.01 * LIVE_FPS * seconds and s["whole_frames"] <= 0.01 * LIVE_FPS * seconds
                for s in per_stream)
    log.info("%d streams: worst p95 %.1f ms, min fps %.1f -> %s", n, worst_p95,
             min(s["out_fps"] for s in per_stream), "holds" if holds else "fails")
    return {"holds": holds, "startup_s": round(startup_s, 1), "worst_p95_ms": worst_p95,
            "min_out_fps": min(s["out_fps"] for s in per_stream),
            "mean_detector_batch": round(items / max(batches, 1), 2), "streams": per_stream}


# --- the test suite's result ----------------------------------------------------------------------------------
def junit_summary(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {"ran": False}
    root = ET.parse(path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    failed = [f"{c.get('classname')}::{c.get('name')}" for c in suite.iter("testcase")
              if c.find("failure") is not None or c.find("error") is not None]
    return {"ran": True, **{k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")},
            "failed": failed[:50]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="where the JSON of figures goes")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda where present)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes and counts: tests the script on CPU")
    parser.add_argument("--junit", type=Path, default=None, help="pytest's junit XML, summarised into the JSON")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each multi-stream trial")
    parser.add_argument("--max-streams", type=int, default=48, help="stop doubling the streams here")
    parser.add_argument("--sizes", default="1920x1080,3840x2160", help="single_stream's frame sizes, WxH,WxH")
    parser.add_argument("--sections", default="environment,parity,single_stream,streams",
                        help="comma-separated subset to run")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    sections = set(args.sections.split(","))
    result: dict[str, Any] = {"smoke": args.smoke}
    steps = {
        "environment": lambda: environment(device),
        "parity": lambda: parity(device, args.smoke),
        # fp16 only where it pays: on CPU it is emulated and ~50x slower (measured), so smoke runs fp32 only.
        "single_stream": lambda: single_stream(
            device, [(320, 180), (640, 360)] if args.smoke else
            [tuple(int(v) for v in size.split("x")) for size in args.sizes.split(",")], 4 if args.smoke else 120,
            (False,) if args.smoke else (False, True)),
        "streams": lambda: streams_held(device, *((320, 180) if args.smoke else (1920, 1080)),
                                        1.5 if args.smoke else args.seconds, 2 if args.smoke else args.max_streams,
                                        half=not args.smoke),
    }
    if args.junit:
        result["tests"] = junit_summary(args.junit)
    for name, step in steps.items():
        if name not in sections:
            continue
        started = time.perf_counter()
        try:
            result[name] = step()
        except Exception as exc:  # one broken section must not lose the others' figures
            log.exception("section %s failed", name)
            result[name] = {"error": f"{type(exc).__name__}: {exc}"}
        log.info("%s done in %.1f s", name, time.perf_counter() - started)
        args.out.write_text(json.dumps(result, indent=2))  # after every section: a timeout keeps what was done
    log.info("figures in %s:\n%s", args.out, json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
