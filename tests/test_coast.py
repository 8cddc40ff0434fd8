"""Live mode far behind coasts every other frame (engine/pipeline.py, `coast_alternate`): a coasted frame is not
detected, its faces are the tracks' predicted boxes, and the one frame the runner then holds back hides a face
first found in the next frame in it too. Real model, the dev clip and its annotated faces.
"""

from __future__ import annotations

import json
import time

import cv2
import numpy as np
import pytest

from engine import runner
from engine.config import Settings
from engine.faces import Detections, FrameReport, Identity
from engine.pipeline import Pipeline
from engine.recognition.identify_facebank import STATE_KEY, FacebankIdentifier
from engine.recognition.recognize import create_embedder
from engine.runner import Engine
from engine.stages.anonymize import SafeFrame
from engine.stages.lookahead import Lookahead
from engine.stages.source import VideoSource
from engine.stages.track import FaceTracker
from evaluation.video import _score_face
from facebank.live import LiveGallery
from facebank.store import Facebank
from tests.conftest import PERFORMER_PHOTO

SETTINGS = Settings(backend="onnxruntime", deadline_ms=60_000)  # a loaded test machine: no frame blurred whole


@pytest.fixture(scope="module")
def clip_all(dev_clip, dev_gt) -> tuple[list[np.ndarray], dict[int, list[dict]]]:
    """The dev clip's frames and their annotated faces."""
    capture = cv2.VideoCapture(str(dev_clip))
    frames = []
    while (read := capture.read())[0]:
        frames.append(read[1])
    truth: dict[int, list[dict]] = {}
    for face in json.loads(dev_gt.read_text())["faces"]:
        truth.setdefault(face["frame"], []).append(face)
    return frames, truth


@pytest.fixture(scope="module")
def clip(clip_all) -> tuple[list[np.ndarray], dict[int, list[dict]]]:
    """The first 40 frames (no facebank: every annotated face must be hidden)."""
    frames, truth = clip_all
    return frames[:40], truth


def visible_faces(raw: np.ndarray, out: np.ndarray, faces: list[dict]) -> int:
    gray = lambda image: cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)  # noqa: E731
    return sum(bool(_score_face(gray(raw), gray(out), face)[0]) for face in faces)


def test_every_other_frame_is_coasted_and_its_faces_stay_hidden(clip) -> None:
    frames, truth = clip
    pipeline = Pipeline(SETTINGS)
    pipeline.coast_alternate = True
    coasted, leaked, hidden = [], 0, 0
    try:
        for index, frame in enumerate(frames[:16]):
            if index >= 2 and index % 2 == 0:  # to be coasted: a detection started for it on arrival would be wasted
                assert not pipeline.detect_on_arrival(frame.copy())
            safe, report = pipeline.process(frame.copy(), index, 1 / 30)
            coasted.append(report.coasted)
            # the first frame goes out whole, and the one after it is detected: its second sightings start tracks
            assert report.whole_frame == ("first-frame" if index == 0 else None)
            if report.coasted:
                assert report.faces and not any(f.visible for f in report.faces)
                leaked += visible_faces(frame, safe.image, truth.get(index, []))
                hidden += len(truth.get(index, []))
    finally:
        pipeline.close()
    assert coasted == [False] + [False, True] * 7 + [False]
    assert hidden >= 8 and leaked == 0, f"{leaked} of {hidden} annotated faces visible in coasted frames"


class _FailingCall:
    """The real detector, whose `fail`-th call (0-based) raises (`fault`) or finds nothing (a miss)."""

    def __init__(self, detector, fail: int, fault: bool = True) -> None:
        self.detector, self.fail, self.fault, self.calls = detector, fail, fault, 0

    def __getattr__(self, name: str):
        return getattr(self.detector, name)

    def detect(self, frame: np.ndarray, min_score: float) -> Detections:
        self.calls += 1
        if self.calls - 1 == self.fail:
            if self.fault:
                raise RuntimeError("injected detector fault")
            return Detections.empty()
        return self.detector.detect(frame, min_score)


