"""Networks on CUDA: PyTorch's own kernels by default; with cuDNN, few input shapes, on one thread each, planned
before frames need them (cuda_plans.py).

The first GPU run (an H200, docs/gpu.md) ran the dev clip at 2.3 fps, p95 2.1 s: cuDNN planned ~58 new YuNet
input shapes, ~2 s each, one for nearly every crop looked at again. The second found the plans that were left
still made the GPU slower than the CPU, and turned cuDNN off. These tests hold the mechanism on the CPU, with
real models on real faces: a runner flagged `plans_per_shape` (as torch on CUDA with cuDNN is) records which
shapes were planned at start and which the stream then asks for.
"""

from __future__ import annotations

import threading

import cv2
import numpy as np
import pytest
import torch

from engine.config import Settings
from engine.gpu.device import DeviceRunner
from engine.models.backends import OnnxRuntimeRunner, TorchRunner
from engine.models.cuda_plans import (
    CROP_SIDES,
    NetworkThread,
    crop_canvas,
    cuda_kernels,
    pad_batch,
    padded_batch,
    plans_per_shape,
)
from engine.models.weights import model_path
from engine.recognition.recognize import align_face, preprocess, recognizer_module
from engine.stages.detect import create_detector
from engine.stages.detectors import yunet
from tests.conftest import PERFORMER_PHOTO, need_data


def test_crops_go_onto_a_few_canvases_that_hold_them():
    canvases = set()
    for height in range(32, 1025, 32):
        for width in range(32, 1025, 32):
            canvas = crop_canvas(height, width)
            assert canvas[0] >= height and canvas[1] >= width
            canvases.add(canvas)
    assert canvases == {(side, side) for side in CROP_SIDES}
    assert crop_canvas(1056, 640) == (1536, 1024)  # past the largest square: whole steps
    assert [padded_batch(n) for n in (1, 2, 3, 5, 9, 17, 64, 65)] == [1, 2, 4, 8, 16, 32, 64, 128]
    assert pad_batch(np.arange(3)[:, None]).ravel().tolist() == [0, 1, 2, 2]


