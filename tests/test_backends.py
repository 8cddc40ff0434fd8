"""The OpenVINO backend: the same faces as onnxruntime on real photos, chosen by `auto` only where it is faster."""

from __future__ import annotations

import importlib.util
import sys
import threading
import time

import cv2
import numpy as np
import pytest

from engine.config import Settings
from engine.models import backends
from engine.models.backends import OpenVinoRunner, openvino_avx2, openvino_bf16, resolve_backend
from engine.models.weights import model_path
from engine.recognition.recognize import FaceEmbedder, align_face, create_embedder, create_landmarker
from engine.stages.detect import create_detector
from facebank.enrol import Enroller
from tests.helpers import pairwise_iou

needs_bf16 = pytest.mark.skipif(not openvino_bf16(), reason="openvino is not installed or this CPU has no bf16 "
                                "(OpenVINO then runs f32: auto runs only the recognizer on it, on x86 with AVX2)")

# bf16 keeps 8 bits of mantissa. Measured on the 4 WIDER FACE photos (crowds, faces of 10-300 px) at
# detect_width 1280 and 2048: scores within 0.016 of onnxruntime's, box corners within 1.0 px, IoU >= 0.98 on
# faces of 20 px and more (0.86-0.95 on 10-18 px faces: the same 1 px is a larger share of a small box).
# That was an AMD EPYC (avx512_bf16); on an Intel Xeon with AMX one 62 px Parade face's corner was 2.53 px off
# (4.1 % of its width), every other face within 1 px: the corner bound grows with the face.
SCORE_TOLERANCE = 0.03
CORNER_PX = 2.0
CORNER_SHARE = 0.06  # ... or this share of the face's width, whichever is larger
MIN_IOU = 0.9
IOU_FROM_PX = 20  # faces at least this wide must overlap by MIN_IOU; every face's corners within the bound above
MIN_SCORE = 0.3  # detected at this; compared from 0.5 + SCORE_TOLERANCE, so a face on the bar cannot flip out


@pytest.fixture(scope="module")
def crowd_faces(data_dir) -> np.ndarray:
    """Up to 12 real faces of a WIDER crowd photo, aligned as the stream aligns them (112x112 BGR)."""
    photo = cv2.imread(str(data_dir / "detection_widerface_val" / "images" / "0_Parade_marchingband_1_765.jpg"))
    found = create_detector(Settings(backend="onnxruntime")).detect(photo, 0.6)
    landmarker = create_landmarker(Settings())
    faces = np.stack([landmarker.align(photo, box, marks) for box, marks in zip(found.xyxy, found.landmarks,
                                                                                 strict=True)][:12])
    assert len(faces) >= 8
    return faces


@pytest.fixture(scope="module")
def photos(data_dir) -> list[np.ndarray]:
    wider = sorted((data_dir / "detection_widerface_val" / "images").glob("*.jpg"))
    astronaut = data_dir / "detection_unannotated" / "pypi_scikit-image" / "astronaut.png"
    return [cv2.imread(str(p)) for p in [*wider, astronaut]]


def _same_faces(a, b) -> None:
    """Every face clearly above 0.5 in `a` is in `b`: same place, same score (within bf16's precision)."""
    clear = np.flatnonzero(a.score >= 0.5 + SCORE_TOLERANCE)
    assert len(clear)
    assert len(b)
    iou = pairwise_iou(a.xyxy[clear], b.xyxy)
    match = iou.argmax(axis=1)
    width = a.xyxy[clear, 2] - a.xyxy[clear, 0]
    large = width >= IOU_FROM_PX
    assert (iou.max(axis=1)[large] > MIN_IOU).all(), iou.max(axis=1)[large].min()
    bound = np.maximum(CORNER_PX, CORNER_SHARE * width)[:, None]
    off = np.abs(b.xyxy[match] - a.xyxy[clear])
    assert (off <= bound).all(), f"corners off by up to {off.max():.2f} px ({(off / bound).max():.2f} of the bound)"
    np.testing.assert_allclose(b.score[match], a.score[clear], atol=SCORE_TOLERANCE)


