"""Live mode's speed measures keep the fail-closed rules: detection started on a frame's arrival is the detection
of that frame, a frame dropped after its detection started costs no blurred frame, and thinning the tile pass
out while behind still finds the faces the main pass finds. Real model, real frames (the dev clip at 1080p).
"""

from __future__ import annotations

import threading
import time

import cv2
import numpy as np
import pytest

from engine import pipeline as pipeline_module
from engine.config import Settings
from engine.models.backends import OpenVinoRunner
from engine.pipeline import Pipeline
from engine.runner import SHED_AFTER, Engine
from engine.stages.detectors.yunet import TILE_CYCLE
from engine.stages.source import VideoSource
from tests.conftest import need_data
from tests.test_recognition import CLIP

SETTINGS = Settings(deadline_ms=60_000)  # a loaded test machine must not turn a slow frame into a blurred one


@pytest.fixture(scope="module")
def frames_1080p() -> list[np.ndarray]:
    need_data(CLIP)
    capture = cv2.VideoCapture(str(CLIP))
    frames = []
    for _ in range(100):
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(cv2.resize(frame, (1920, 1080), interpolation=cv2.INTER_LINEAR))
    return frames


class Counting:
    """The real detector, counting which frames it was asked to detect."""

    def __init__(self, detector) -> None:
        self.inner, self.seen = detector, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def detect(self, frame, min_score):
        self.seen.append(id(frame))
        return self.inner.detect(frame, min_score)


@pytest.fixture
def mid_stream(monkeypatch) -> None:
    """Frames taken as mid-stream ones: a stream's first frame goes out whole (pipeline.FRESH_PICTURE_WHOLE, tested
    in tests/test_pipeline.py), which these tests of the detection's timing are not about."""
    monkeypatch.setattr(pipeline_module, "FRESH_PICTURE_WHOLE", 0)


def test_a_frame_detected_on_arrival_is_detected_once(frames_1080p, mid_stream) -> None:
    pipeline = Pipeline(SETTINGS)
    counting = Counting(pipeline.detector)
    pipeline.detector = counting
    frame = frames_1080p[0].copy()
    assert pipeline.detect_on_arrival(frame)
    _, report = pipeline.process(frame, 0, 1 / 30)
    assert counting.seen == [id(frame)], "the frame loop must use the detection started on arrival"
    assert report.whole_frame is None and report.faces
    pipeline.close()


def test_a_frame_dropped_after_its_detection_started_costs_no_blurred_frame(frames_1080p, mid_stream) -> None:
    pipeline = Pipeline(SETTINGS)
    dropped, taken = frames_1080p[10].copy(), frames_1080p[11].copy()
    assert pipeline.detect_on_arrival(dropped)
    assert not pipeline.detect_on_arrival(taken), "one detection at a time: the detector is busy"
    _, report = pipeline.process(taken, 0, 1 / 30)  # the loop took the newer frame; the older one was dropped
    assert report.whole_frame is None, report.whole_frame
    assert report.faces and all(not f.visible for f in report.faces)
    pipeline.close()


def test_shedding_thins_the_tile_pass_and_keeps_the_main_pass(frames_1080p) -> None:
    pipeline = Pipeline(SETTINGS)
    detector = pipeline.detector
    calls = []
    real = detector._tile_pass
    detector._tile_pass = lambda *a: calls.append(1) or real(*a)
    detector.tile_every = 2
    found = [len(detector.detect(f, 0.5)) for f in frames_1080p[:8]]
    assert len(calls) == 4, "every other frame gets the tile pass"
    detector.tile_every = 1
    again = [len(detector.detect(f, 0.5)) for f in frames_1080p[:8]]
    assert len(calls) == 12
    assert all(a >= 1 for a in found) and sum(found) >= sum(again) - 4  # the main pass's faces are all kept
    pipeline.close()


def test_the_live_loop_sheds_only_while_behind() -> None:
    """Shedding starts at a dropped input frame or a frame slower than SHED_AFTER periods, and ends
    SHED_HOLD_S after the last one."""
    need_data(CLIP)
    engine = Engine(SETTINGS, VideoSource(str(CLIP)))
    detector = engine.pipeline.detector
    try:
        engine._shed_load(time.monotonic())
        assert detector.tile_every == 1, "on time, nothing dropped: the full tile pass"
        engine.stats.dropped += 1
        engine._shed_load(time.monotonic())
        assert detector.tile_every == 2
        engine._shed_until = time.monotonic() - 0.01  # SHED_HOLD_S later, nothing dropped since
        engine._shed_load(time.monotonic())
        assert detector.tile_every == 1
        engine._shed_load(time.monotonic() - (SHED_AFTER + 0.5) / engine.source.info.fps)  # one slow frame
        assert detector.tile_every == 2
        # Tiles now come back after twice as many frames: a weak face waits that long for its second sighting.
        assert engine.pipeline.tracker.repeat_max_gap > 2 * TILE_CYCLE
    finally:
        engine.close()