@pytest.mark.parametrize("env, cudnn", [(None, False), ("1", True), ("0", False)])
def test_networks_on_cuda_run_without_cudnn_and_in_full_fp32(monkeypatch, env, cudnn):
    """The second GPU run (docs/gpu.md): cuDNN planned each new YuNet shape for 0.6-2.7 s, PyTorch's own kernels ran
    it at once and no slower. Off unless BLURCAST_CUDNN=1; TF32 off either way (the CPU's function)."""
    flags = (torch.backends.cudnn.enabled, torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    if env is None:
        monkeypatch.delenv("BLURCAST_CUDNN", raising=False)
    else:
        monkeypatch.setenv("BLURCAST_CUDNN", env)
    try:
        torch.backends.cudnn.enabled = not cudnn
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
        cuda_kernels()
        assert torch.backends.cudnn.enabled is cudnn
        assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
        # Few shapes, one thread, plans at start: only where cuDNN plans; PyTorch's own kernels take exact shapes.
        assert plans_per_shape("cuda") is cudnn and plans_per_shape("cpu") is False
    finally:
        (torch.backends.cudnn.enabled, torch.backends.cudnn.allow_tf32,
         torch.backends.cuda.matmul.allow_tf32) = flags


@pytest.mark.parametrize("warm_first", [True, False])
def test_a_runner_that_loads_kernels_on_its_first_call_is_warmed_up_before_the_first_frame(warm_first):
    """Torch on CUDA without cuDNN plans nothing, but loads its kernels on the first call (130 ms on the H200): the
    engine's warm-up makes that call before any frame's deadline. A CPU runner has nothing to warm."""
    from engine.pipeline import Pipeline

    real = OnnxRuntimeRunner(model_path("yunet"))
    shapes: list[tuple] = []

    class FirstCallLoads:
        name, plans_per_shape = real.name, False

        def run(self, batch):
            shapes.append(batch.shape)
            return real.run(batch)

    runner = FirstCallLoads()
    runner.warm_first = warm_first
    pipeline = Pipeline(Settings(backend="onnxruntime"), detector=yunet.YuNetDetector(runner, Settings().detect_width))
    pipeline.warm_up(1920, 1080, file_mode=True)
    assert bool(shapes) is warm_first
    if warm_first:  # the 1080p main pass among them: the first frame's own shape
        assert (1, 3, 736, 1280) in shapes


def test_one_network_thread_takes_every_call_and_raises_in_the_caller():
    network = NetworkThread("test")
    idents, errors = [], []

    def call(i: int) -> None:
        idents.append(network.call(lambda: threading.get_ident()))
        try:
            network.call(lambda: 1 / 0)
        except ZeroDivisionError as exc:
            errors.append(exc)

    callers = [threading.Thread(target=call, args=(i,)) for i in range(4)]
    for t in callers:
        t.start()
    for t in callers:
        t.join(10)
    assert len(set(idents)) == 1 and idents[0] != threading.get_ident() and len(errors) == 4
    # A call made from the network's own thread runs at once (no deadlock waiting on itself).
    assert network.call(lambda: network.call(lambda: 7)) == 7
    # Queued warm-ups run before a later call: that call finds their shapes planned.
    order: list[str] = []
    network.warm_async(lambda b: order.append(f"warm{b.shape[0]}"), [np.zeros(1), np.zeros(2)], "test")
    network.call(lambda: order.append("frame"))
    assert order == ["warm1", "warm2", "frame"]
    network.close()


def test_a_padded_batch_on_the_network_thread_embeds_as_inline(data_dir):
    need_data(PERFORMER_PHOTO)
    photo = cv2.imread(str(PERFORMER_PHOTO))
    found = create_detector(Settings(backend="onnxruntime")).detect(photo, 0.5)
    face = align_face(photo, found.landmarks[int(np.argmax(found.score))])
    faces = np.stack([face, cv2.flip(face, 1), cv2.GaussianBlur(face, (5, 5), 1.5)])  # 3: padded to 4
    inline = TorchRunner(recognizer_module, model_path("sface"), one_thread=False)
    threaded = TorchRunner(recognizer_module, model_path("sface"), one_thread=True)
    seen: list[tuple[int, int]] = []  # (batch size, thread) the network itself was called with
    threaded.module.register_forward_hook(lambda m, i, o: seen.append((i[0].shape[0], threading.get_ident())))
    batch = preprocess(faces)
    a, b = inline.run(batch)[0], threaded.run(batch)[0]
    assert b.shape == a.shape == (3, 128)
    np.testing.assert_allclose(b, a, atol=1e-5)
    assert seen[-1][0] == 4 and seen[-1][1] != threading.get_ident()
    # The device path's runner (engine/gpu), fed a tensor, the same way; an empty batch stays empty.
    device = DeviceRunner(recognizer_module(model_path("sface")), torch.device("cpu"), one_thread=True)
    c = device.run_tensor(torch.from_numpy(batch))[0].numpy()
    assert c.shape == (3, 128) and device._thread is not None
    np.testing.assert_allclose(c, a, atol=1e-4)
    assert device.run_tensor(torch.from_numpy(batch[:0]))[0].shape[0] == 0


def test_merged_streams_plan_each_new_shape_at_every_batch_size_once():
    """blurcast.multi merges the streams' calls: a shape seen once is planned at every batch size up to the streams'
    count before that call runs, and a runner made again (the next engine) finds them planned on the same thread."""
    from engine.multistream import SharedNetworks

    seen: list[tuple[int, int]] = []  # (batch size, thread) each network call ran with
    record = lambda m, i, o: seen.append((i[0].shape[0], threading.get_ident()))  # noqa: E731
    runner = DeviceRunner(yunet._torch_module(model_path("yunet")), torch.device("cpu"), one_thread=True)
    runner.module.register_forward_hook(record)
    runner.max_batch = 5  # padded to 8: sizes 2, 4, 8 planned besides the 1 asked for
    runner.run_tensor(torch.rand((1, 3, 64, 96)) * 255)  # an item shape no other test plans on this thread
    assert [size for size, _ in seen] == [2, 4, 8, 1]
    assert len({ident for _, ident in seen}) == 1 and seen[0][1] != threading.get_ident()
    runner.run_tensor(torch.rand((3, 3, 64, 96)) * 255)
    assert [size for size, _ in seen] == [2, 4, 8, 1, 4]  # the same shape again: nothing more to plan
    again = DeviceRunner(yunet._torch_module(model_path("yunet")), torch.device("cpu"), one_thread=True)
    again.module.register_forward_hook(record)
    again.max_batch = 5
    again.run_tensor(torch.rand((2, 3, 64, 96)) * 255)
    assert again._thread is runner._thread and [size for size, _ in seen][5:] == [2]  # planned once per thread
    shared = SharedNetworks(3, device="cpu")
    assert shared.detector.runner.max_batch == 3  # the batching merges up to one call per stream
    shared.close()


def test_a_network_that_fails_on_its_thread_hides_the_frame_whole(dev_clip):
    """The failure is raised in the frame's thread, where the pipeline's fail-closed rule takes it."""
    from engine.pipeline import Pipeline

    runner = TorchRunner(yunet._torch_module, model_path("yunet"), one_thread=True)
    detector = yunet.YuNetDetector(runner, Settings().detect_width)
    ok, frame = cv2.VideoCapture(str(dev_clip)).read()
    assert ok
    pipeline = Pipeline(Settings(backend="torch"), detector=detector)
    pipeline.warm_up(frame.shape[1], frame.shape[0])  # as the engine does first: behind the queued crop shapes
    safe, report = pipeline.process(frame.copy(), 0, 1 / 30)
    assert report.whole_frame == "first-frame" and len(report.faces)  # works on its thread (a stream's 1st frame)

    def broken(*_):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    runner.module.forward = broken
    safe, report = pipeline.process(frame.copy(), 1, 1 / 30)
    assert report.whole_frame == "detector-error" and safe.whole_frame


def test_photos_stay_on_the_cpu_where_there_is_a_gpu(monkeypatch):
    from engine.models import backends

    monkeypatch.setattr(backends, "cuda_available", lambda: True)
    assert backends.resolve_backend("auto", "photo") == "onnxruntime"  # each photo its own sizes: no plans
    assert backends.resolve_backend("auto", "yunet") == "torch"
    assert backends.resolve_backend("auto", "sface") == "torch"


def test_blurcast_run_on_a_photo_stays_on_the_cpu_where_there_is_a_gpu(monkeypatch, tmp_path):
    """`blurcast run photo.jpg` under auto: one photo took 4.7 s through torch on CUDA (mostly CUDA's start) against
    1.9 s on onnxruntime (an H200, docs/gpu.md). A video, or a photo looped as a live source, still goes to the GPU;
    without a GPU nothing changes; and the engine keeps `auto` in its settings (which a control command saves)."""
    from blurcast.assemble import build_engine
    from engine.client import EnginePaths
    from engine.models import backends
    from engine.service import ServeOptions

    need_data(PERFORMER_PHOTO)
    video = tmp_path / "three.mp4"  # a source of more than one frame stands for "not a photo"
    frame = cv2.imread(str(PERFORMER_PHOTO))
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10, frame.shape[1::-1])
    for _ in range(3):
        writer.write(frame)
    writer.release()
    picked: list[str] = []
    real = backends.make_runner
    monkeypatch.setattr(yunet, "make_runner", lambda backend, *a, **k: picked.append(backend) or real(
        "onnxruntime", *a, **k))  # what the detector was asked to run on; built on this CPU either way
    for gpu, source, loop, expected in ((True, PERFORMER_PHOTO, False, "onnxruntime"), (True, video, False, "auto"),
                                        (True, PERFORMER_PHOTO, True, "auto"), (False, PERFORMER_PHOTO, False, "auto")):
        monkeypatch.setattr(backends, "cuda_available", lambda gpu=gpu: gpu)
        picked.clear()
        engine = build_engine(ServeOptions(source=str(source), loop=loop), Settings(), paths=EnginePaths(tmp_path),
                              use_facebank=False).engine
        engine.close()
        assert picked == [expected], (gpu, source.name, loop)
        assert engine.settings.backend == "auto"


