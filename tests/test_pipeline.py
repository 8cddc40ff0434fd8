"""The fail-closed rules, each by an injected fault around the real detector on real frames."""

from __future__ import annotations

import shutil
import time

import cv2
import numpy as np
import pytest

from engine.config import Settings
from engine.faces import Detections, Identity, box_iou
from engine.pipeline import Pipeline
from engine.stages.anonymize import SafeFrame
from engine.stages.detect import create_detector
from engine.stages.sink import FileSink
from evaluation.video import face_visibility

# A generous deadline: only the stall test is about deadlines; a busy CI machine must not fail the others.
SETTINGS = Settings(backend="onnxruntime", deadline_ms=5000)


@pytest.fixture(scope="module")
def frames(dev_clip) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(dev_clip))
    out = []
    while len(out) < 40:
        ok, frame = cap.read()
        if not ok:
            break
        out.append(frame)
    return out


@pytest.fixture(scope="module")
def detector():
    return create_detector(SETTINGS)


class Faulty:
    """Wraps the real detector; `fault(i)` says what goes wrong on call i."""

    name = "faulty"
    runner_name = "test"

    def __init__(self, real, fault) -> None:
        self.real, self.fault, self.calls = real, fault, 0

    def detect(self, frame, min_score):
        i, self.calls = self.calls, self.calls + 1
        what = self.fault(i)
        if what == "raise":
            raise RuntimeError("injected detector failure")
        if what == "stall":
            time.sleep(0.5)
        if what == "garbage":
            nan_box = np.full((1, 4), np.nan, np.float32)
            return Detections(nan_box, np.ones(1, np.float32), np.zeros((1, 5, 2), np.float32))
        if what == "miss":
            return Detections.empty()
        return self.real.detect(frame, min_score)


def _faces(detector, frame) -> np.ndarray:
    return detector.detect(frame, SETTINGS.confidence).xyxy


def _max_visibility(original: np.ndarray, output: np.ndarray, boxes: np.ndarray) -> float:
    grey_in = cv2.cvtColor(original, cv2.COLOR_BGR2GRAY)
    grey_out = cv2.cvtColor(output, cv2.COLOR_BGR2GRAY)
    worst = 0.0
    for x1, y1, x2, y2 in boxes.astype(int):
        x1, y1 = max(0, x1), max(0, y1)
        worst = max(worst, face_visibility(grey_in[y1:y2, x1:x2], grey_out[y1:y2, x1:x2]))
    return worst


def _run(pipeline: Pipeline, frames: list[np.ndarray]):
    return [pipeline.process(f.copy(), i, 1 / 30) for i, f in enumerate(frames)]


def test_face_is_anonymized_in_the_very_first_frame(frames, detector):
    """Live, a stream's first frame goes out whole (a weak face starts a track only on its second sighting: a review,
    stop 44); its detections are those first sightings, and from the next frame every face is hidden by its box."""
    pipeline = Pipeline(SETTINGS, detector=detector)
    safe, report = pipeline.process(frames[0].copy(), 0, 1 / 30)
    assert report.whole_frame == "first-frame" and safe.whole_frame
    boxes = _faces(detector, frames[0])
    assert len(boxes) >= 2, "the dev clip's first frame shows two faces"
    assert _max_visibility(frames[0], safe.image, boxes) < 0.2
    safe, report = pipeline.process(frames[1].copy(), 1, 1 / 30)
    assert report.whole_frame is None and len(report.faces) >= 2
    assert _max_visibility(frames[1], safe.image, _faces(detector, frames[1])) < 0.2


@pytest.mark.parametrize("fault", ["raise", "stall", "garbage"])
def test_detector_fault_anonymizes_the_whole_frame_and_engine_goes_on(frames, detector, fault):
    settings = SETTINGS.updated({"deadline_ms": 150})
    bad_calls = (3,) if fault == "stall" else (3, 4)  # a stall blocks the calls after it by itself
    pipeline = Pipeline(settings, detector=Faulty(detector, lambda i: fault if i in bad_calls else None))
    results = _run(pipeline, frames[:12])
    assert results[0][1].whole_frame == "first-frame"  # live: whole before any fault (Pipeline.process)
    hit = [r for _, r in results[1:] if r.whole_frame]
    assert hit, "a faulty frame must be anonymized whole"
    assert all(r.whole_frame.startswith("detector-") for r in hit)
    for safe, report in results:
        if report.whole_frame:
            assert safe.whole_frame
            original = frames[report.index]
            h, w = original.shape[:2]
            assert _max_visibility(original, safe.image, np.array([[0, 0, w, h]], np.float32)) < 0.05
    time.sleep(0.6)  # a stalled call finishes in the background; the next frame is detected again
    safe, report = pipeline.process(frames[12].copy(), 12, 1 / 30)
    assert report.whole_frame is None, "the engine recovers once the detector does"
    assert sum(pipeline.faults.values()) == len(hit)