def test_no_shedding_when_a_tile_only_face_would_outlive_its_hold() -> None:
    """With a short hold, a face only a tile sees would lose its track before a thinned-out tile came back
    (and show until then): the full tile pass stays, however far behind."""
    need_data(CLIP)
    engine = Engine(Settings(deadline_ms=60_000, hold_seconds=0.3), VideoSource(str(CLIP)))
    detector = engine.pipeline.detector
    try:
        engine.stats.dropped += 1
        engine._shed_load(time.monotonic())
        assert detector.tile_every == 1
        assert engine.pipeline.tracker.repeat_max_gap > TILE_CYCLE
    finally:
        engine.close()


@pytest.mark.parametrize("moment", ["taken", "assigned"])
def test_a_frame_is_anonymized_with_its_own_detection_when_the_next_one_starts(frames_1080p, moment) -> None:
    """The source's thread starts the next frame's detection while the frame loop takes this frame's (the
    normal case when keeping up): this frame must still get its own boxes, not the next frame's. The next frame
    arrives right after this frame's detection is taken, or right after a finished detection is made the
    pending one (before: the loop then read the next frame's future back from `_pending`)."""
    this, following = frames_1080p[0].copy(), frames_1080p[60].copy()

    class NextArrives(Pipeline):
        """The next frame arrives at the moment the test picks."""
        armed = False

        @property
        def _pending(self):
            return self.__dict__.get("_pending_future")

        @_pending.setter
        def _pending(self, future):
            self.__dict__["_pending_future"] = future
            if self.armed and moment == "assigned" and future is not None and future.done():
                self.next_arrives()

        def _take_early(self, frame):
            future = super()._take_early(frame)
            if self.armed and moment == "taken":
                self.next_arrives()
            return future

        def next_arrives(self) -> None:
            self.armed = False
            assert self.detect_on_arrival(following), "the detector was idle: the next frame's detection starts"

    pipeline = NextArrives(SETTINGS)
    own = pipeline.detector.detect(this, SETTINGS.low_confidence)
    assert pipeline.detect_on_arrival(this)
    pipeline._pending.result(timeout=60)  # done before the frame loop takes it
    pipeline.armed = True
    detections, fault = pipeline._detect(this, None)
    assert moment == "assigned" or not pipeline.armed, "the next frame never arrived"
    assert fault == "" and detections is not None
    assert len(detections) == len(own) and np.allclose(np.sort(detections.xyxy, axis=0),
                                                       np.sort(own.xyxy, axis=0), atol=1e-3), \
        "the frame got another frame's boxes"
    pipeline.close()


def test_a_frame_queued_behind_the_next_ones_detection_leaves_it_to_that_frame(frames_1080p, mid_stream) -> None:
    """The loop took frame N (no early detection); N+1 arrived and its detection started: N queues behind it,
    and N+1 then takes the detection already made for it (two detections, not three)."""
    pipeline = Pipeline(SETTINGS)
    counting = Counting(pipeline.detector)
    pipeline.detector = counting
    taken, arrived = frames_1080p[20].copy(), frames_1080p[21].copy()
    assert pipeline.detect_on_arrival(arrived)
    _, first = pipeline.process(taken, 0, 1 / 30)
    _, second = pipeline.process(arrived, 1, 1 / 30)
    assert first.whole_frame is None and second.whole_frame is None
    assert counting.seen == [id(arrived), id(taken)], "the next frame was detected twice"
    pipeline.close()


class Bursty:
    """The dev clip delivered like a network stream: three frames at once, then a gap of five periods."""

    def __init__(self, kind: str, frames: int = 45) -> None:
        self.inner, self.kind, self.left, self.n = VideoSource(str(CLIP)), kind, frames, 0
        self.spec, self.info, self.loop = self.inner.spec, self.inner.info, False

    def read(self):
        if self.left <= 0:
            return None
        self.left -= 1
        self.n += 1
        if self.n % 3 == 1:
            time.sleep(5 / 30)
        return self.inner.read()

    def reopen(self, attempts: int = 1, wait: float = 0.5) -> bool:
        return False

    def close(self) -> None:
        self.inner.close()


