"""File mode's two-frames-at-once detection (engine/stages/detectors/parallel.py): the same detections as one
frame at a time, in order, on real crowds and the dev clip; a frame that fails fails alone; closing never hangs."""

from __future__ import annotations

import contextlib
import json
import time
from concurrent.futures import CancelledError

import cv2
import numpy as np
import pytest

from engine.config import Settings
from engine.models.backends import OnnxRuntimeRunner
from engine.models.weights import model_path
from engine.stages.detect import create_detector
from engine.stages.detectors.parallel import Closed


def _file_mode_detector():
    """YuNet as file mode sets it up (engine/pipeline.py, `_for_video`): every tile each frame, second look on, and
    on onnxruntime (`auto` puts only the live detector on OpenVINO)."""
    detector = create_detector(Settings(detect_width=1280, backend="onnxruntime"))
    detector.tiles, detector.tile_cycle, detector.second_look = True, 1, True
    return detector


@pytest.fixture(scope="module")
def frames(data_dir, dev_clip):
    """1080p frames with real faces: two crowds moved a little from frame to frame (so the second look's memory
    of places it looked at in vain carries over), then the dev clip upscaled."""
    root = data_dir / "detection_widerface_val"
    names = json.loads((root / "wider_face_val_gt_subset.json").read_text())
    out = []
    for name in [n for n in names if "Parade" in n or "Meeting_11_26" in n][:2]:
        photo = cv2.resize(cv2.imread(str(root / "images" / name)), (1920, 1080))
        out += [np.ascontiguousarray(np.roll(photo, 3 * k, axis=1)) for k in range(3)]
    capture = cv2.VideoCapture(str(dev_clip))
    for _ in range(3):
        ok, frame = capture.read()
        assert ok
        out.append(cv2.resize(frame, (1920, 1080)))
    return out


def _same(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in ((a.xyxy, b.xyxy), (a.score, b.score), (a.landmarks, b.landmarks)))


def test_onnxruntimes_outputs_do_not_depend_on_its_thread_count(frames):
    """The twins run with one thread, the pipeline's detector with two: bit for bit the same network outputs."""
    one, two = (OnnxRuntimeRunner(model_path("yunet"), threads) for threads in (1, 2))
    for frame in frames[::3]:
        batch = np.ascontiguousarray(cv2.resize(frame, (1280, 736)).transpose(2, 0, 1)[None], dtype=np.float32)
        assert all(np.array_equal(x, y) for x, y in zip(one.run(batch), two.run(batch), strict=True))


def test_two_frames_at_once_give_the_detections_of_one_at_a_time(frames):
    one_at_a_time = _file_mode_detector()
    expected = [one_at_a_time.detect(frame, 0.2) for frame in frames]
    assert sum(len(found) for found in expected) > 100  # crowds: tiles and second looks had work to do
    parallel = _file_mode_detector().in_parallel()
    assert parallel is not None  # onnxruntime on 2 or more cores
    try:
        futures = [parallel.submit(frame, 0.2) for frame in frames]  # all at once: each waits for its turn
        got = [future.result(timeout=120) for future in futures]
    finally:
        parallel.close()
    assert all(_same(a, b) for a, b in zip(got, expected, strict=True))


def test_a_frame_that_fails_fails_alone_and_in_its_turn(frames):
    broken = [*frames[:2], np.zeros((0, 0, 3), np.uint8), *frames[2:4]]  # an empty picture: detection raises
    one_at_a_time = _file_mode_detector()
    expected = []
    for frame in broken:
        try:
            expected.append(one_at_a_time.detect(frame, 0.2))
        except Exception as exc:  # the same failure is expected from the parallel detector
            expected.append(type(exc))
    assert expected[2] is not None and isinstance(expected[2], type)
    parallel = _file_mode_detector().in_parallel()
    try:
        futures = [parallel.submit(frame, 0.2) for frame in broken]
        with pytest.raises(expected[2]):
            futures[2].result(timeout=120)
        for k in (0, 1, 3, 4):
            assert _same(futures[k].result(timeout=120), expected[k])
    finally:
        parallel.close()


def test_closing_with_frames_in_flight_never_hangs(frames):
    parallel = _file_mode_detector().in_parallel()
    futures = [parallel.submit(frame, 0.2) for frame in frames[:5]]
    parallel.close()
    until = time.monotonic() + 60
    while not all(future.done() for future in futures) and time.monotonic() < until:
        time.sleep(0.05)
    assert all(future.done() for future in futures)
    for future in futures:  # each finished, was cancelled, or stopped waiting for its turn
        if not future.cancelled():
            with contextlib.suppress(Closed, CancelledError):
                future.result()


def test_a_frame_cancelled_before_it_ran_does_not_hold_up_the_next(frames):
    parallel = _file_mode_detector().in_parallel()
    try:
        futures = [parallel.submit(frame, 0.2) for frame in frames[:5]]
        assert futures[2].cancel()  # not started: two crowd frames take the two workers for ~0.1 s each
        for k in (0, 1, 3, 4):  # 3 and 4 waited for 2's turn, which never comes without the skip
            assert isinstance(futures[k].result(timeout=60), type(futures[0].result()))
    finally:
        parallel.close()


def test_a_detector_replaced_mid_file_still_detects_the_frames_it_was_given(frames):
    """`configure` with another backend builds a new detector; the frames already started on the old one keep
    their detections instead of going out blurred whole."""
    from dataclasses import replace

    from engine.pipeline import Pipeline

    settings = Settings(detect_width=1280)
    pipeline = Pipeline(settings)
    pipeline.offline = True
    try:
        todo = [frame.copy() for frame in frames[6:9] * 2]  # distinct frames: a frame finds its detection by identity
        ahead: list = []
        for k in range(len(todo)):
            while len(todo) > k + len(ahead) and len(ahead) < pipeline.frames_ahead:
                ahead.append(todo[k + len(ahead)])
                pipeline.prefetch(ahead[-1])
            if k == 1:  # two or three frames in flight on the old detector
                pipeline.configure(replace(settings, backend="onnxruntime"))
            pipeline.process(ahead.pop(0), k, 1 / 30)
        assert not pipeline.faults, pipeline.faults
    finally:
        pipeline.close()