def _faces_new_in_frame_21(clip) -> tuple[list[np.ndarray], list[dict]]:
    """Frames 20-23 of the dev clip with every face of frame 21 painted over in frame 20: they are new in 21."""
    frames, truth = clip
    faces = truth[21]
    masked = frames[20].copy()
    for face in faces:
        x1, y1, x2, y2 = (round(v) for v in face["box"])
        masked[max(0, y1 - 20):y2 + 20, max(0, x1 - 20):x2 + 20] = 128
    return [masked, frames[21], frames[22], frames[23]], faces


def _coast_through(frames: list[np.ndarray], held: int, fail: int | None = None,
                   stop_after: int | None = None) -> dict[int, tuple[SafeFrame, FrameReport]]:
    """The frames processed coasting every other one, through a look-ahead of `held` frames, then flushed (a stall,
    a stop); the detector's `fail`-th call faults. Every frame released, by index."""
    pipeline = Pipeline(SETTINGS)
    pipeline.process(frames[0].copy(), -1, 1 / 30)  # the stream's first frame (whole), as the frame before these
    if fail is not None:
        pipeline.detector = _FailingCall(pipeline.detector, fail)
    pipeline.coast_alternate = True
    lookahead = Lookahead(held)
    out = {}
    try:
        for index, frame in enumerate(frames[:stop_after]):
            safe, report = pipeline.process(frame.copy(), index, 1 / 30)
            for released, tag in lookahead.push(safe, report, pipeline.anonymizer, report):
                out[released.index] = (released, tag)
        for released, tag in lookahead.flush(pipeline.anonymizer, pipeline.waiting):
            out[released.index] = (released, tag)
    finally:
        pipeline.close()
    return out


def test_a_face_first_showing_in_a_coasted_frame_is_hidden_there_from_the_next_one(clip) -> None:
    """The face shows first in a coasted frame (no track yet: nothing hides it then); the next frame's detection
    starts its track, and the frame held back gets it hidden. Without a frame held it goes out whole."""
    frames, faces = _faces_new_in_frame_21(clip)
    safe, report = _coast_through(frames, held=1)[1]
    assert report.coasted and not report.faces, "frame 1 was coasted with no track to hide"
    assert report.backfilled >= 1 and not safe.whole_frame
    assert visible_faces(clip[0][21], safe.image, faces) == 0
    unheld, _ = _coast_through(frames, held=0)[1]  # no frame held for the next detection to reach: whole, as a
    assert unheld.whole_frame  # fail-safe (the runner always holds one while coasting); it went out with the face


def test_a_coasted_frame_no_detection_reaches_goes_out_whole(clip) -> None:
    """The coasted frame waits for the next detection's backfill. When that detection faults, or the frames held
    are flushed first (a stall, a stop), no detector ever looked at it: it goes out anonymized whole, not as the
    tracks predicted it (the new face was raw there: a review, stop 43)."""
    frames, faces = _faces_new_in_frame_21(clip)
    for case, kwargs in (("the next detection faults", {"fail": 1}), ("flushed before it", {"stop_after": 2})):
        out = _coast_through(frames, held=1, **kwargs)
        safe, report = out[1]
        assert report.coasted and safe.whole_frame, case
        assert report.whole_frame == "coasted-undetected", case
        assert visible_faces(clip[0][21], safe.image, faces) == 0, case
        assert not out[0][0].whole_frame, f"{case}: the detected frame before it is not touched"


def test_the_live_loop_coasts_only_while_far_behind(dev_clip, monkeypatch) -> None:
    """Behind for COAST_AFTER_S with the tiles thinned: coasting starts and one frame is held back; COAST_HOLD_S
    without falling behind: every frame is detected again and the look-ahead is the setting's (0)."""
    monkeypatch.setattr(runner, "COAST_AFTER_S", 0.05)
    monkeypatch.setattr(runner, "COAST_DROPS_WINDOW_S", 0.05)
    monkeypatch.setattr(runner, "COAST_HOLD_S", 0.2)
    engine = Engine(SETTINGS, VideoSource(str(dev_clip)))
    try:
        engine.stats.dropped += 1
        engine._shed_load(time.monotonic())
        assert engine.pipeline.detector.tile_every == 2 and not engine.pipeline.coast_alternate
        time.sleep(0.06)
        engine.stats.dropped += 1
        engine._shed_load(time.monotonic())
        assert engine.pipeline.coast_alternate and engine.lookahead.frames == 1
        time.sleep(0.1)
        engine._shed_load(time.monotonic())  # keeping up now, but not for COAST_HOLD_S yet
        assert engine.pipeline.coast_alternate
        time.sleep(0.15)
        engine._shed_load(time.monotonic())
        assert not engine.pipeline.coast_alternate and engine.lookahead.frames == 0
    finally:
        engine.close()