def _dropped_in_bursts(kind: str) -> int:
    source = Bursty(kind)
    engine = Engine(Settings(deadline_ms=60_000), source)
    runner = threading.Thread(target=engine.run_live, kwargs={"pace_files": False}, daemon=True)
    runner.start()
    deadline = time.monotonic() + 60
    while source.left > 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # the last burst through the loop
    engine.stop_event.set()
    runner.join(timeout=10)
    engine.close()
    return engine.stats.dropped


def test_a_network_stream_bursts_wait_instead_of_being_dropped() -> None:
    """Frames that arrive together from a network stream wait in the mailbox (a few slots); a camera keeps one,
    the newest. Same bursts, same engine: the stream loses fewer frames."""
    need_data(CLIP)
    camera, stream = _dropped_in_bursts("camera"), _dropped_in_bursts("stream")
    assert camera > 0, "the bursts never overran one slot: the test proves nothing"
    assert stream < camera


class _Load:
    """A machine as busy as the test says (engine/cpu_load.py's interface)."""

    def __init__(self, busy: float, cores: int) -> None:
        self.busy, self.cores = busy, cores

    def sample(self) -> float:
        return self.busy


def test_the_cpu_load_counts_this_process_busy() -> None:
    """Half a second of one core's work reads as at least a large part of one core of the usable ones."""
    from engine.cpu_load import CpuLoad

    load = CpuLoad()
    end = time.process_time() + 0.5
    while time.process_time() < end:
        pass
    share = load.sample()
    assert 0.4 / load.cores <= share <= 1.0, share


def test_live_mode_spends_spare_time_on_more_tiles_and_gives_it_back(frames_1080p) -> None:
    """With time to spare a 1080p source gets more tiles a frame, down to all of them every frame as in file mode,
    as long as the tiles a step adds, at the detector's measured time a tile, fit the latency budget; past the
    budget it gets fewer, and behind it is back to one tile in turn at once. Each step waits for frames of its own.
    No tile pass (a small frame): nothing changes."""
    from dataclasses import replace

    from engine.runner import HEADROOM_HOLD_S, HEADROOM_LATENCY_S, TILE_CYCLES
    from engine.stages.detectors.yunet import TILE_BUDGET, tile_grid, tile_max_face

    engine = Engine(SETTINGS, VideoSource(str(CLIP)))
    engine.cpu_load = _Load(busy=0.1, cores=2)  # an idle machine's: the busy one comes last
    detector = engine.pipeline.detector
    try:
        def after(latency_s: float, now: float, behind: bool = False) -> int:
            engine.stats.latencies_ms.extend([1000 * latency_s] * 40)
            engine._spend_headroom(detector, now, behind)
            return detector.tile_cycle

        now = time.monotonic() + 10 * HEADROOM_HOLD_S
        detector.detect(frames_1080p[0], 0.5)  # the real tile pass's time a tile, on this machine
        assert detector.tile_seconds is not None and detector.tile_seconds > 0
        detector.tile_seconds = 0.002  # a fast machine's (the price of a step, below)
        assert after(0.005, now) == TILE_CYCLE, "360p: no tile pass, nothing to spend the time on"
        assert engine.telemetry()["tiles"] is None
        engine.source.info = replace(engine.source.info, width=1920, height=1080, fps=30.0)
        assert engine.telemetry()["tiles"] == {"a_frame": 1, "of": 6, "every": 1}, "what `engine status` says"
        cycles = [after(0.005, now + k * HEADROOM_HOLD_S) for k in range(len(TILE_CYCLES))]
        assert cycles == [*TILE_CYCLES[1:], 1], cycles
        assert engine.telemetry()["tiles"]["a_frame"] == 6
        assert after(0.005, now + 0.1 + (len(TILE_CYCLES) - 1) * HEADROOM_HOLD_S) == 1, "a step waits its hold"
        assert after(HEADROOM_LATENCY_S * 1.2, now + 10 * HEADROOM_HOLD_S) == TILE_CYCLES[-2], "over budget: fewer"
        assert after(0.005, now + 10.1 * HEADROOM_HOLD_S, behind=True) == TILE_CYCLE, "behind: back at once"
        # Time to spare, but not for the tiles a step adds: 3 more tiles at 8 ms on 12 ms would pass the budget.
        detector.tile_cycle, detector.tile_seconds = TILE_CYCLES[-2], 0.008
        assert after(0.012, now + 20 * HEADROOM_HOLD_S) == TILE_CYCLES[-2]
        # Time to spare, but the cores are busy: one more tile a frame at 4 ms on 2 cores at 30 fps is 12 % of them
        # (at 2 CPU ms a wall ms), which 62 % busy has no room for; 50 % busy has.
        detector.tile_cycle, detector.tile_seconds = TILE_CYCLE, 0.004
        engine.cpu_load.busy = 0.62
        assert after(0.005, now + 30 * HEADROOM_HOLD_S) == TILE_CYCLE, "busy cores: no more tiles"
        engine.cpu_load.busy = 0.5
        assert after(0.005, now + 40 * HEADROOM_HOLD_S) == TILE_CYCLES[1]
        # At cycle 1 the real detector searches every tile of a real 1080p frame in one frame.
        detector.tile_cycle = 1
        seen = []
        search = detector._one_tile
        detector._one_tile = lambda f, tile, *rest: (seen.append(tile), search(f, tile, *rest))[1]
        detector.detect(frames_1080p[0], 0.5)
        scale = 1280 / 1920
        assert sorted(seen) == sorted(tile_grid(1920, 1080, TILE_BUDGET * scale * scale, tile_max_face(scale)))
        assert detector.tiles_per_frame(1920, 1080, 1) == len(seen) and detector.tiles_per_frame(640, 360, 1) == 0
    finally:
        engine.close()