class ShapeLog:
    """A real runner as torch on CUDA presents it to the detector: `plans_per_shape`, with `warm`. Records the
    input shapes planned (warmed) and the ones the stream asks for."""

    plans_per_shape = True

    def __init__(self, runner, log: dict) -> None:
        self.runner, self.name, self.log = runner, runner.name, log

    def warm(self, batches, what):
        for batch in batches:
            self.runner.run(batch)
            self.log["planned"].add(batch.shape)

    def run(self, batch):
        self.log["asked"].append(batch.shape)
        if self.log["warming"]:
            self.log["planned"].add(batch.shape)
        return self.runner.run(batch)


@pytest.mark.slow
def test_after_warm_up_the_stream_asks_only_for_planned_shapes(dev_clip, monkeypatch):
    """The dev clip in file mode with the performer allowed: the main pass, the faces looked at again (second
    looks) and the crops refined for recognition (the landmarker). Before, it presented 58-84 YuNet shapes."""
    from bench.sinks import DiscardSink
    from blurcast.assemble import build_engine
    from engine.service import ServeOptions

    need_data(PERFORMER_PHOTO)
    from engine.pipeline import Pipeline

    log = {"planned": set(), "asked": [], "warming": False}
    real = yunet.make_runner
    monkeypatch.setattr(yunet, "make_runner", lambda *a, **k: ShapeLog(real(*a, **k), log))
    warm_up = Pipeline.warm_up

    def logged_warm_up(self, *args, **kwargs):  # what the engine's own warm-up runs counts as planned
        log["warming"] = True
        try:
            warm_up(self, *args, **kwargs)
        finally:
            log["warming"] = False

    monkeypatch.setattr(Pipeline, "warm_up", logged_warm_up)
    engine = build_engine(ServeOptions(source=str(dev_clip)), Settings(backend="onnxruntime"),
                          use_facebank=False, allow=[str(PERFORMER_PHOTO)]).engine
    try:
        log["asked"] = []  # the photo's enrolment (on the CPU under auto where there is a GPU) is not the stream
        engine.sinks.append(DiscardSink())
        engine.run_file()  # warms up first for a runner that plans per shape, as live does
    finally:
        engine.close()
    asked = set(log["asked"])
    main = max(asked, key=log["asked"].count)
    crops = [s for s in log["asked"] if s != main]
    assert len(crops) > 200, "the clip should make the detector look at crops again"
    unplanned = {s for s in asked - log["planned"] if max(s[2:]) <= CROP_SIDES[-1]}
    assert not unplanned, f"shapes the stream asked for that were not planned at start: {sorted(unplanned)}"
    assert len(asked) <= 1 + len(CROP_SIDES) + 2, sorted(asked)  # main pass, the squares, a rare large crop


