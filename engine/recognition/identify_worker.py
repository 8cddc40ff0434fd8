"""Live mode: face embeddings on a worker thread, so the frame loop never waits for the recognition network.

An embedding costs as much as detecting a whole 1080p frame (landmarks refined at four scales, the mirror
image added: 26 ms a face on 2 cores), and on the frame path every verification of the streamer made a slow
frame. Here the frame thread hands the worker a copy of the pixels around each face it schedules and goes
on; results come back on a later frame and are recorded there, by the frame thread only (the identifier's
state is never touched from two threads).

Fail closed, the identifier's rules unchanged:
- a face waiting for its first result is blurred (it has no embedding yet); a face that may have changed
  (lost, jumped, new look, overlapping, scene cut) is blurred until a result of a crop taken *after* that
  sign arrives: results from earlier crops are dropped (`TrackRecognition.epoch`);
- a visible face is re-verified early by as many frames as results recently took to come back (at least
  VERIFY_LEAD), so that its result is back before the face would go stale (`Policy.verify_every`); a worker
  that falls behind leaves it blurred, never visible on older evidence;
- a worker that fails raises on the next frame: the pipeline blurs every face and counts `identifier-error`;
  every track is recognised again from scratch on a fresh worker.
File mode stays synchronous (deterministic output).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from engine.recognition.identify_facebank import FacebankIdentifier, TrackRecognition, _Candidate

log = logging.getLogger(__name__)

VERIFY_LEAD = 2  # frames: the least lead; it grows with the frames results have recently taken to come back
# A shown face's re-check after a sign that another face may be under its id (lost and found again, a new look): the
# frame waits this long for its result instead of going out with the face blurred. The sign is mostly noise: the
# streamer's own 16 px look of one frame correlates under the 0.5 bar with the next in 1.2 % of his frame pairs (9
# real clips), and every one of them blurred him for the frame the result took to come back (the dev clip live: 3 of
# his 149 face-frames); waited for, none was (22-24 ms each, Zen 4). Bounded: a result not back by then is recorded on
# a later frame, as before; and a worker whose recent batches took longer (a slow CPU) is not waited for at all.
RECHECK_WAIT_S = 0.030
WAIT_PAUSE_FRAMES = 30  # after a wait that ran out, none for this many frames: the worker is slower than it seemed
CROP_PAD = 1.5  # x the face box on each side: every refine pass and the 112x112 warp stay inside the crop


class WorkerFailed(RuntimeError):
    """The embedding worker died: every face is blurred this frame, and recognition starts again."""


@dataclass
class _Job:
    state: TrackRecognition
    epoch: int  # the state's epoch when the crop was taken
    index: int  # frame the crop is from
    crop: np.ndarray
    box: np.ndarray  # in crop coordinates
    landmarks: np.ndarray  # in crop coordinates
    size: float
    forced: bool
    done: bool = False  # its result is in `_done` (set by the worker, under `_busy`)


class EmbeddingWorker:
    """One thread: aligned crops through the identifier's landmarker and embedder, in batches."""

    def __init__(self, identifier: FacebankIdentifier) -> None:
        self._identifier = identifier
        self._jobs: queue.SimpleQueue[list[_Job] | None] = queue.SimpleQueue()
        self._done: deque[tuple[_Job, np.ndarray, float]] = deque()  # appended by the worker, popped by the frame
        self._error: BaseException | None = None
        self._busy = threading.Condition()
        self._outstanding = 0  # jobs handed over whose results are not back yet
        self.discarded = 0  # results dropped because the face may have changed since the crop
        self.batch_ms: deque[float] = deque(maxlen=120)
        self.delays: deque[int] = deque(maxlen=30)  # frames from a crop to its result being recorded
        self._open: list[_Job] = []  # handed over, result not collected: their tracks wait (`pending`)
        self._no_wait_before = 0  # frame index from which `exchange` may wait again (WAIT_PAUSE_FRAMES)
        self._thread = threading.Thread(target=self._run, name="identify-worker", daemon=True)
        self._thread.start()

    @property
    def failed(self) -> bool:
        return self._error is not None or not self._thread.is_alive()

    def error(self) -> WorkerFailed:
        return WorkerFailed(f"the embedding worker stopped: {self._error!r}")

    # --- the frame thread --------------------------------------------------------------------------------
    def exchange(self, frame: np.ndarray, chosen: list[_Candidate], index: int,
                 wait_for: list[TrackRecognition] = ()) -> None:
        """Record the results that came back, then hand over this frame's faces (copies of their pixels). The
        results for `wait_for`'s tracks are waited for up to RECHECK_WAIT_S and recorded on this frame, where the
        worker is idle and quick (`_may_wait`): their crops go first, on their own, the other faces' after."""
        self.collect(index)
        jobs = [self._job(frame, c, index) for c in chosen]
        for job in jobs:
            job.state.pending, job.state.pending_epoch = True, job.epoch
        self._open.extend(jobs)
        awaited = [job for job in jobs if any(job.state is state for state in wait_for)]
        if awaited and self._may_wait(index):
            self._hand_over(awaited)
            with self._busy:
                back = self._busy.wait_for(lambda: all(job.done for job in awaited) or self.failed, RECHECK_WAIT_S)
            if not back:
                self._no_wait_before = index + WAIT_PAUSE_FRAMES
            jobs = [job for job in jobs if not any(job is a for a in awaited)]
            self._hand_over(jobs)
            self.collect(index)
        else:
            self._hand_over(jobs)

    def _hand_over(self, jobs: list[_Job]) -> None:
        if jobs:
            with self._busy:
                self._outstanding += len(jobs)
            self._jobs.put(jobs)

    def _may_wait(self, index: int) -> bool:
        """Whether a result would be back within RECHECK_WAIT_S: the worker has nothing else to do, its recent
        batches took less (their median), and no wait ran out in the last WAIT_PAUSE_FRAMES frames."""
        with self._busy:
            if self._outstanding:
                return False
        return self._quick() and index >= self._no_wait_before

    def _quick(self) -> bool:
        """Whether a result usually comes back within RECHECK_WAIT_S: the median of the recent batches' times. With
        none yet (the stream's first faces) it is tried: the streamer was blurred on the stream's first two frames,
        and a first wait that runs out pauses the waits as any other (WAIT_PAUSE_FRAMES)."""
        recent = list(self.batch_ms)[-10:]
        return not recent or float(np.median(recent)) <= 1000 * RECHECK_WAIT_S

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Until every job handed over has its result back (tests and benches: a deterministic delay)."""
        with self._busy:
            return self._busy.wait_for(lambda: self._outstanding == 0 or self.failed, timeout)

    def collect(self, index: int | None = None) -> None:
        while self._done:
            job, vector, sharp = self._done.popleft()
            if job.state.pending_epoch == job.epoch:  # the newest crop of its track (an older one may come back first)
                job.state.pending = False
            self._open = [j for j in self._open if j is not job]
            if index is not None:
                self.delays.append(index - job.index)
                longest = max(self.delays) + 1
                self._identifier.verify_lead = min(max(VERIFY_LEAD, longest),
                                                   max(1, self._identifier.policy.verify_every - 2))
            if job.state.epoch != job.epoch:
                self.discarded += 1  # another face may hold this id now: the crop proves nothing about it
                continue
            self._identifier._record(job.state, vector, sharp, job.size, job.index, job.forced)

    def close(self) -> None:
        self._jobs.put(None)
        self._thread.join(timeout=2)
        for job in self._open:  # never coming back: their tracks must be schedulable again by the next worker
            job.state.pending = False
        self._open.clear()

    @staticmethod
    def _job(frame: np.ndarray, c: _Candidate, index: int) -> _Job:
        box = np.asarray(c.track.xyxy, np.float32)
        pad = CROP_PAD * float(max(box[2] - box[0], box[3] - box[1], 1.0))
        h, w = frame.shape[:2]
        x1, y1 = int(max(0, box[0] - pad)), int(max(0, box[1] - pad))
        x2, y2 = int(min(w, box[2] + pad + 1)), int(min(h, box[3] + pad + 1))
        offset = np.array([x1, y1], np.float32)
        landmarks = np.asarray(c.track.landmarks, np.float32).reshape(5, 2) - offset
        return _Job(c.state, c.state.epoch, index, frame[y1:y2, x1:x2].copy(), box - np.tile(offset, 2),
                    landmarks, c.size, c.forced)

    # --- the worker thread -------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while (jobs := self._jobs.get()) is not None:
                jobs = self._more(jobs)
                if jobs is None:
                    return
                started = time.perf_counter()
                landmarker, embedder = self._identifier.landmarker, self._identifier.embedder
                faces, sharp = zip(*(landmarker.align_and_measure(j.crop, j.box, j.landmarks) for j in jobs),
                                   strict=True)
                vectors = embedder.embed_aligned(np.stack(faces))
                self.batch_ms.append((time.perf_counter() - started) * 1000)
                with self._busy:
                    for job, vector, measured in zip(jobs, vectors, sharp, strict=True):
                        self._done.append((job, vector, measured))
                        job.done = True
                    self._outstanding -= len(jobs)
                    self._busy.notify_all()
        except Exception as exc:  # reported to the frame thread, which blurs every face
            log.exception("embedding worker failed")
            self._error = exc
            with self._busy:
                self._busy.notify_all()

    def _more(self, jobs: list[_Job]) -> list[_Job] | None:
        """Everything else already waiting joins this batch (one network call); None when told to stop."""
        while True:
            try:
                more = self._jobs.get_nowait()
            except queue.Empty:
                return jobs
            if more is None:
                return None
            jobs = jobs + more