def test_missed_detections_stay_anonymized_at_the_predicted_box(frames, detector):
    """The detector drops every face for 8 frames (0.27 s < hold): the faces stay blurred."""
    pipeline = Pipeline(SETTINGS, detector=Faulty(detector, lambda i: "miss" if 10 <= i < 18 else None))
    results = _run(pipeline, frames[:18])
    tracked = _faces(detector, frames[9])  # the faces known when the misses start (a new one could not be)
    for i in range(10, 18):
        truth = _faces(detector, frames[i])
        truth = truth[[any(box_iou(box, known) > 0.3 for known in tracked) for box in truth]]
        assert len(truth)
        assert _max_visibility(frames[i], results[i][0].image, truth) < 0.3, f"frame {i} leaked a face"
        assert any(f.lost_frames > 0 for f in results[i][1].faces)


def test_lost_track_released_after_hold(frames, detector):
    settings = SETTINGS.updated({"hold_seconds": 0.2})
    pipeline = Pipeline(settings, detector=Faulty(detector, lambda i: "miss" if i >= 5 else None))
    results = _run(pipeline, frames[:16])
    assert results[6][1].faces, "held just after the miss"
    assert not results[15][1].faces, "gone once the hold (0.2 s = 6 frames) has passed"


def test_panic_blurs_every_frame(frames, detector):
    pipeline = Pipeline(SETTINGS.updated({"panic": True}), detector=detector)
    for safe, report in _run(pipeline, frames[:3]):
        assert report.whole_frame == "panic" and safe.whole_frame


def test_identifier_failure_never_unblurs(frames, detector):
    class Broken:
        def update(self, frame, tracks, settings):
            for t in tracks:
                t.identity = Identity(visible=True)
            raise RuntimeError("injected identifier failure")

    pipeline = Pipeline(SETTINGS, detector=detector, identifier=Broken())
    safe, _report = pipeline.process(frames[0].copy(), 0, 1 / 30)
    assert _max_visibility(frames[0], safe.image, _faces(detector, frames[0])) < 0.2
    assert pipeline.faults["identifier-error"] == 1


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="the file sink needs ffmpeg on PATH (.ci/run installs it)")
def test_sinks_refuse_frames_that_skipped_the_anonymizer(tmp_path, frames):
    with pytest.raises(TypeError):
        SafeFrame(frames[0], 0, False)
    sink = FileSink(tmp_path / "x.mp4", 640, 360, 30)
    with pytest.raises(TypeError):
        sink.write(frames[0])
    sink.close()


@pytest.mark.parametrize("mode", ["blur", "mosaic", "fill"])
def test_default_strength_leaves_no_visible_face(frames, detector, mode):
    # Several frames: how much of a face survives a mosaic depends on where the block edges fall on it.
    for i in range(0, len(frames), 5):
        pipeline = Pipeline(SETTINGS.updated({"mode": mode}), detector=detector)
        safe, _ = pipeline.process(frames[i].copy(), i, 1 / 30)
        assert _max_visibility(frames[i], safe.image, _faces(detector, frames[i])) < 0.25, f"frame {i}"


def test_a_failing_sink_or_setting_never_stops_the_stream(dev_clip, detector, monkeypatch):
    """A virtual camera that vanishes mid-write, or a setting whose detector cannot load: the engine goes on."""
    from engine.runner import Engine
    from engine.stages.source import VideoSource

    class Vanishing:
        name = "vcam"

        def write(self, frame):
            raise RuntimeError("device gone")

        def close(self):
            pass

    class Counting:
        name = "file"
        frames = 0

        def write(self, frame):
            assert isinstance(frame, SafeFrame)
            self.frames += 1

        def close(self):
            pass

    counting = Counting()
    engine = Engine(SETTINGS, VideoSource(str(dev_clip)), [Vanishing(), counting],
                    pipeline=Pipeline(SETTINGS, detector=detector))

    def broken(settings):
        raise RuntimeError("this backend cannot load here")

    monkeypatch.setattr("engine.pipeline.create_detector", broken)
    engine.update_settings({"detector": "centerface"})
    frames = engine.run_file()
    left = [s.name for s in engine.sinks]
    engine.close()
    assert left == ["file"], "the failed sink was closed, the healthy one kept"
    assert counting.frames == frames == 275
    assert engine.settings.detector == "yunet", "the unusable setting was rolled back"
    assert engine.pipeline.faults["settings-error"] == 1


def test_file_mode_detects_ahead_and_still_gives_each_frame_its_own_faces(dev_clip, frames, detector):
    """File mode detects frame n+1 while frame n is tracked and anonymized: no frame may get another's faces
    or lose its detection (a whole-frame fallback would hide that from the leak score)."""
    from engine.runner import Engine
    from engine.stages.source import VideoSource

    class Recording(Pipeline):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.reports = []

        def process(self, frame, index, dt):
            safe, report = super().process(frame, index, dt)
            self.reports.append(report)
            return safe, report

    class Discard:
        name = "file"

        def write(self, frame):
            pass

        def close(self):
            pass

    pipeline = Recording(SETTINGS, detector=detector)
    engine = Engine(SETTINGS, VideoSource(str(dev_clip)), [Discard()], pipeline=pipeline)
    engine.run_file()
    engine.close()
    assert not pipeline.faults and not any(r.whole_frame for r in pipeline.reports)
    for i, frame in enumerate(frames):
        found = [f.xyxy for f in pipeline.reports[i].faces if f.lost_frames == 0]
        for box in _faces(detector, frame):
            assert any(box_iou(box, f) > 0.5 for f in found), f"frame {i}: a face it shows is not tracked there"
