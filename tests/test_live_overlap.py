"""Live mode, behind on a bursty stream: the frame loop starts the next waiting frame's detection as soon as its
own is done, so detection overlaps tracking and anonymizing (bench_stream.py 1080p --trace). Fail-closed rules
unchanged: each frame is anonymized with its own detection, a frame whose detection runs is not the one dropped,
and a stalled detector still blurs whole frames. Real model, real frames (the dev clip at 1080p).
"""

from __future__ import annotations

import queue
import threading
import time

import numpy as np

from engine.config import Settings
from engine.pipeline import Pipeline
from engine.runner import Engine, _drop_oldest
from engine.stages.source import VideoSource
from tests.conftest import need_data
from tests.test_live_speed import CLIP, Counting, frames_1080p  # noqa: F401  (a fixture)

SETTINGS = Settings(deadline_ms=60_000)  # a loaded test machine must not turn a slow frame into a blurred one


def _mailbox(*frames: np.ndarray) -> queue.Queue:
    mailbox: queue.Queue = queue.Queue(maxsize=3)
    for i, frame in enumerate(frames):
        mailbox.put_nowait((frame, time.monotonic(), i))
    return mailbox


def test_the_next_waiting_frame_is_detected_while_this_one_is_anonymized(frames_1080p) -> None:  # noqa: F811
    need_data(CLIP)
    engine = Engine(SETTINGS, VideoSource(str(CLIP)))
    counting = Counting(engine.pipeline.detector)
    engine.pipeline.detector = counting
    this, following = frames_1080p[0].copy(), frames_1080p[60].copy()
    own = counting.inner.detect(following.copy(), SETTINGS.low_confidence)
    mailbox = _mailbox(following)
    engine.pipeline.on_detected = lambda: engine._detect_next(mailbox)
    try:
        _, first = engine.pipeline.process(this, 0, 1 / 30)
        assert engine.pipeline.early_frame() is following, "the waiting frame's detection did not start"
        early = engine.pipeline._early[1].result(timeout=60)
        assert len(early) == len(own) and np.allclose(np.sort(early.xyxy, axis=0), np.sort(own.xyxy, axis=0),
                                                      atol=1e-3), "the waiting frame got another frame's boxes"
        taken = mailbox.get_nowait()[0]
        engine.pipeline.on_detected = None
        _, second = engine.pipeline.process(taken, 1, 1 / 30)
        assert counting.seen == [id(this), id(following)], "the waiting frame was detected twice, or not early"
        assert first.whole_frame == "first-frame"  # live: a stream's first frame goes out whole
        assert second.faces and all(not f.visible for f in second.faces)
    finally:
        engine.close()


def test_the_frame_whose_detection_runs_is_not_the_one_dropped(frames_1080p) -> None:  # noqa: F811
    early, b, c = (frames_1080p[i] for i in (0, 1, 2))
    mailbox = _mailbox(early, b, c)
    assert _drop_oldest(mailbox, keep=lambda: early)
    assert [item[0] is f for item, f in zip(mailbox.queue, (early, c), strict=True)] == [True, True]
    mailbox.put_nowait((frames_1080p[3], time.monotonic(), 3))  # room was made
    one = queue.Queue(maxsize=1)
    one.put_nowait((early, 0.0, 0))
    assert _drop_oldest(one, keep=lambda: early), "a one-slot mailbox (a camera) must still make room"
    assert one.empty()
    assert not _drop_oldest(one, keep=None)


def test_a_stalled_detector_still_blurs_whole_frames(frames_1080p) -> None:  # noqa: F811
    """The hook only starts a detection when the detector is idle: a stalled one is not given more, and the
    frames meanwhile are blurred whole, as before."""
    pipeline = Pipeline(Settings(deadline_ms=50))
    release = threading.Event()
    inner = pipeline.detector.detect
    pipeline.detector.detect = lambda frame, score: release.wait(30) and inner(frame, score)
    waiting = frames_1080p[1].copy()
    mailbox = _mailbox(waiting)
    started = []
    pipeline.on_detected = lambda: started.append(pipeline.detect_on_arrival(mailbox.queue[0][0]))
    try:
        _, report = pipeline.process(frames_1080p[0].copy(), 0, 1 / 30)
        assert report.whole_frame == "detector-deadline"
        assert started == [False] and pipeline.early_frame() is None
        _, report = pipeline.process(waiting, 1, 1 / 30)
        assert report.whole_frame == "detector-stalled"
    finally:
        release.set()
        pipeline.close()