def test_slow_frames_that_drop_little_thin_the_tiles_but_never_coast(dev_clip, monkeypatch) -> None:
    """A fast CPU's occasional slow frame: the tiles are thinned, but every frame is still detected and none held
    back, until the thinned tiles still leave COAST_DROPPED_SHARE of the frames dropped over COAST_DROPS_WINDOW_S
    (drops older than that do not count)."""
    monkeypatch.setattr(runner, "COAST_AFTER_S", 0.4)  # behind that long: the drops below are out of the window
    monkeypatch.setattr(runner, "COAST_DROPS_WINDOW_S", 0.3)
    engine = Engine(SETTINGS, VideoSource(str(dev_clip)))
    try:
        fps = engine.source.info.fps
        monkeypatch.setattr(runner, "COAST_DROPPED_SHARE", 3.5 / (runner.COAST_DROPS_WINDOW_S * fps))
        needed = 4  # drops in the window that start coasting: 3 do not
        late = (runner.SHED_AFTER + 1) / fps  # arrival to output: over SHED_AFTER periods
        engine._shed_load(time.monotonic())
        engine.stats.dropped += needed  # behind from here, but these drops leave the window before COAST_AFTER_S
        for _ in range(12):  # 0.48 s behind with the tiles thinned, nothing dropped since
            engine._shed_load(time.monotonic() - late)
            time.sleep(0.04)
        assert engine.pipeline.detector.tile_every == 2
        assert not engine.pipeline.coast_alternate and engine.lookahead.frames == 0
        engine.stats.dropped += needed - 1
        engine._shed_load(time.monotonic() - late)
        assert not engine.pipeline.coast_alternate, "3 drops in the window: under the share"
        engine.stats.dropped += 1
        engine._shed_load(time.monotonic() - late)
        assert engine.pipeline.coast_alternate and engine.lookahead.frames == 1
    finally:
        engine.close()


# The office clip's man walking right behind the desks (bench/corpus office_backs_of_heads, frames 850-861): his
# detections, live, every frame. Coasting every other frame, the tracker sees him 40-50 px further each time.
WALKER = [(493.5, 62.4, 524.5, 108.4), (506.7, 64.4, 541.5, 112.0), (522.2, 72.3, 557.3, 117.5),
          (535.7, 78.7, 576.1, 121.0), (559.0, 76.0, 602.0, 127.0), (576.6, 76.7, 621.6, 122.9),
          (597.0, 78.0, 642.0, 122.0), (630.8, 72.0, 665.9, 114.3), (655.4, 61.8, 692.0, 113.0),
          (683.2, 60.2, 716.1, 107.5)]


def detections(*boxes: tuple[float, ...], score: float = 0.7) -> Detections:
    xyxy = np.array(boxes, np.float32).reshape(-1, 4)
    return Detections(xyxy, np.full(len(xyxy), score, np.float32), np.zeros((len(xyxy), 5, 2), np.float32))


def test_a_fast_face_keeps_its_track_across_coasted_frames() -> None:
    tracker = FaceTracker(confidence=0.5, low_confidence=0.1, hold_seconds=1.0)
    ids = set()
    for k, box in enumerate(WALKER):
        if k % 2:
            tracker.coast()
            continue
        tracks = tracker.update(detections(box), 1 / 30)
        ids |= {t.track_id for t in tracks if t.lost_frames == 0}
    assert len(ids) == 1, f"the walker's face took {len(ids)} tracks: its coasted frames had no track to hide it"