@needs_bf16
def test_openvino_finds_the_faces_onnxruntime_finds(photos):
    ort = create_detector(Settings(backend="onnxruntime"))
    ov = create_detector(Settings(backend="openvino"))
    assert ov.runner_name == "openvino-cpu-bf16"
    faces = 0
    for image in photos:
        a, b = ort.detect(image, MIN_SCORE), ov.detect(image, MIN_SCORE)
        _same_faces(a, b)
        _same_faces(b, a)
        faces += int((a.score >= 0.5).sum())
    assert faces > 200  # the crowds are in the set: small faces were compared, not only the astronaut


@needs_bf16
def test_static_shape_models_agree_with_the_dynamic_one(photos):
    """A shape called often gets its own compiled model: the same outputs, within bf16's precision."""
    runner = OpenVinoRunner(model_path("yunet"))
    runner.background_compiles = False  # file mode: compiled in the calling thread, on a known call
    image = cv2.resize(photos[0], (640, 480))
    batch = np.ascontiguousarray(image.transpose(2, 0, 1)[None], dtype=np.float32)
    first = runner.run(batch)
    for _ in range(OpenVinoRunner.STATIC_AFTER):
        last = runner.run(batch)
    assert list(runner._static) == [batch.shape]
    for x, y in zip(first, last, strict=True):
        np.testing.assert_allclose(x, y, atol=1e-2)


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="openvino is not installed")
def test_an_image_network_takes_its_uint8_image_with_the_same_outputs_to_the_bit(photos):
    """The detectors' OpenVINO runner takes the letterboxed uint8 image and casts it inside its graph: the outputs of
    the float batch's runner, bit for bit, on the dynamic model and on a shape's own (the main pass's size and a
    crowd photo's); a float batch is refused, not misread."""
    from engine.stages.detect import letterbox, network_batch, network_input

    floats, images = OpenVinoRunner(model_path("yunet")), OpenVinoRunner(model_path("yunet"), takes_images=True)
    assert backends.make_runner("openvino", model_path("yunet"), lambda path: None, network="yunet").takes_images
    assert not backends.make_runner("openvino", model_path("sface"), lambda path: None, network="sface").takes_images
    for runner in (floats, images):
        runner.background_compiles = False
    for photo in photos[:2]:
        image = letterbox(cv2.resize(photo, (1280, 720)), 1.0)
        for _ in range(OpenVinoRunner.STATIC_AFTER + 1):  # the dynamic model, then the shape's own
            expected = floats.run(network_input(image))
            got = images.run(network_batch(images, image))
            for x, y in zip(expected, got, strict=True):
                np.testing.assert_array_equal(x, y)
        assert (1, 736, 1280, 3) in images._static
    with pytest.raises(TypeError, match="uint8 images"):
        images.run(network_input(image))
    floats, images = (OpenVinoRunner(model_path("centerface"), takes_images=t) for t in (False, True))
    rgb = cv2.cvtColor(letterbox(photos[0], 0.5), cv2.COLOR_BGR2RGB)  # CenterFace's input
    for x, y in zip(floats.run(network_input(rgb)), images.run(network_batch(images, rgb)), strict=True):
        np.testing.assert_array_equal(x, y)


@needs_bf16
def test_live_compiles_in_the_background_and_serves_meanwhile(photos):
    """Live, the call that triggers a compile does not wait for it (it passed the detector's deadline and
    frames went out blurred whole); the shape switches to its own model once compiled."""
    runner = OpenVinoRunner(model_path("yunet"))
    assert runner.background_compiles  # the default; file mode (Pipeline.offline) turns it off
    batch = np.ascontiguousarray(cv2.resize(photos[0], (640, 480)).transpose(2, 0, 1)[None], dtype=np.float32)
    for _ in range(OpenVinoRunner.STATIC_AFTER):
        runner.run(batch)
    deadline = time.monotonic() + 60
    while batch.shape not in runner._static and time.monotonic() < deadline:
        time.sleep(0.05)
    assert batch.shape in runner._static and runner._static[batch.shape] is not runner.compiled
    assert not runner._pending


@needs_bf16
def test_a_shape_whose_compile_fails_stays_on_the_dynamic_model_and_is_not_retried(photos, monkeypatch):
    runner = OpenVinoRunner(model_path("yunet"))
    runner.background_compiles = False
    attempts = []
    dynamic_compile = runner._compile

    def failing(shape):
        if shape is not None:
            attempts.append(shape)
            raise RuntimeError("injected compile failure")
        return dynamic_compile(shape)

    monkeypatch.setattr(runner, "_compile", failing)
    batch = np.ascontiguousarray(cv2.resize(photos[0], (640, 480)).transpose(2, 0, 1)[None], dtype=np.float32)
    expected = runner.run(batch)
    for _ in range(6):
        out = runner.run(batch)
    assert attempts == [batch.shape]  # tried once, not on every later frame
    for x, y in zip(expected, out, strict=True):
        np.testing.assert_array_equal(x, y)  # the dynamic model, bit for bit


