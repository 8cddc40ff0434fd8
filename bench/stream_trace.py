"""Per-frame timeline of the live SRT path, for `bench_stream.py 1080p --trace`: where a frame's wall time goes.

Wraps (on the instances, nothing in the engine changes) the decoder's hand-off (`_offer`: a frame is on the
pipe), the source's `read` (the reader thread takes it), `Pipeline.detect_on_arrival`, the detector's `detect`
(on the detector thread), `Engine.process_one` (the frame loop) and the stream sink's `write_at`. Frames are
keyed by their source index. From those stamps: the arrival pattern (gaps between frames on the pipe), the
wait in the engine's mailbox, how long the frame loop waited for detection, whether detection of frame n+1
overlapped the frame loop's work on frame n, how busy the detector thread was, and how often a frame was
dropped while the detector sat idle.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import defaultdict

import numpy as np


class StreamTrace:
    def __init__(self, source, engine, sink) -> None:
        self.t: dict[int, dict[str, float]] = defaultdict(dict)  # source index -> stage -> monotonic s
        self.detect_spans: list[tuple[float, float, int | None]] = []  # (start, end, source index)
        self.early: list[tuple[float, bool]] = []  # detect_on_arrival calls: (time, started)
        self._by_id: dict[int, int] = {}  # id(frame array) -> source index (arrays live while they matter)
        self._lock = threading.Lock()
        self._wrap_offer(source)
        self._wrap_read(source)
        self._wrap_detect(engine.pipeline)
        self._wrap_process(engine)
        self._wrap_write(sink)

    def _wrap_offer(self, source) -> None:
        inner = source._offer

        def offer(session, item):
            if item is not None:
                self.t[item[0]]["pipe"] = time.monotonic()
            return inner(session, item)
        source._offer = offer

    def _wrap_read(self, source) -> None:
        inner = source.read

        def read():
            frame = inner()
            if frame is not None and source.last_index is not None:
                self.t[source.last_index]["read"] = time.monotonic()
                with self._lock:
                    self._by_id[id(frame)] = source.last_index
            return frame
        source.read = read

    def _index(self, frame) -> int | None:
        with self._lock:
            return self._by_id.get(id(frame))

    def _wrap_detect(self, pipeline) -> None:
        detector, arrival = pipeline.detector, pipeline.detect_on_arrival
        inner = detector.detect

        def detect(frame, *args, **kwargs):
            start = time.monotonic()
            try:
                return inner(frame, *args, **kwargs)
            finally:
                self.detect_spans.append((start, time.monotonic(), self._index(frame)))
        detector.detect = detect

        def on_arrival(frame):
            started = arrival(frame)
            self.early.append((time.monotonic(), started))
            return started
        pipeline.detect_on_arrival = on_arrival

    def _wrap_process(self, engine) -> None:
        inner = engine.process_one

        def process_one(frame, index, dt, captured):
            i = self._index(frame)
            start = time.monotonic()
            try:
                return inner(frame, index, dt, captured)
            finally:
                if i is not None:
                    self.t[i]["loop_start"], self.t[i]["loop_end"] = start, time.monotonic()
        engine.process_one = process_one

    def _wrap_write(self, sink) -> None:
        inner = sink.write_at

        def write_at(frame, source_index):
            if source_index is not None:
                self.t[source_index]["written"] = time.monotonic()
            return inner(frame, source_index)
        sink.write_at = write_at

    # --- the figures ---------------------------------------------------------------------------------------
    def summary(self, skip_s: float = 2.0) -> dict:
        """Steady state only: the first `skip_s` seconds (models warming, the sender's first burst) are left out."""
        rows = {i: r for i, r in self.t.items() if "pipe" in r}
        if not rows:
            return {}
        t0 = min(r["pipe"] for r in rows.values()) + skip_s
        steady = {i: r for i, r in rows.items() if r["pipe"] >= t0}
        rows = {i: r for i, r in sorted(steady.items()) if "read" in r}
        done = {i: r for i, r in rows.items() if "loop_end" in r}
        spans = sorted(s for s in self.detect_spans if s[0] >= t0)
        end = max((r["loop_end"] for r in done.values()), default=t0)
        out = {"frames_on_pipe": len(steady), "dropped_in_source_queue": len(steady) - len(rows),
               "frames_processed": len(done),
               "dropped_in_mailbox": sum(1 for r in rows.values() if "loop_start" not in r)}
        out["pipe_gap_ms"] = _pct(np.diff([r["pipe"] for r in rows.values()]) * 1000)
        out["pipe_to_read_ms"] = _pct([(r["read"] - r["pipe"]) * 1000 for r in rows.values()])
        out["mailbox_wait_ms"] = _pct([(r["loop_start"] - r["read"]) * 1000 for r in done.values()])
        out["frame_loop_ms"] = _pct([(r["loop_end"] - r["loop_start"]) * 1000 for r in done.values()])
        out["pipe_to_written_ms"] = _pct([(r["written"] - r["pipe"]) * 1000 for r in done.values() if "written" in r])
        by_frame = {s[2]: s for s in spans if s[2] is not None}
        out["detect_ms"] = _pct([(e - s) * 1000 for s, e, _ in spans])
        out["detections_per_processed_frame"] = round(len(spans) / max(len(done), 1), 2)
        # detection of a processed frame: started before its frame loop (on arrival) or by the loop itself
        waits, early = [], 0
        for i, r in done.items():
            if i in by_frame:
                s, e, _ = by_frame[i]
                early += s < r["loop_start"]
                waits.append(max(0.0, e - r["loop_start"]) * 1000)
        out["detected_before_its_loop_pct"] = round(100 * early / max(len(done), 1), 1)
        out["loop_waits_for_detection_ms"] = _pct(waits)
        # overlap: frame n+1's detection running while the loop still works on frame n
        order = list(done.items())
        overlap = [max(0.0, min(r0["loop_end"], by_frame[i1][1]) - max(r0["loop_start"], by_frame[i1][0])) * 1000
                   for (_, r0), (i1, _) in itertools.pairwise(order) if i1 in by_frame]
        out["next_detection_overlaps_loop_ms"] = _pct(overlap)
        busy = sum(min(e, end) - s for s, e, _ in spans if s < end)
        out["detector_busy_pct"] = round(100 * busy / max(end - t0, 1e-6), 1)
        out["detector_idle_while_frame_waits_pct"] = round(100 * self._idle_with_work(rows, spans, t0, end)
                                                           / max(end - t0, 1e-6), 1)
        out["dropped_while_detector_idle"] = sum(
            1 for i, r in rows.items() if "loop_start" not in r and not _busy_at(spans, r["read"]))
        arrivals = [t for t, _ in self.early if t >= t0]
        out["detect_on_arrival_started_pct"] = round(
            100 * sum(1 for t, ok in self.early if t >= t0 and ok) / max(len(arrivals), 1), 1)
        return out

    @staticmethod
    def _idle_with_work(rows: dict, spans: list, t0: float, end: float, step: float = 0.001) -> float:
        """Seconds in which a frame sat read but not yet taken by the frame loop (nor dropped) and the detector
        ran nothing: time the two cores could have spent detecting it."""
        waiting = [(r["read"], r.get("loop_start", r["read"])) for r in rows.values()]
        grid = np.arange(t0, end, step)
        has_work = np.zeros(len(grid), bool)
        for a, b in waiting:
            has_work[np.searchsorted(grid, a):np.searchsorted(grid, b)] = True
        busy = np.zeros(len(grid), bool)
        for s, e, _ in spans:
            busy[np.searchsorted(grid, s):np.searchsorted(grid, e)] = True
        return float(np.sum(has_work & ~busy) * step)


def _busy_at(spans: list, t: float) -> bool:
    return any(s <= t <= e for s, e, _ in spans)


def _pct(values) -> dict:
    values = np.asarray(list(values), float)
    if not len(values):
        return {}
    p = np.percentile(values, [50, 95])
    return {"n": len(values), "p50": round(float(p[0]), 1), "p95": round(float(p[1]), 1),
            "max": round(float(values.max()), 1)}