def test_a_shown_face_does_not_reach_further_across_coasted_frames() -> None:
    """The streamer's track (shown) keeps the usual reach: it must not take a face a whole face width away."""
    tracker = FaceTracker(confidence=0.5, low_confidence=0.1, hold_seconds=1.0)
    (streamer,) = tracker.update(detections((500, 60, 540, 110)), 1 / 30)
    streamer.identity = Identity(visible=True, name="me", reason=None)
    tracker.coast()
    tracker.update(detections((540, 60, 580, 110)), 1 / 30)  # 40 px on: someone else, or him; not taken as him
    assert streamer.lost_frames == 1
    assert [t.track_id for t in tracker.tracks if t.lost_frames == 0] != [streamer.track_id]


def test_the_streamer_stays_shown_in_coasted_frames_until_a_cut(clip_all, tmp_path) -> None:
    """The performer (enrolled from his photo) is shown in the coasted frames of his shot; frame 211, a cut to
    a crowd, is coasted, and a bystander stands where his face was: nobody is shown there, she is hidden."""
    frames, truth = clip_all
    bank = Facebank(tmp_path / "facebank.json")
    bank.add("Lin-Manuel Miranda", [PERFORMER_PHOTO])
    pipeline = Pipeline(SETTINGS, identifier=FacebankIdentifier(create_embedder(SETTINGS), LiveGallery(bank)))
    pipeline.coast_alternate = True
    lookahead = Lookahead(1)
    shown_coasted, out = [], {}
    try:
        # From frame 1: the first frame goes out whole and the next one is detected, so the odd frames are coasted
        for index, frame in enumerate(frames[:213]):
            if index == 0:
                continue
            safe, report = pipeline.process(frame.copy(), index, 1 / 29.97)
            if report.coasted and 150 <= index < 211:
                shown_coasted.append(any(f.visible for f in report.faces))
            for released, tag in lookahead.push(safe, report, pipeline.anonymizer, (index, report)):
                out[tag[0]] = (released, tag[1])
    finally:
        pipeline.close()
    assert np.mean(shown_coasted) >= 0.9, f"shown in {sum(shown_coasted)} of {len(shown_coasted)} coasted frames"
    safe, report = out[211]
    assert report.coasted and not any(f.visible for f in report.faces)
    assert visible_faces(frames[211], safe.image, truth[211]) == 0


def test_coasted_frames_do_not_age_a_shown_face(clip_all, tmp_path) -> None:
    """An id can only move onto another face where detections are associated, so a shown face is re-verified every
    `verify_every` *detected* frames. Counted in stream frames, coasting re-verified the streamer on every
    detected frame in live mode: the worker fell behind, each late result blurred him (52-68 % of his frames shown
    on the dev clip, live, against 80-87 %). His close-up shot (frames 82-210), every other frame coasted."""
    frames, _ = clip_all
    bank = Facebank(tmp_path / "facebank.json")
    bank.add("Lin-Manuel Miranda", [PERFORMER_PHOTO])
    identifier = FacebankIdentifier(create_embedder(SETTINGS), LiveGallery(bank))
    pipeline = Pipeline(SETTINGS, identifier=identifier)
    pipeline.coast_alternate = True
    detected = shown = 0
    try:
        for index, frame in enumerate(frames[82:211]):
            _, report = pipeline.process(frame.copy(), index, 1 / 29.97)
            if not report.coasted:
                detected += 1
                shown += any(f.visible for f in report.faces)
    finally:
        pipeline.close()
    assert shown >= 0.85 * detected, f"shown in {shown} of {detected} detected frames"
    every = identifier.policy.verify_every
    assert identifier.embedded_forced <= detected / every + 4, \
        f"{identifier.embedded_forced} re-verifications in {detected} detected frames (one every {every} expected)"


def test_the_first_coasted_frame_at_a_cut_is_hidden_whole(clip_all) -> None:
    """Coasting switches on just before the dev clip's cut at frame 211, so 211 is the first coasted frame: it is
    compared with the last detected frame like any other coasted frame, and hidden whole (the previous shot's
    boxes would have been drawn on the new shot's faces)."""
    frames, truth = clip_all
    pipeline = Pipeline(SETTINGS)
    try:
        for index in range(196, 211):
            pipeline.process(frames[index].copy(), index, 1 / 29.97)
        pipeline.coast_alternate = True
        safe, report = pipeline.process(frames[211].copy(), 211, 1 / 29.97)
    finally:
        pipeline.close()
    assert report.coasted and report.whole_frame == "scene-cut", report
    assert visible_faces(frames[211], safe.image, truth[211]) == 0