def test_the_engine_refuses_openvino_when_it_is_not_installed(monkeypatch):
    """Refused before it is saved: a saved backend that cannot load would stop every later start."""
    import importlib.util

    from engine.runner import Engine

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a))
    engine = Engine.__new__(Engine)  # only update_settings' check is exercised: no source or pipeline needed
    with pytest.raises(ValueError, match=r"blurcast\[openvino\]"):
        engine.update_settings({"backend": "openvino"})


@needs_bf16
def test_one_runner_from_two_threads_gives_each_its_own_result(photos):
    """The detector's thread and another caller (the multi-stream engine) may run one runner at once."""
    runner = OpenVinoRunner(model_path("yunet"))
    batches = [np.ascontiguousarray(cv2.resize(p, (640, 480)).transpose(2, 0, 1)[None], dtype=np.float32)
               for p in photos[:2]]
    alone = [runner.run(b)[0] for b in batches]
    got: dict[int, list[np.ndarray]] = {0: [], 1: []}

    def work(k: int) -> None:
        for _ in range(8):
            got[k].append(runner.run(batches[k])[0])

    threads = [threading.Thread(target=work, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in (0, 1):
        for out in got[k]:  # the static model (from the 3rd call on) differs from the dynamic one by ~1e-3
            np.testing.assert_allclose(out, alone[k], atol=1e-2)


def test_auto_picks_openvino_for_a_listed_network_only_with_bf16(monkeypatch):
    monkeypatch.setattr(backends, "OPENVINO_AUTO", frozenset({"yunet", "sface"}))  # as listed (holds if it changes)
    monkeypatch.setattr(backends, "cuda_available", lambda: False)
    monkeypatch.setattr(backends, "openvino_bf16", lambda: True)
    assert resolve_backend("auto", "yunet") == "openvino"
    assert resolve_backend("auto", "sface") == "openvino"
    assert resolve_backend("auto", "landmarker") == "onnxruntime"
    assert resolve_backend("auto", "photo") == "onnxruntime"
    assert resolve_backend("auto", "centerface") == "onnxruntime"
    assert resolve_backend("auto") == "onnxruntime"
    monkeypatch.setattr(backends, "openvino_bf16", lambda: False)
    monkeypatch.setattr(backends, "openvino_avx2", lambda: False)
    assert resolve_backend("auto", "yunet") == "onnxruntime"
    assert resolve_backend("auto", "sface") == "onnxruntime"
    assert resolve_backend("openvino", "sface") == "openvino"  # asked for: given
    # x86 with AVX2, no bf16: the recognizer alone on OpenVINO (f32 there), the detectors on onnxruntime
    monkeypatch.setattr(backends, "OPENVINO_F32_AUTO", frozenset({"sface"}))  # as listed (holds if it changes)
    monkeypatch.setattr(backends, "openvino_avx2", lambda: True)
    assert resolve_backend("auto", "sface") == "openvino"
    assert resolve_backend("auto", "yunet") == "onnxruntime"
    assert resolve_backend("auto", "landmarker") == "onnxruntime"
    assert resolve_backend("auto", "photo") == "onnxruntime"
    monkeypatch.setattr(backends, "cuda_available", lambda: True)
    monkeypatch.setattr(backends, "openvino_bf16", lambda: True)
    assert resolve_backend("auto", "yunet") == "torch"


def test_openvino_bf16_is_false_without_openvino(monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino now raises ImportError
    openvino_bf16.cache_clear()
    openvino_avx2.cache_clear()
    try:
        assert openvino_bf16() is False
        assert openvino_avx2() is False
    finally:
        openvino_bf16.cache_clear()
        openvino_avx2.cache_clear()


def test_openvino_f32_is_auto_s_only_on_x86_with_avx2(monkeypatch):
    """Measured on two x86 CPUs with AVX2; a CPU whose flags lack it, or cannot be read (not Linux), keeps
    onnxruntime for every network."""
    for flags, expected in ((frozenset({"sse4_2", "avx2", "fma"}), importlib.util.find_spec("openvino") is not None),
                            (frozenset({"neon", "asimd"}), False), (None, False)):
        monkeypatch.setattr(backends, "_cpu_flags", lambda flags=flags: flags)
        backends.openvino_avx2.cache_clear()
        try:
            assert backends.openvino_avx2() is expected
        finally:
            backends.openvino_avx2.cache_clear()


def test_asking_for_openvino_without_it_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(RuntimeError, match=r"blurcast\[openvino\]"):
        OpenVinoRunner(model_path("yunet"))


@pytest.mark.skipif(backends.cuda_available(), reason="on CUDA auto picks torch")
def test_auto_here_puts_only_the_stream_detector_and_the_recognizer_on_openvino():
    """The real choice on this machine. Where the CPU has bf16: the stream's detector on OpenVINO in bf16 (0.7x the
    CPU a live frame), the recognizer too (0.14x onnxruntime's CPU, LFW unchanged; docs/measurements.md). On x86 with
    AVX2 only: the recognizer on OpenVINO in f32 (0.46x onnxruntime's CPU), the detector on onnxruntime. The
    landmarker's YuNet and photo detection on onnxruntime everywhere; without OpenVINO, everything."""
    bf16, avx2 = backends.openvino_bf16(), backends.openvino_avx2()
    assert create_detector(Settings()).runner_name == ("openvino-cpu-bf16" if bf16 else "onnxruntime-cpu")
    assert create_embedder(Settings()).runner_name == ("openvino-cpu-bf16" if bf16 else
                                                      "openvino-cpu-f32" if avx2 else "onnxruntime-cpu")
    assert create_landmarker(Settings()).detector.runner_name == "onnxruntime-cpu"
    assert {d.runner_name for d in Enroller(Settings()).detectors} == {"onnxruntime-cpu"}


@needs_bf16
def test_file_mode_keeps_auto_on_onnxruntime(monkeypatch):
    """A recording is the same file on every CPU, and the corpus's privacy figures (measured on onnxruntime) are
    the ones it gets: file mode replaces `auto`'s OpenVINO detector; live keeps it, and asked for, it stays. (The
    recognizer's bf16 embeddings are onnxruntime's to within a grey level's noise:
    `test_the_recognizer_on_openvino_bf16_embeds_as_onnxruntime_within_a_grey_level`.)"""
    from engine.pipeline import Pipeline

    monkeypatch.setattr(backends, "OPENVINO_AUTO", frozenset({"yunet"}))  # as listed (patched: holds if it changes)
    pipeline = Pipeline(Settings())
    assert pipeline.detector.runner_name == "openvino-cpu-bf16"
    pipeline.offline = True
    assert pipeline.detector.runner_name == "onnxruntime-cpu"
    pipeline.configure(Settings(detector="centerface"))  # and a detector made again in file mode
    pipeline.configure(Settings())
    assert pipeline.detector.runner_name == "onnxruntime-cpu"
    asked = Pipeline(Settings(backend="openvino"))
    asked.offline = True
    assert asked.detector.runner_name == "openvino-cpu-bf16"
    pipeline.close()
    asked.close()


@needs_bf16
def test_a_file_runs_pipeline_never_compiles_the_live_detector(monkeypatch, tmp_path, dev_clip):
    """`blurcast run` on a file and `blurcast eval` build the engine for file mode from the start: live mode's
    OpenVINO detector was compiled and then thrown away (0.15 s of a 0.7 s photo). A camera or stream source built
    with `file_mode` stays live (it is never run through once)."""
    from blurcast.assemble import build_engine
    from engine.client import EnginePaths
    from engine.service import ServeOptions

    monkeypatch.setattr(backends, "OPENVINO_AUTO", frozenset({"yunet"}))  # as listed (patched: holds if it changes)
    monkeypatch.setattr(backends, "cuda_available", lambda: False)  # a GPU rig's `auto` is torch on CUDA
    made = []
    real_init = backends.OpenVinoRunner.__init__
    monkeypatch.setattr(backends.OpenVinoRunner, "__init__",
                        lambda self, *a, **k: made.append(a[0]) or real_init(self, *a, **k))
    options = ServeOptions(source=str(dev_clip), record=str(tmp_path / "out.mp4"))
    engine = build_engine(options, Settings(), paths=EnginePaths(tmp_path), use_facebank=False, file_mode=True).engine
    try:
        assert engine.pipeline.offline
        assert engine.pipeline.detector.runner_name == "onnxruntime-cpu"
        assert made == []  # not compiled at all, not only replaced
    finally:
        engine.close()
    live = build_engine(ServeOptions(source=str(dev_clip)), Settings(), paths=EnginePaths(tmp_path / "live"),
                        use_facebank=False).engine
    try:
        assert not live.pipeline.offline
        assert live.pipeline.detector.runner_name == "openvino-cpu-bf16"
    finally:
        live.close()


def test_auto_without_openvino_runs_everything_on_onnxruntime(monkeypatch):
    """The fallback path of a machine without openvino (or without bf16): auto still starts, on onnxruntime."""
    monkeypatch.setattr(backends, "OPENVINO_AUTO", frozenset({"yunet", "sface"}))  # as listed (holds if it changes)
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino now raises ImportError
    monkeypatch.setattr(backends, "cuda_available", lambda: False)
    openvino_bf16.cache_clear()
    openvino_avx2.cache_clear()
    try:
        assert create_detector(Settings()).runner_name == "onnxruntime-cpu"
        assert create_embedder(Settings()).runner_name == "onnxruntime-cpu"
    finally:
        openvino_bf16.cache_clear()
        openvino_avx2.cache_clear()


def test_auto_falls_back_to_onnxruntime_when_openvino_cannot_load_the_model(monkeypatch):
    """A broken OpenVINO install must not stop `auto` from starting: the stream is never left without a detector."""
    monkeypatch.setattr(backends, "OPENVINO_AUTO", frozenset({"yunet"}))  # as listed (patched: holds if it changes)
    monkeypatch.setattr(backends, "cuda_available", lambda: False)
    monkeypatch.setattr(backends, "openvino_bf16", lambda: True)

    def broken(*args, **kwargs):
        raise RuntimeError("injected: the CPU plugin failed")

    monkeypatch.setattr(backends, "OPENVINO_AUTO", frozenset({"yunet", "sface"}))
    monkeypatch.setattr(backends, "OpenVinoRunner", broken)
    assert create_detector(Settings()).runner_name == "onnxruntime-cpu"
    assert create_embedder(Settings()).runner_name == "onnxruntime-cpu"
    with pytest.raises(RuntimeError, match="injected"):  # asked for by name: the failure is the user's to see
        create_detector(Settings(backend="openvino"))


@needs_bf16
def test_openvino_asked_for_runs_bf16_here():
    """Asked for by name, the detector and the recognizer run bf16."""
    assert create_detector(Settings(backend="openvino")).runner_name == "openvino-cpu-bf16"
    assert create_embedder(Settings(backend="openvino")).runner_name == "openvino-cpu-bf16"


@needs_bf16
def test_openvino_embeds_faces_as_onnxruntime_does(data_dir):
    """Two backends' embeddings of the same five people, where a match needs 0.37 and 0.1 % of impostor pairs reach
    0.343-0.367 (SFace): a facebank enrolled on one backend matches on the other, every pair's similarity within
    0.02 (bf16's worst measured: 0.013 over 1,081 pairs of WIDER faces)."""
    detector = create_detector(Settings(backend="onnxruntime"))
    faces = []
    for name in ("recognition_faceapi_bbt/amy/amy1.png", "recognition_faceapi_bbt/raj/raj2.png",
                 "recognition_openface/clapton-1.jpg", "recognition_face_recognition/examples/obama-480p.jpg",
                 "recognition_face_recognition/examples/lin-manuel-miranda.png"):
        image = cv2.imread(str(data_dir / name))
        found = detector.detect(image, 0.7)
        faces.append(align_face(image, found.landmarks[int(found.score.argmax())]))
    ort = create_embedder(Settings(), backend="onnxruntime").embed_aligned(np.stack(faces))
    ov = create_embedder(Settings(), backend="openvino")
    assert ov.runner_name == "openvino-cpu-bf16"
    got = ov.embed_aligned(np.stack(faces))
    assert (ort * got).sum(axis=1).min() > 0.999
    assert np.abs(ort @ ort.T - got @ got.T).max() < 0.02


@needs_bf16
def test_live_compiles_the_frame_size_s_shapes_before_the_first_frame(dev_clip):
    """A shape compiled mid-stream takes a core from the detector for 0.1-0.9 s (2 cores): the detector missed
    its deadline and frames went out blurred whole. Warmed up for the frame size, the stream compiles nothing."""
    from engine.pipeline import Pipeline

    pipeline = Pipeline(Settings(backend="openvino"))
    runner = pipeline.detector.runner
    pipeline.warm_up(1920, 1080)
    compiled = set(runner._static)
    assert len(compiled) >= 2, "the main pass and the tiles"
    assert runner.background_compiles, "live again after the warm-up"
    capture = cv2.VideoCapture(str(dev_clip))
    for index in range(40):
        ok, frame = capture.read()
        assert ok
        pipeline.process(cv2.resize(frame, (1920, 1080)), index, 1 / 30)
    assert set(runner._static) == compiled and not runner._pending, "no compile once frames flow"
    calls = []
    detect = pipeline.detector.detect
    pipeline.detector.detect = lambda *args: calls.append(args) or detect(*args)
    pipeline.warm_up(1920, 1080)
    assert not calls, "once per detector and frame size"
    pipeline.close()


@needs_bf16
def test_the_stream_detector_gets_two_openvino_threads_and_other_networks_one():
    """The stream's detector is on the live frame's critical path: two threads finish it sooner (p50 45-48 -> 30-35
    ms live 1080p, docs/measurements.md); the recognizer runs beside the frame loop, where one costs less CPU."""
    detector = backends.make_runner("openvino", model_path("yunet"), lambda path: None, network="yunet")
    recognizer = backends.make_runner("openvino", model_path("sface"), lambda path: None, network="sface")
    assert detector.compiled.get_property("INFERENCE_NUM_THREADS") == backends.OPENVINO_DETECTOR_THREADS == 2
    assert recognizer.compiled.get_property("INFERENCE_NUM_THREADS") == backends.OPENVINO_THREADS == 1


@needs_bf16
def test_the_recognizer_on_openvino_bf16_embeds_as_onnxruntime_within_a_grey_level(crowd_faces):
    """`auto`'s recognizer on a bf16 CPU is OpenVINO in bf16: every real face embeds as on onnxruntime to cosine 0.999
    (0.9994 at worst on 47 WIDER faces), a few times what one grey level more or less on 5 % of a face's pixels does
    on onnxruntime itself (0.9998; LFW is the same on both, docs/measurements.md). A batch of several faces embeds as
    each alone, on its one dynamic model (no compile per shape)."""
    faces = crowd_faces
    ort, ov = create_embedder(Settings(backend="onnxruntime")), create_embedder(Settings())
    assert ov.runner_name == "openvino-cpu-bf16"
    ov.runner.background_compiles = False
    expected = ort.embed_aligned(faces)
    rng = np.random.default_rng(0)
    step = rng.choice([-1, 1], faces.shape) * (rng.random(faces.shape) < 0.05)
    grey_level = ort.embed_aligned(np.clip(faces.astype(int) + step, 0, 255).astype(np.uint8))
    noise = 1 - np.sum(grey_level * expected, axis=1).min()
    assert 0 < noise < 1e-3
    for _ in range(ov.runner.STATIC_AFTER + 1):
        alone = np.concatenate([ov.embed_aligned(face[None]) for face in faces])
        together = ov.embed_aligned(faces)
        np.testing.assert_allclose(together, alone, atol=1e-5)
        assert 1 - np.sum(alone * expected, axis=1).min() < min(1e-3, 5 * noise)
    assert not ov.runner._static, "the dynamic model serves every shape"


def test_the_landmarker_runs_on_one_onnxruntime_thread_with_the_same_landmarks(data_dir):
    """The landmarker's YuNet takes one onnxruntime thread (0.73x the CPU a face of two, the same wall time:
    bench/landmarker_cpu.py): its four crops a face are too small to share out, and live it runs beside the frame
    path. One thread places every landmark of real faces where two do, to the bit (the facebank's embeddings stay)."""
    photo = cv2.imread(str(data_dir / "detection_widerface_val" / "images" / "0_Parade_marchingband_1_765.jpg"))
    found = create_detector(Settings(backend="onnxruntime")).detect(photo, 0.6)
    assert len(found) >= 8
    landmarker = create_landmarker(Settings(backend="onnxruntime"))
    runner = landmarker.detector.runner
    assert isinstance(runner, backends.OnnxRuntimeRunner)
    assert runner.session.get_session_options().intra_op_num_threads == backends.ONNXRUNTIME_THREADS["landmarker"] == 1
    one = [landmarker(photo, box, marks) for box, marks in zip(found.xyxy, found.landmarks, strict=True)]
    landmarker.detector.runner = backends.OnnxRuntimeRunner(model_path("yunet"), threads=2)
    two = [landmarker(photo, box, marks) for box, marks in zip(found.xyxy, found.landmarks, strict=True)]
    np.testing.assert_array_equal(np.stack(one), np.stack(two))
    # the stream's and the photos' detectors keep two
    stream = create_detector(Settings(backend="onnxruntime")).runner
    assert stream.session.get_session_options().intra_op_num_threads == 2


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="openvino is not installed")
def test_the_recognizer_on_openvino_f32_embeds_as_onnxruntime(crowd_faces, monkeypatch):
    """`auto`'s recognizer on an x86 CPU with AVX2 and no bf16 is OpenVINO in f32, asked for by name (0.46x
    onnxruntime's CPU a face on the AVX2 EPYC): real faces embed as on onnxruntime to cosine 1 - 1e-5 (0.9999998
    measured), alone and batched, so a facebank enrolled on either matches on the other as it would on itself."""
    faces = crowd_faces
    expected = create_embedder(Settings(backend="onnxruntime")).embed_aligned(faces)
    monkeypatch.setattr(backends, "cuda_available", lambda: False)
    monkeypatch.setattr(backends, "openvino_bf16", lambda: False)  # as auto builds it on such a CPU, also on this one
    monkeypatch.setattr(backends, "openvino_avx2", lambda: True)
    ov = create_embedder(Settings())
    assert ov.runner_name == "openvino-cpu-f32"
    alone = np.concatenate([ov.embed_aligned(face[None]) for face in faces])
    together = ov.embed_aligned(faces)
    np.testing.assert_allclose(together, alone, atol=1e-5)
    assert 1 - np.sum(alone * expected, axis=1).min() < 1e-5


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="openvino is not installed")
def test_runners_of_the_recognizer_share_its_compiled_model_and_detectors_keep_their_own(data_dir):
    """The engine's recognizer and the enroller's are two runners of one file: compiled once in a process (0.5 s
    each on the AVX2 EPYC), each runner with its own requests, the same outputs; another configuration compiles its
    own, and a detector (on the live deadline: a shared model serves one request at a time) keeps its own."""
    path = model_path("sface")
    first, second = (OpenVinoRunner(path, per_shape=False) for _ in range(2))
    assert first.compiled is second.compiled
    assert OpenVinoRunner(path, backends.OPENVINO_THREADS + 1, per_shape=False).compiled is not first.compiled
    assert OpenVinoRunner(model_path("yunet")).compiled is not OpenVinoRunner(model_path("yunet")).compiled
    face = cv2.resize(cv2.imread(str(data_dir / "recognition_face_recognition" / "examples" / "obama-480p.jpg")),
                      (112, 112))
    embedder_one, embedder_two = FaceEmbedder(first), FaceEmbedder(second)
    results = {}
    threads = [threading.Thread(target=lambda k, e: results.__setitem__(k, e.embed_aligned(face[None])), args=(k, e))
               for k, e in ((1, embedder_one), (2, embedder_two))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    np.testing.assert_array_equal(results[1], results[2])
    np.testing.assert_array_equal(results[1], embedder_one.embed_aligned(face[None]))


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="openvino is not installed")
def test_openvino_writes_no_telemetry_id_into_home(tmp_path) -> None:
    """Importing openvino starts its model converter's telemetry, which took a missing consent file as consent and
    wrote a client id and a run counter to ~/intel (a walkthrough, stop 49): a privacy tool's own process declines,
    and a run on OpenVINO leaves HOME as it was."""
    import os
    import subprocess
    from pathlib import Path

    home = tmp_path / "home"
    home.mkdir()
    code = ("from engine.models.backends import OpenVinoRunner\n"
            "from engine.models.weights import model_path\n"
            "OpenVinoRunner(model_path('yunet'), threads=1)\n"
            "import openvino_telemetry\n")  # the package that writes there, present
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "HOME": str(home), "PYTHONPATH": str(repo)}
    env.pop("CI", None)  # CI=true alone declines: not what is tested
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=repo, timeout=120)
    assert not list(home.rglob("*")), sorted(str(p.relative_to(home)) for p in home.rglob("*"))