def test_a_crop_canvas_moves_refined_landmarks_less_than_a_two_pixel_box_shift(dev_clip):
    """Zero padding up to a crop canvas changes what YuNet sees around the crop. Measured on the dev clip
    (every 10th frame, 46 faces, landmark error / face width): the canvas median 0.010, p95 0.032; the same
    refine with its box moved 2 px (as boxes move from frame to frame) median 0.036, p95 0.084."""
    detector = yunet.YuNetDetector(OnnxRuntimeRunner(model_path("yunet")), Settings().detect_width)
    cap, errors, shifted, faces = cv2.VideoCapture(str(dev_clip)), [], [], 0
    for index in range(0, 275):
        ok, frame = cap.read()
        if not ok or index % 10:
            continue
        for box in detector.detect(frame, 0.5).xyxy:
            detector._crop_canvas = None
            exact = detector.refine(frame, box)
            moved = detector.refine(frame, box + 2)
            detector._crop_canvas = crop_canvas
            canvas = detector.refine(frame, box)
            faces += bool(len(exact))
            width = box[2] - box[0]
            if len(exact) and len(canvas):
                errors.append(np.abs(exact.landmarks - canvas.landmarks).max() / width)
            if len(exact) and len(moved):
                shifted.append(np.abs(exact.landmarks - moved.landmarks).max() / width)
    assert faces >= 40 and len(errors) >= faces - 2  # a face refine finds exactly, it finds on the canvas too
    assert np.median(errors) <= np.median(shifted) and np.median(errors) <= 0.02
    assert np.percentile(errors, 95) <= np.percentile(shifted, 95)