class Slowed:
    """The real detector, slowed down to a CPU that cannot keep up with the source."""

    def __init__(self, detector, seconds: float) -> None:
        self.inner, self.seconds = detector, seconds

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def detect(self, frame, min_score):
        time.sleep(self.seconds)
        return self.inner.detect(frame, min_score)


class Recorder:
    """A sink that keeps each frame sent at its place on the source's timeline (a file played live: the frames
    read), as a live recording is given it."""

    name = "recorder"

    def __init__(self) -> None:
        self.frames: dict[int, np.ndarray] = {}

    def write_live(self, frame: SafeFrame, position: int, source_index: int | None = None) -> None:
        assert isinstance(frame, SafeFrame)
        self.frames[position] = frame.image.copy()

    def write(self, frame: SafeFrame) -> None:
        raise AssertionError("write_live is the sink's way in")

    def close(self) -> None:
        pass


def test_a_live_engine_far_behind_coasts_and_hides_every_face(clip_all, dev_clip, monkeypatch) -> None:
    """The whole live loop on the dev clip at its rate, with a detector that takes ~2 frame periods: it falls
    behind and coasts every other frame; a coasted frame that cuts to another shot is hidden whole (nothing has
    seen that shot yet), no other frame is; every annotated face in what went out is hidden. Before the cut rule,
    2 faces of the new shot went out visible in 3 of 7 runs (a weak face's first sighting after the cut)."""
    frames, truth = clip_all
    monkeypatch.setattr(runner, "COAST_AFTER_S", 0.3)
    recorder = Recorder()
    engine = Engine(SETTINGS, VideoSource(str(dev_clip)), [recorder])
    engine.pipeline.detector = Slowed(engine.pipeline.detector, 0.05)
    whole, record = [], engine.stats.record

    def recorded(report: FrameReport, latency_ms: float) -> None:
        if report.whole_frame:
            whole.append(report.whole_frame)
        record(report, latency_ms)
    engine.stats.record = recorded
    engine.run_live(pace_files=True)
    telemetry = engine.telemetry()
    engine.close()
    assert telemetry["coasted_frames"] >= 40 and not telemetry["faults"], telemetry
    # the first frame; a coasted frame at each of the clip's 3 cuts (a fast pan may pass for one)
    assert whole[0] == "first-frame" and set(whole[1:]) <= {"scene-cut"} and len(whole) <= 7, whole
    assert len(recorder.frames) >= 150, "coasting, most frames go out"
    leaked = sum(visible_faces(frames[i], image, truth.get(i, [])) for i, image in recorder.frames.items())
    assert leaked == 0, f"{leaked} annotated faces visible in {len(recorder.frames)} frames sent"


def test_a_detector_fault_is_a_miss_to_the_identifier(clip_all, tmp_path) -> None:
    """A frame whose detection faults is blurred whole and its tracks go on lost; the identifier sees that loss as it
    sees a miss, so a shown face that comes back is checked again before it is shown on its old verdict (it came back
    shown with no check: a review, stop 43)."""
    frames = clip_all[0][82:104]
    bank = Facebank(tmp_path / "facebank.json")
    bank.add("Lin-Manuel Miranda", [PERFORMER_PHOTO])
    embedder = create_embedder(SETTINGS)

    def after_frame_20(fault: bool) -> list[tuple[int, bool]]:
        """(epoch, suspect) of each track the identifier follows, after frame 20's detection faulted or found none."""
        pipeline = Pipeline(SETTINGS, identifier=FacebankIdentifier(embedder, LiveGallery(bank)))
        pipeline.detector = _FailingCall(pipeline.detector, 20, fault=fault)
        try:
            for index, frame in enumerate(frames[:21]):
                pipeline.process(frame.copy(), index, 1 / 30)
            return [(t.extras[STATE_KEY].epoch, t.extras[STATE_KEY].suspect)
                    for t in pipeline.tracker.tracks if STATE_KEY in t.extras]
        finally:
            pipeline.close()

    after_miss, after_fault = after_frame_20(fault=False), after_frame_20(fault=True)
    assert after_miss and all(suspect for _, suspect in after_miss), "a miss marks the performer's track"
    assert after_fault == after_miss