def test_tiles_searched_alongside_the_main_pass_find_the_same_faces(frames_1080p) -> None:
    """Live on OpenVINO, a frame's tiles are searched on a thread of their own while the main pass runs: over a whole
    tile cycle, the same boxes as the main pass then the tiles, and the tiles' search on another thread."""
    pipeline = Pipeline(SETTINGS)
    detector = pipeline.detector
    try:
        if not isinstance(detector.runner, OpenVinoRunner):
            pytest.skip(f"the live detector runs on {detector.runner.name}, not OpenVINO")
        assert detector.tiles_alongside, "live on OpenVINO: tiles alongside"
        detector.runner.background_compiles = False  # every shape's own model from its third call, in both runs
        frames = frames_1080p[20:20 + TILE_CYCLE]
        for frame in frames * 3:
            detector.detect(frame, 0.3)
        searched_on = []
        search = detector._one_tile
        detector._one_tile = lambda *a: (searched_on.append(threading.current_thread().name), search(*a))[1]

        def cycle(alongside: bool) -> list:
            detector.tiles_alongside, detector._tile_turn = alongside, 0
            return [detector.detect(frame, 0.3) for frame in frames]

        one_after_the_other, beside = cycle(False), cycle(True)
        half = len(searched_on) // 2
        assert half >= TILE_CYCLE and searched_on[:half] == [threading.current_thread().name] * half, searched_on
        assert all(name.startswith("yunet-tiles") for name in searched_on[half:]), searched_on
        assert sum(len(d) for d in beside) >= TILE_CYCLE, "faces of the dev clip found"
        for a, b in zip(one_after_the_other, beside, strict=True):
            np.testing.assert_allclose(a.xyxy, b.xyxy, atol=1e-3)
            np.testing.assert_allclose(a.score, b.score, atol=1e-5)
    finally:
        pipeline.close()


def test_file_mode_searches_its_tiles_after_the_main_pass(frames_1080p) -> None:
    """File mode stays deterministic: its tiles in the detecting thread, after the main pass (and its mirror); live
    mode on the same OpenVINO detector searches them on their own thread; a closed pipeline's detector searches them
    in the caller's thread again."""
    try:
        pipeline = Pipeline(Settings(backend="openvino", deadline_ms=60_000))
    except Exception as exc:  # OpenVINO absent or failing here
        pytest.skip(f"OpenVINO does not load here: {exc}")
    detector = pipeline.detector
    searched_on = []
    search = detector._one_tile
    detector._one_tile = lambda *a: (searched_on.append(threading.current_thread().name), search(*a))[1]
    frame = frames_1080p[30]
    try:
        pipeline.offline = True
        assert pipeline.detector is detector and not detector.tiles_alongside
        detector.detect(frame, 0.5)
        assert searched_on and set(searched_on) == {threading.current_thread().name}, searched_on
        pipeline.offline = False
        assert detector.tiles_alongside
        searched_on.clear()
        detector.detect(frame, 0.5)
        assert searched_on and all(name.startswith("yunet-tiles") for name in searched_on), searched_on
    finally:
        pipeline.close()
    searched_on.clear()
    detector.detect(frame, 0.5)
    assert searched_on and set(searched_on) == {threading.current_thread().name}, "closed: no thread of its own"
