"""File mode on the CPU: two frames detected at once, the same detections as one at a time.

With one frame at a time the detector thread is file mode's critical path: onnxruntime splits each network call
over both cores, but between calls (resizing, decoding outputs, NMS, merging the passes) one core waits, and a
1080p `blurcast run` used 165 % of the 200 % (`/usr/bin/time`). Here the passes over a frame (main pass, its
mirror, every tile: `YuNetDetector.passes`, which depend on the frame alone in file mode) run for two frames at
once on twin detectors with one onnxruntime thread each; the second look (`finish`), which remembers the places
it looked at in vain over the last frames, then runs on the pipeline's own detector, one frame at a time, in the
order the frames were submitted (and with it, for a frame with no colour, CenterFace's search: rare footage, left
serial). onnxruntime's outputs do not depend on its thread count (bit for bit:
tests/test_parallel_detect.py), so neither do the detections.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from engine.faces import Detections

log = logging.getLogger(__name__)

WORKERS = 2  # frames whose passes run at once (the pipeline reads one more ahead: Pipeline.frames_ahead)


class Closed(RuntimeError):
    """The detector was closed while a frame waited for its turn."""


class FrameParallelDetector:
    """Detects frames submitted in order, up to WORKERS at once. `submit` returns each frame's future."""

    def __init__(self, primary, make_twin: Callable[[], object], workers: int = WORKERS) -> None:
        self.primary = primary  # runs `finish`, in order; its settings (tiles, second look) are the twins' too
        self.workers = workers
        self._twins: queue.SimpleQueue = queue.SimpleQueue()
        for _ in range(workers):
            self._twins.put(make_twin())
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="detector-parallel")
        self._turn = threading.Condition()
        self._submitted = 0  # tickets handed out
        self._finished = 0  # tickets whose `finish` ran (or failed, or was cancelled)
        self._skipped: set[int] = set()  # cancelled tickets not yet reached
        self._closed = False

    def submit(self, frame: np.ndarray, min_score: float) -> Future:
        """Call in frame order. The future gives the frame's detections, or raises what detection raised."""
        with self._turn:
            if self._closed:
                raise Closed("detector closed")
            ticket = self._submitted
            self._submitted += 1
        future = self._pool.submit(self._detect, ticket, frame, min_score)
        # A frame cancelled before it ran never takes its turn: later frames must not wait for it.
        future.add_done_callback(lambda done: done.cancelled() and self._skip(ticket))
        return future

    def _detect(self, ticket: int, frame: np.ndarray, min_score: float) -> Detections:
        found, failed = None, None
        if self.primary.frame_only:
            try:
                found = self._passes(frame, min_score)
            except Exception as exc:  # raised in its turn, so that later frames still get theirs
                failed = exc
        with self._turn:
            while self._finished != ticket and not self._closed:
                self._turn.wait()
        if self._closed:
            raise Closed("detector closed")
        try:
            if failed is not None:
                raise failed
            if found is None:  # tiles in turn, shedding or a still: the passes depend on more than the frame
                return self.primary.detect(frame, min_score)
            return self.primary.finish(frame, *found, min_score)
        finally:
            with self._turn:
                self._pass_turn()

    def _skip(self, ticket: int) -> None:
        with self._turn:
            if ticket == self._finished:
                self._pass_turn()
            else:
                self._skipped.add(ticket)

    def _pass_turn(self) -> None:
        """The next ticket's turn (past any cancelled ones). Called holding `_turn`."""
        self._finished += 1
        while self._finished in self._skipped:
            self._skipped.discard(self._finished)
            self._finished += 1
        self._turn.notify_all()

    def _passes(self, frame: np.ndarray, min_score: float) -> tuple[Detections, float]:
        twin = self._twins.get()
        try:
            self._match(twin)
            return twin.passes(frame, min_score)
        finally:
            self._twins.put(twin)

    def _match(self, twin) -> None:
        """A twin looks the way the pipeline's detector looks now (detect width, tiles, second look's bar)."""
        for name in ("detect_width", "tiles", "tile_cycle", "second_look"):
            setattr(twin, name, getattr(self.primary, name))

    def retire(self) -> None:
        """No new frames; those already submitted are still detected (the pipeline replaced its detector
        mid-file: the frames it prefetched keep their detections instead of being blurred whole)."""
        self._pool.shutdown(wait=False)

    def close(self) -> None:
        """Stop: frames not started are cancelled, frames waiting for their turn raise `Closed`."""
        with self._turn:
            self._closed = True
            self._turn.notify_all()
        self._pool.shutdown(wait=False, cancel_futures=True)
