"""The frame loop: source -> pipeline -> sinks, in file mode (every frame) or live mode (bounded latency).

Live mode reads the source on its own thread into a small mailbox (one slot for a camera, a few for a bursty
network stream): when processing falls behind, the oldest *input* frame is dropped (counted), never an output
frame, so latency stays bounded. File mode processes every frame, encoding on a second thread so the two cores
overlap detection and encoding.
"""

from __future__ import annotations

import importlib.util
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import cv2
import numpy as np

from engine.config import Settings
from engine.cpu_load import CpuLoad
from engine.faces import FrameReport
from engine.pipeline import Pipeline
from engine.stages.anonymize import SafeFrame
from engine.stages.detectors.yunet import TILE_CYCLE
from engine.stages.identify import Identifier
from engine.stages.lookahead import FILE_LOOKAHEAD_FRAMES, WEAK_BACK_FRAMES, Lookahead
from engine.stages.sink import Sink
from engine.stages.source import SourceError, VideoSource
from engine.stages.sources.audio import AudioTap, ProgramSound, source_sound
from engine.stages.track import REPEAT_MAX_GAP

log = logging.getLogger(__name__)

# Live mode sheds detection work before it drops more frames: when an input frame was dropped, or a frame took
# longer than SHED_AFTER x the source's frame period from arrival to output, the tile pass runs every other
# frame (detectors/yunet.py) until SHED_HOLD_S passes without either.
SHED_AFTER = 2.0
NETWORK_JITTER_FRAMES = 3  # live, network sources: bursts wait here instead of being dropped (bench_stream 1080p)
STALL_PERIODS = 3  # live: a source silent this many frame periods has stalled (the lookahead sends what it holds)
SHED_HOLD_S = 2.0
# Far behind, thinning the tile pass is not enough (a slow CPU at 1080p30): once it has been behind for COAST_AFTER_S
# with the tiles thinned, every other frame is coasted instead of detected (pipeline.py, COAST_GROWTH) and the
# look-ahead holds at least one frame, until COAST_HOLD_S pass without falling behind. Frames dropped for want of
# time are frames the viewer never sees; coasted ones go out, anonymized on the tracks (docs/measurements.md).
LIVE_COAST = 1
COAST_AFTER_S = 1.0
# ...and only while the thinned tiles still leave frames dropped: at least COAST_DROPPED_SHARE of the source's frames
# over the last COAST_DROPS_WINDOW_S. A fast CPU's occasional slow frame (over SHED_AFTER periods) keeps the tiles
# thinned most of the time while it drops 1 % of the frames; coasting then held a frame back for nothing. Live 1080p30
# on the Xeon, empty facebank (bench/profile_live.py, docs/measurements.md stop 41): the delay a viewer gets p50 44-50
# -> 27-29 ms, p95 69-72 -> 44-55 ms, every frame detected. With the streamer enrolled, its embeddings' CPU drops
# 6-9 % of the frames without coasting, in bursts: there it coasts as before (one frame dropped in ten is worse than
# 15 ms of delay, which OBS's offset absorbs). The CPU coasting is for (stop 24: 15-22 fps of 30) drops a third.
COAST_DROPPED_SHARE = 0.1
COAST_DROPS_WINDOW_S = 2.0
COAST_HOLD_S = 10.0
SHED_HOLD_MARGIN = 1.25  # a tile-only face's track must outlive the thinned tile cycle by this factor
# The other way round: with time to spare (a fast CPU, a GPU, a low frame rate), live mode looks at more tiles a frame,
# down to every tile every frame as file mode does. In-process on the 4 WIDER crowds, every frame in order
# (bench/live_variants.py): 310 leaked face-frames with one tile a frame, 279 with three, 243 with all six
# (docs/measurements.md, stop 29). The budget is a frame's p95 latency over the last second against
# min(HEADROOM_PERIOD_SHARE x the frame period, HEADROOM_LATENCY_S): the tiles a step adds, priced at the detector's
# measured time a tile, must keep it under HEADROOM_SPEND_BELOW of the budget; over the budget, a step back; behind
# (shedding or coasting), straight back to TILE_CYCLE. A step waits HEADROOM_HOLD_S for frames of its own.
TILE_HEADROOM = 1
TILE_CYCLES = tuple(sorted({TILE_CYCLE, 3, 2, 1}, reverse=True))  # 1080p: 1, 2, 3, then all 6 tiles a frame
HEADROOM_LATENCY_S = 0.050  # live mode's bound on added latency (p95)
HEADROOM_PERIOD_SHARE = 1.0  # ... and a frame period: slower, frames would pile up (then shedding steps back)
HEADROOM_SPEND_BELOW = 0.9
# ...and only while the cores have room for them: the machine's busy share (engine/cpu_load.py) plus the added tiles'
# CPU must stay under this. The latency rule alone stepped up on a 2-core Zen 4 at 1080p30 (a quiet second's p95 of
# 20 ms plus one 9 ms tile is under 30); the extra tile a frame took the cores from 53 to 80 % busy, and the 2 s until
# the step back ran at a p95 of 44-49 ms (bench/profile_live.py, docs/measurements.md stop 49).
HEADROOM_CPU_SHARE = 0.7
# A tile's CPU time per second of its wall time: its search runs on 2 inference threads (OpenVINO; the step above,
# +27 % of 2 cores for 30 tiles a second at 9 ms, is 2.0). A GPU's tile costs the CPU less: priced high, it steps up
# there all the same, on cores that are idle.
TILE_CPU_PER_WALL = 2.0
HEADROOM_WINDOW_S = 1.0
HEADROOM_HOLD_S = 2.0
PREVIEW_WIDTH = 640  # the largest preview a client may ask for; each asks for what its terminal can show
PREVIEW_EVERY_S = 0.2
# ...and only while a client asked for one this recently. A headless rig mostly runs with no UI attached, and the
# preview's resize (1080p to 640 px, INTER_AREA: 2.7 ms on one core, Zen 4) made every sixth frame late for nobody.
PREVIEW_WANTED_S = 2.0


class FrameWatcher(Protocol):
    """Sees each raw frame with its report, inside the engine only (nothing raw leaves the process)."""

    @property
    def active(self) -> bool: ...

    def wants_raw(self) -> bool: ...

    def observe(self, raw: np.ndarray | None, report: FrameReport) -> None: ...


@dataclass
class Stats:
    """Rolling figures for telemetry; written by the frame loop, read by the control thread."""

    frames: int = 0
    dropped: int = 0
    shedding: int = 0  # frames detected with the tile pass thinned out (live mode behind)
    coasted: int = 0  # frames not detected, anonymized on the tracks' predictions (live mode far behind)
    whole_frames: int = 0
    started: float = field(default_factory=time.monotonic)
    stamps: deque = field(default_factory=lambda: deque(maxlen=240))  # output times, for fps
    latencies_ms: deque = field(default_factory=lambda: deque(maxlen=240))
    # Live: capture to the hand-over to the outputs, the frames the look-ahead holds back included (one while
    # coasting): the delay a viewer gets. `latencies_ms` stops at anonymized, which steers the scheduler.
    output_delays_ms: deque = field(default_factory=lambda: deque(maxlen=240))
    last_report: FrameReport | None = None

    def record(self, report: FrameReport, latency_ms: float) -> None:
        now = time.monotonic()
        self.frames += 1
        self.whole_frames += report.whole_frame is not None
        self.coasted += report.coasted
        self.stamps.append(now)
        self.latencies_ms.append(latency_ms)
        self.last_report = report

    def fps(self) -> float:
        stamps = list(self.stamps)
        recent = [t for t in stamps if t >= time.monotonic() - 2.0]
        if len(recent) < 2:
            return 0.0
        return (len(recent) - 1) / max(recent[-1] - recent[0], 1e-6)

    def latency(self, q: float) -> float | None:
        values = list(self.latencies_ms)
        return float(np.percentile(values, q)) if values else None

    def output_delay(self, q: float) -> float | None:
        values = list(self.output_delays_ms)
        return float(np.percentile(values, q)) if values else None


class _LiveTag(NamedTuple):
    """What a live frame carries past the look-ahead to the sinks: the source's own frame number (None for a
    camera or a file) for the stream outputs, and its place on the source's timeline for a recording."""

    source_index: int | None
    position: int
    captured: float | None = None  # time.monotonic() when the source delivered it: its delay to the outputs


def _write_placed(sink: Sink, safe: SafeFrame, source_index: int | None, position: int | None) -> None:
    """`safe` to `sink`, at its place where the sink keeps one: stream outputs on the source's clock, a live
    recording on the source's timeline (filling the frames dropped, its sound by the source's frame number)."""
    write_at = getattr(sink, "write_at", None)
    write_live = getattr(sink, "write_live", None)
    if write_at:
        write_at(safe, source_index)
    elif write_live and position is not None:
        write_live(safe, position, source_index)
    else:
        sink.write(safe)


class _Timeline:
    """A live frame's place on the source's timeline, for a recording that fills the frames the engine dropped:
    the source's own frame number (a network stream), the frames read (a file played live), or the frame its
    capture time falls on (a camera). It only goes forward, also across a source that is replaced."""

    def __init__(self) -> None:
        self.base, self.next = 0, 0
        self.started: float | None = None
        self.first_index: int | None = None
        self.read = 0

    def restart(self) -> None:
        self.base, self.started, self.first_index, self.read = self.next, None, None, 0

    def position(self, source: VideoSource, source_index: int | None, captured: float) -> int:
        if source_index is not None:
            self.first_index = source_index if self.first_index is None else self.first_index
            offset = source_index - self.first_index
        elif source.kind == "file":
            offset = self.read
        else:
            self.started = captured if self.started is None else self.started
            offset = round((captured - self.started) * max(source.info.fps, 1.0))
        self.read += 1
        position = max(self.base + offset, self.next)
        self.next = position + 1
        return position


class Engine:
    """Owns a source, a pipeline and sinks. Settings and sinks can change while it runs (thread-safe)."""

    def __init__(self, settings: Settings, source: VideoSource, sinks: list[Sink] | None = None,
                 identifier: Identifier | None = None, pipeline: Pipeline | None = None) -> None:
        self.source = source
        self.sinks: list[Sink] = list(sinks or [])
        # The outputs' frame numbers and sound, continued across `replace_source` (sources/audio.py)
        self.sound = ProgramSound(source, getattr(source, "fps_fraction", source.info.fps))
        self.pipeline = pipeline if pipeline is not None else Pipeline(settings, identifier=identifier)
        self.stats = Stats()
        self._drops = deque()
        self.source_state = "running"
        self.preview: np.ndarray | None = None  # small copy of the last *anonymized* frame (`wanted_preview`)
        self._preview_at = 0.0
        self._preview_wanted_until = 0.0
        self._preview_made = threading.Event()
        self._settings = settings
        self._pending_settings: Settings | None = None
        self._sink_ops: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._pending_sinks: list[Sink] = []
        # Outputs that failed for good, by name: why (a full disk). Shown until an output of that name starts again,
        # so a recording that stopped hours into a stream is not just missing from the list.
        self.stopped_outputs: dict[str, str] = {}
        self.stop_without_outputs = False  # live: stop once the last output failed (`run --live`; a served engine
        # waits for the next output the UI starts)
        self._lock = threading.Lock()
        self.stop_event = threading.Event()
        self._next_source: VideoSource | None = None
        self.watcher: FrameWatcher | None = None  # e.g. a live enrolment, which needs the raw face
        self.detect_on_arrival = True  # live: detection starts as a frame arrives (off: benches compare)
        self.shed_when_behind = True  # live: the tile pass thinned out while behind (off: benches compare)
        self.cpu_load = CpuLoad()  # how busy the cores are: more tiles only where they fit (TILE_HEADROOM)
        self.detect_waiting = True  # live: the next waiting frame is detected during the frame loop (off: benches)
        # Frames held before the sinks so a face found later is hidden in them too (stages/lookahead.py).
        self.lookahead = Lookahead(settings.lookahead_frames)
        self.pipeline.reveal_later(settings.lookahead_frames > 0)  # a face recognised later shown in those too
        self._hide_kept = threading.Event()

    # --- control, from any thread -------------------------------------------------------------------------
    @property
    def settings(self) -> Settings:
        with self._lock:
            return self._pending_settings or self._settings

    def update_settings(self, changes: dict[str, Any]) -> Settings:
        """Validate and queue new settings; the frame loop applies them before its next frame."""
        if changes.get("backend") == "openvino" and importlib.util.find_spec("openvino") is None:
            # Refused here, before it is saved: a saved backend that cannot load would stop every later start.
            raise ValueError("backend 'openvino' needs the openvino package: pip install 'blurcast[openvino]'")
        with self._lock:
            new = (self._pending_settings or self._settings).updated(changes)
            self._pending_settings = new
            return new

    def replace_source(self, source: VideoSource) -> None:
        """Switch to an opened source; the reader thread swaps it in before its next read. The outputs running go on
        with its frames and sound, on their clock (`sound`)."""
        try:
            source_sound(source)  # its sound probed and started here, not on the reader's thread (ffprobe: ~0.1 s)
        except Exception:  # the picture switches all the same; the outputs then lack its sound (logged)
            log.exception("the sound of %s could not be started; the outputs go on without it", source.spec)
        self._next_source = source

    def output_sound(self) -> AudioTap | None:
        """The sound tap for an output opened now: the source's, continued across source switches."""
        return self.sound.tap

    def hide_kept(self) -> None:
        """Someone left the facebank: the frames the lookahead holds hide the faces they showed (applied by the
        frame loop before its next frame)."""
        self._hide_kept.set()

    def add_sink(self, sink: Sink) -> None:
        with self._lock:
            self._pending_sinks.append(sink)

        def op() -> None:
            with self._lock:
                if sink not in self._pending_sinks:
                    return  # stopped before the frame loop took it in
                self._pending_sinks.remove(sink)
            self.sinks.append(sink)
            self.stopped_outputs.pop(sink.name, None)
        self._sink_ops.put(op)

    def sink_names(self) -> list[str]:
        """Running sinks and those added but not yet in the frame loop (it takes them at its next frame)."""
        with self._lock:
            return [s.name for s in (*self.sinks, *self._pending_sinks)]

    def remove_sink(self, name: str) -> None:
        with self._lock:
            waiting = [s for s in self._pending_sinks if s.name == name]
            self._pending_sinks = [s for s in self._pending_sinks if s.name != name]
        for sink in waiting:
            _close_quietly(sink)

        def op() -> None:
            for sink in [s for s in self.sinks if s.name == name]:
                self.sinks.remove(sink)
                # Closed off the frame loop: an encoder may take seconds to finish (a stream nobody called),
                # and the other outputs must not wait for it.
                threading.Thread(target=_close_quietly, args=(sink,), name=f"close-{name}", daemon=True).start()
        self._sink_ops.put(op)

    def video_delay_ms(self) -> float | None:
        """Capture to output (p50): measured on the frames handed to the outputs (live mode), else processing plus
        the frames the lookahead holds back."""
        measured = self.stats.output_delay(50)
        if measured is not None:
            return measured
        processing = self.stats.latency(50)
        if processing is None:
            return None
        held = self.lookahead.delay_ms() if self.lookahead.frames else None
        return processing + (held or 0.0)

    def telemetry(self) -> dict[str, Any]:
        report = self.stats.last_report
        delay = self.video_delay_ms()
        return {
            "fps": round(self.stats.fps(), 2),
            "latency_p50_ms": _round(self.stats.latency(50)),
            "latency_p95_ms": _round(self.stats.latency(95)),
            # the added video delay, and what to put in OBS's audio Sync Offset for this source's sound
            "video_delay_ms": _round(delay),
            "output_delay_p50_ms": _round(self.stats.output_delay(50)),
            "output_delay_p95_ms": _round(self.stats.output_delay(95)),
            "obs_sync_offset_ms": None if delay is None else round(delay),
            "lookahead_frames": self.lookahead.frames,
            "backfilled": self.lookahead.backfilled,
            "revealed": self.lookahead.revealed,
            "frames": self.stats.frames,
            "dropped": self.stats.dropped,
            "shedding_frames": self.stats.shedding,
            "coasted_frames": self.stats.coasted,
            "whole_frames": self.stats.whole_frames + self.lookahead.undetected,
            "coasted_undetected": self.lookahead.undetected,  # of them: coasted frames no detection reached
            "faults": self.faults(),
            "source": {"spec": self.source.spec, "kind": self.source.kind, "state": self.source_state,
                       "width": self.source.info.width, "height": self.source.info.height,
                       "fps": self.source.info.fps,
                       # sound a network source dropped before its first picture (capped, engine/stages/sources)
                       "audio_dropped_samples": getattr(self.source, "audio_dropped_samples", 0)},
            "sinks": [s.name for s in self.sinks],
            "stopped_outputs": dict(self.stopped_outputs),
            "detector": f"{self.pipeline.detector.name} on {self.pipeline.detector.runner_name}",
            "tiles": self._tiles_now(),
            "whole_frame": report.whole_frame if report else None,
            "faces": [f.as_dict() for f in report.faces] if report else [],
            "settings": self.settings.as_dict(),
            "facebank": self._identifier_status(),
        }

    def _tiles_now(self) -> dict[str, int] | None:
        """The full-resolution tiles searched a frame now, of the frame's all, and every how many frames (2 while
        shedding); None where the frame size has no tile pass."""
        detector, info = self.pipeline.detector, self.source.info
        if not hasattr(detector, "tiles_per_frame"):
            return None
        total = detector.tiles_per_frame(info.width, info.height, 1)
        if not total:
            return None
        return {"a_frame": detector.tiles_per_frame(info.width, info.height, detector.tile_cycle), "of": total,
                "every": detector.tile_every}

    def faults(self) -> dict[str, int]:
        """Every fault counted so far, by kind: the pipeline's and the look-ahead's."""
        faults = dict(self.pipeline.faults)
        if self.lookahead.faults:
            faults["lookahead-error"] = self.lookahead.faults
        if self.lookahead.reveal_faults:  # faces left blurred, no frame made whole: not a WHOLE_FRAME_FAULTS key
            faults["reveal-error"] = self.lookahead.reveal_faults
        return faults

    def _identifier_status(self) -> dict:
        status = getattr(self.pipeline.identifier, "status", None)
        try:
            return status() if status else {}
        except Exception:  # telemetry must never take the control thread down
            log.exception("identifier status failed")
            return {}

    # --- the frame loop ------------------------------------------------------------------------------------
    def process_one(self, frame: np.ndarray, index: int, dt: float, captured: float) -> SafeFrame:
        self._apply_pending()
        watcher = self.watcher if self.watcher is not None and self.watcher.active else None
        raw = frame.copy() if watcher is not None and watcher.wants_raw() else None  # anonymizing works in place
        try:
            safe, report = self.pipeline.process(frame, index, dt)
        except Exception:  # any bug on the way: the frame still goes out, fully anonymized
            log.exception("pipeline failed on frame %d: whole frame anonymized", index)
            self.pipeline.faults["pipeline-error"] += 1
            report = FrameReport(index, whole_frame="pipeline-error")
            safe = self.pipeline.anonymizer.whole(frame, index)
        self.stats.record(report, (time.monotonic() - captured) * 1000)
        if watcher is not None:
            try:
                watcher.observe(raw, report)
            except Exception:  # a live enrolment's bug must never stop the stream; the frame is already safe
                log.exception("frame watcher failed; it is dropped")
                self.pipeline.faults["watcher-error"] += 1
                self.watcher = None
        return safe

    def run_file(self, progress: Callable[[int], None] | None = None, lookahead: int | None = None) -> int:
        """Every frame, in order, as fast as possible. Returns the number of frames written.

        Latency is free here: `lookahead` frames (default FILE_LOOKAHEAD_FRAMES, or the setting when larger) are
        held so that a face is also hidden in the frames before its first detection."""
        fps = self.source.info.fps
        self.pipeline.offline = True
        self.pipeline.still = self.source.info.frame_count == 1  # a photo: views confirm weak faces, not frames
        self.pipeline.warm_up(self.source.info.width, self.source.info.height, file_mode=True)  # CUDA only, here
        if lookahead is None:
            lookahead = max(FILE_LOOKAHEAD_FRAMES, self.settings.lookahead_frames)
        self.lookahead = Lookahead(lookahead, weak_frames=WEAK_BACK_FRAMES)
        self.pipeline.reveal_later(lookahead > 0)
        out: queue.Queue[SafeFrame | None] = queue.Queue(maxsize=4)
        writer = threading.Thread(target=self._write_all, args=(out,), name="sink-writer", daemon=True)
        writer.start()
        index = 0
        upcoming: deque[np.ndarray] = deque()  # read and being detected, oldest first
        ended = False  # the source's end (it reads past a damaged stretch itself: VideoSource._past_damage)
        had_outputs = bool(self.sinks)
        try:
            while not self.stop_event.is_set():
                if had_outputs and not self.sinks:  # the last one failed (a full disk): the rest has nowhere to go
                    log.error("no output is left to write to: the run stops at frame %d", index)
                    break
                while not ended and len(upcoming) < self.pipeline.frames_ahead:
                    following = self.source.read()
                    if following is None:
                        ended = True
                        break
                    self.pipeline.prefetch(following)
                    upcoming.append(following)
                if not upcoming:
                    break
                safe = self.process_one(upcoming.popleft(), index, 1.0 / fps, time.monotonic())
                for released, _ in self._look_ahead(safe):
                    out.put(released)
                index += 1
                if progress:
                    progress(1)
        finally:
            # Every frame held goes out, also on stop or error; the weak boxes still waiting to be seen again hidden
            # in them first (at a file's end that sighting never comes).
            for released, _ in self.lookahead.flush(self.pipeline.anonymizer, self.pipeline.waiting):
                out.put(released)
            out.put(None)
            writer.join()
        if self._writer_error:
            raise self._writer_error
        return index

    _writer_error: Exception | None = None

    def _write_all(self, out: queue.Queue[SafeFrame | None]) -> None:
        while (safe := out.get()) is not None:
            try:
                self._emit(safe)
            except Exception as exc:  # surfaced by run_file; keep draining so the loop never blocks
                self._writer_error = self._writer_error or exc

    def run_live(self, pace_files: bool = True) -> None:
        """Until `stop_event`: the newest frame is processed; older unprocessed input frames are dropped."""
        mailbox: queue.Queue[tuple[np.ndarray, float, int | None]] = queue.Queue(maxsize=self._mailbox_depth())
        self.pipeline.warm_up(self.source.info.width, self.source.info.height)  # no compile once frames flow
        reader = threading.Thread(target=self._read_live, args=(mailbox, pace_files), name="source", daemon=True)
        reader.start()
        if self.detect_waiting and mailbox.maxsize > 1:  # a one-slot mailbox (a camera) would often replace the
            self.pipeline.on_detected = lambda: self._detect_next(mailbox)  # frame being detected: not measured
        background = getattr(self.pipeline.identifier, "run_in_background", None)
        if background is not None:  # embeddings off the frame path (engine/recognition/identify_worker.py)
            background(True)
        index, last, seen_picture = 0, None, 0
        # A gap of a few frame periods is a stall: what the lookahead holds goes out then, not late. A shorter
        # one (a slow or bursty source) keeps it: flushing there would silently turn the lookahead off.
        stall_s = max(0.2, STALL_PERIODS / max(self.source.info.fps, 1.0))
        try:
            while not self.stop_event.is_set():
                try:
                    frame, captured, source_index, position, picture = mailbox.get(timeout=0.2)
                except queue.Empty:
                    self._apply_pending()
                    if last is not None and time.monotonic() - last > stall_s:
                        self._emit_held()
                    continue
                dt = (captured - last) if last is not None else 1.0 / self.source.info.fps
                last = captured
                if picture != seen_picture:  # the first frame after a reconnect or a switch (not an old one still
                    self.pipeline.new_picture()  # waiting in the mailbox): it goes out whole (Pipeline.process)
                    seen_picture = picture
                tag = _LiveTag(source_index, position, captured)
                for safe, held_tag in self._look_ahead(self.process_one(frame, index, dt, captured), tag):
                    self._emit(safe, held_tag)
                self._shed_load(captured)
                index += 1
        finally:
            try:
                self._emit_held()  # also on Ctrl-C or an error: a recording keeps its last frames
            except Exception:
                log.exception("could not send the frames the lookahead held")
            if background is not None:
                background(False)
            self.pipeline.on_detected = None
        reader.join(timeout=2)

    def _detect_next(self, mailbox: queue.Queue) -> None:
        """The frame loop's detection is done: start the next waiting frame's now, so that it overlaps tracking
        and anonymizing this one. Behind on a bursty stream the mailbox is never empty when a frame arrives, so
        detection on arrival never ran there and detection and the frame loop took turns on two cores
        (bench_stream.py 1080p --trace: 0 % overlap, the detector idle with a frame waiting 20 % of the time)."""
        # Under the mailbox's lock, so that the source's thread cannot drop the head between the look and the start
        # (lock order: mailbox.mutex, then the pipeline's submit lock; nothing takes them the other way round).
        with mailbox.mutex:
            if mailbox.queue:  # only if the detector is idle; the frame takes it at its turn
                self.pipeline.detect_on_arrival(mailbox.queue[0][0])

    def _mailbox_depth(self) -> int:
        """Frames that may wait for the frame loop. A camera delivers evenly: one, the newest. A network stream
        arrives in bursts (SRT at 1080p: frames 8 ms apart, then a 110 ms gap): with one slot, each burst
        dropped all but its last frame even when the engine had time for them all."""
        return NETWORK_JITTER_FRAMES if self.source.kind in ("stream", "url") else 1

    def _look_ahead(self, safe: SafeFrame, tag: int | None = None) -> list[tuple[SafeFrame, int | None]]:
        """The frames to send now: `safe` itself without a lookahead, else the oldest held (after backfill)."""
        if self._hide_kept.is_set():
            self._hide_kept.clear()
            self.lookahead.hide_kept(self.pipeline.anonymizer)
        if self.lookahead.frames == 0 and not len(self.lookahead):
            return [(safe, tag)]
        report = self.stats.last_report  # process_one records the report of `safe` before returning it
        if report is None or report.index != safe.index:  # never expected; then nothing is carried back
            report = FrameReport(safe.index, whole_frame="unknown")
        return self.lookahead.push(safe, report, self.pipeline.anonymizer, tag)

    def _emit_held(self) -> None:
        """The frames held, sent now (a stall, a stop): panic, pause and a changed facebank or threshold reach them
        first, as they would have reached them in `_look_ahead` (a review found them flushed as processed)."""
        anonymizer = self.pipeline.anonymizer
        if self._hide_kept.is_set():
            self._hide_kept.clear()
            self.lookahead.hide_kept(anonymizer)
        with self._lock:
            wanted = self._pending_settings or self._settings
        if any(s.panic or s.paused for s in (wanted, self.pipeline.settings)):
            self.lookahead.hide_all(anonymizer)
        for safe, tag in self.lookahead.flush(anonymizer, self.pipeline.waiting):
            self._emit(safe, tag)

    _shed_until = 0.0
    _shed_since = 0.0
    _coast_until = 0.0
    _dropped_seen = 0
    _drops: deque[tuple[float, int]]  # (time, frames dropped so far) over the last COAST_DROPS_WINDOW_S
    _drops_period = 0.0  # the source's frame period they were counted at

    def _hold_back(self, frames: int) -> None:
        """Live: hold `frames` back from now on. The delays measured before are another delay's: forgotten, so that
        the OBS offset (their median) follows at once, not after the 240 frames they span."""
        if frames != self.lookahead.frames:
            self.lookahead.frames = frames
            self.stats.output_delays_ms.clear()

    def _live_lookahead(self) -> int:
        """Frames live mode holds back: the setting, and at least one while frames are coasted (a face first
        found in the frame after a coasted one is hidden back in it)."""
        return max(self.settings.lookahead_frames, int(self.pipeline.coast_alternate))

    def _shed_load(self, captured: float) -> None:
        """Behind (a frame waited too long, or one was dropped): thin the tile pass out for a while; still behind
        a second later and still dropping COAST_DROPPED_SHARE of the frames, coast every other frame (LIVE_COAST)."""
        if not self.shed_when_behind:
            return
        now = time.monotonic()
        period = 1.0 / max(self.source.info.fps, 1.0)
        if self._drops_period != period:  # a source switched in: drops counted at another rate
            self._drops.clear()
            self._drops_period = period
        self._drops.append((now, self.stats.dropped))  # [0] below: as the window began
        while len(self._drops) > 1 and now - self._drops[1][0] >= COAST_DROPS_WINDOW_S:
            self._drops.popleft()
        if now - captured > SHED_AFTER * period or self.stats.dropped > self._dropped_seen:
            if now >= self._shed_until:
                self._shed_since = now
            self._shed_until = now + SHED_HOLD_S
            dropping = self.stats.dropped - self._drops[0][1] >= COAST_DROPPED_SHARE * COAST_DROPS_WINDOW_S / period
            if LIVE_COAST and ((now - self._shed_since >= COAST_AFTER_S and dropping) or now < self._coast_until):
                self._coast_until = now + COAST_HOLD_S
        self._dropped_seen = self.stats.dropped
        coasting = now < self._coast_until
        if coasting != self.pipeline.coast_alternate:
            self.pipeline.coast_alternate = coasting
            self._hold_back(self._live_lookahead())
            log.info("live: %s", "far behind: every other frame coasted on the tracks, one frame held back"
                     if coasting else "keeping up again: every frame detected")
        detector = self.pipeline.detector
        if not hasattr(detector, "tile_every"):
            return
        # Thinned out, every tile comes back after twice as many frames. Only while a face that only a tile
        # sees keeps its track that long (hold), and a weak one waits that long for its second sighting.
        cycle = getattr(detector, "tile_cycle", TILE_CYCLE)
        fps = self.stats.fps() or self.source.info.fps
        holds = SHED_HOLD_MARGIN * 2 * cycle / max(fps, 1.0) <= self.pipeline.settings.hold_seconds
        shedding = now < self._shed_until and holds
        self.stats.shedding += shedding
        detector.tile_every = 2 if shedding else 1
        self._spend_headroom(detector, now, behind=now < self._shed_until or coasting)
        cycle = getattr(detector, "tile_cycle", TILE_CYCLE)
        self.pipeline.tracker.repeat_max_gap = max(REPEAT_MAX_GAP, cycle * detector.tile_every + 1)

    _headroom_at = 0.0  # the last step
    _headroom_checked = 0.0  # the last look at the window

    def _spend_headroom(self, detector, now: float, behind: bool) -> None:
        """More tiles a frame while live mode has time to spare, fewer as it runs out (TILE_HEADROOM)."""
        if not TILE_HEADROOM or not hasattr(detector, "tiles_per_frame"):
            return
        info = self.source.info
        cycle = detector.tile_cycle
        if not detector.tiles_per_frame(info.width, info.height, cycle):
            return  # no tile pass at this frame size
        if behind:
            if cycle != TILE_CYCLE:
                detector.tile_cycle, self._headroom_at = TILE_CYCLE, now
                log.info("live: behind, back to one tile in turn (every %d frames)", TILE_CYCLE)
            return
        if (now - self._headroom_at < HEADROOM_HOLD_S or now - self._headroom_checked < HEADROOM_WINDOW_S
                or detector.tile_seconds is None):
            return
        self._headroom_checked = now  # a look a window, not a percentile every frame
        busy = self.cpu_load.sample()  # since the last look
        fps = max(info.fps, 1.0)
        recent = list(self.stats.latencies_ms)[-max(5, int(fps * HEADROOM_WINDOW_S)):]
        if len(recent) < 5:
            return
        p95 = float(np.percentile(recent, 95)) / 1000
        budget = min(HEADROOM_PERIOD_SHARE / fps, HEADROOM_LATENCY_S)
        step = TILE_CYCLES.index(cycle) if cycle in TILE_CYCLES else 0
        if p95 > budget and step > 0:
            step -= 1
        elif step < len(TILE_CYCLES) - 1:
            more = (detector.tiles_per_frame(info.width, info.height, TILE_CYCLES[step + 1])
                    - detector.tiles_per_frame(info.width, info.height, cycle))
            added = more * detector.tile_seconds * TILE_CPU_PER_WALL * fps / self.cpu_load.cores
            if p95 + more * detector.tile_seconds > HEADROOM_SPEND_BELOW * budget or busy + added > HEADROOM_CPU_SHARE:
                return
            step += 1
        else:
            return
        detector.tile_cycle, self._headroom_at = TILE_CYCLES[step], now
        log.info("live: p95 %.0f ms, a tile %.1f ms, the budget %.0f ms, the CPU %.0f %% busy: every tile comes back "
                 "in %d frames", 1000 * p95, 1000 * detector.tile_seconds, 1000 * budget, 100 * busy, TILE_CYCLES[step])

    def _read_live(self, mailbox: queue.Queue, pace: bool) -> None:
        period = 1.0 / self.source.info.fps
        next_due = time.monotonic()
        timeline = _Timeline()
        picture = 0  # which picture the frames are of: a reconnect or a source switch starts another
        while not self.stop_event.is_set():
            if self._next_source is not None:
                old, self.source, self._next_source = self.source, self._next_source, None
                old.close()
                try:
                    self.sound.switched(self.source)  # its frame numbers and sound go on from the last ones sent
                except Exception:  # the reader must not die: frames keep coming, the outputs lack the new sound
                    log.exception("the sound of %s could not follow the switch", self.source.spec)
                period, next_due = 1.0 / self.source.info.fps, time.monotonic()
                self.source_state = "running"
                picture += 1
                timeline.restart()
                self.stats.output_delays_ms.clear()  # another source's delay (its rate, its decoder)
            frame = self.source.read()
            if frame is None:
                self._recover_source()
                picture += 1  # a reconnect's frames: nobody in them has been seen for a while
                continue
            captured = time.monotonic()
            # Only while keeping up: behind, a frame waiting in the mailbox is replaced by the next one, and its
            # detection would be wasted on a 2-core machine that already lacks the time. Coasting, a frame that
            # arrives to an empty mailbox is the next one taken: its detection overlaps the coasted frame's work
            # (the pipeline refuses a frame that will itself be coasted).
            if self.detect_on_arrival and mailbox.empty() and (time.monotonic() >= self._shed_until
                                                               or self.pipeline.coast_alternate):
                self.pipeline.detect_on_arrival(frame)
            # stream outputs keep A/V sync on it: the source's own number, on the program's clock after a switch
            source_index = self.sound.index(getattr(self.source, "last_index", None))
            position = timeline.position(self.source, source_index, captured)
            self.sound.placed(source_index, position)
            item = (frame, captured, source_index, position, picture)
            try:
                mailbox.put_nowait(item)
            except queue.Full:  # behind: the oldest waiting frame makes room for the newer one
                if _drop_oldest(mailbox, keep=self.pipeline.early_frame if self.pipeline.on_detected else None):
                    self.stats.dropped += 1
                mailbox.put_nowait(item)
            if pace and self.source.kind == "file":  # a file played live behaves like a camera
                next_due += period
                time.sleep(max(0.0, next_due - time.monotonic()))
                if next_due < time.monotonic() - 1.0:
                    next_due = time.monotonic()

    def _recover_source(self) -> None:
        """A camera that vanished: keep the engine (and the virtual camera) up, retry once a second."""
        if self.source.kind == "file" and not self.source.loop:
            self.source_state = "ended"
            self.stop_event.set()
            return
        self.source_state = "lost"
        log.warning("source %s stopped giving frames; retrying", self.source.spec)
        said = ""
        while not self.stop_event.is_set():
            try:
                if self.source.reopen():
                    self.source_state = "running"
                    log.info("source %s is back", self.source.spec)
                    return
            except SourceError as exc:  # why, once (a relay's certificate now refused), not every second
                if str(exc) != said:
                    said = str(exc)
                    log.error("source %s: %s; retrying", self.source.spec, said)
            self.stop_event.wait(1.0)

    def _emit(self, safe: SafeFrame, tag: _LiveTag | int | None = None) -> None:
        self._update_preview(safe)  # what goes out, after any backfill: the UI shows nothing the outputs do not
        while not self._sink_ops.empty():
            self._sink_ops.get_nowait()()
        source_index, position = (tag.source_index, tag.position) if isinstance(tag, _LiveTag) else (tag, None)
        if isinstance(tag, _LiveTag) and tag.captured is not None:
            self.stats.output_delays_ms.append((time.monotonic() - tag.captured) * 1000)
        for sink in list(self.sinks):
            try:
                _write_placed(sink, safe, source_index, position)
            except Exception as exc:  # a vanished virtual camera must not stop the other sinks or the engine
                self.pipeline.faults[f"sink-error:{sink.name}"] += 1  # visible in telemetry and the UI
                if not self._restart_sink(sink, safe, source_index, position):
                    log.error("sink %s failed and was closed: %s", sink.name, exc)
                    self.stopped_outputs[sink.name] = _why_stopped(sink, exc)
                    self.sinks.remove(sink)
                    _close_quietly(sink)
                    if self.stop_without_outputs and not self.sinks:
                        log.error("no output is left to write to: stopping")
                        self.stop_event.set()

    def _restart_sink(self, sink: Sink, safe: SafeFrame, source_index: int | None = None,
                      position: int | None = None) -> bool:
        """A sink that can start again (a recording whose encoder died goes on in a new file) gets this frame, at its
        place (the new file's sound starts there)."""
        restart = getattr(sink, "restart", None)
        try:
            if restart is None or not restart():
                return False
            _write_placed(sink, safe, source_index, position)
            return True
        except Exception as exc:
            log.error("sink %s could not start again: %s", sink.name, exc)
            return False

    def _apply_pending(self) -> None:
        with self._lock:
            pending, self._pending_settings = self._pending_settings, None
            if pending is not None:
                self._settings = pending
        if pending is None:
            return
        previous = self.pipeline.settings
        try:
            self.pipeline.configure(pending)
        except Exception:  # e.g. a backend that cannot load here: keep streaming on the old settings
            log.exception("could not apply new settings; keeping the previous ones")
            self.pipeline.faults["settings-error"] += 1
            self.pipeline.configure(previous)
            with self._lock:
                self._settings = previous
            return
        if pending.lookahead_frames != previous.lookahead_frames and not self.pipeline.offline:
            self._hold_back(self._live_lookahead())  # live only: file mode holds its own count
            self.pipeline.reveal_later(pending.lookahead_frames > 0)
        if (previous.recognition and not pending.recognition) or \
                pending.similarity_threshold > previous.similarity_threshold:
            self.lookahead.hide_kept(self.pipeline.anonymizer)  # frames held must not show whom it now hides

    def wanted_preview(self, timeout: float = 1.0) -> np.ndarray | None:
        """A small copy of the last anonymized frame, for a client's preview; from now on one is made every
        PREVIEW_EVERY_S for PREVIEW_WANTED_S. After a time nobody asked, the one made then is old (from before a
        panic, a facebank change): every caller waits up to `timeout` for a fresh one, and gets None if no frame
        comes (a stalled source)."""
        now = time.monotonic()
        with self._lock:
            if now > self._preview_wanted_until:
                self._preview_made.clear()
                self._preview_at = 0.0  # the next frame out makes one
            self._preview_wanted_until = now + PREVIEW_WANTED_S
        return self.preview if self._preview_made.wait(timeout) else None

    def _update_preview(self, safe: SafeFrame) -> None:
        now = time.monotonic()
        if now > self._preview_wanted_until or now - self._preview_at < PREVIEW_EVERY_S:
            return
        self._preview_at = now
        h, w = safe.image.shape[:2]
        self.preview = cv2.resize(safe.image, (PREVIEW_WIDTH, max(1, round(PREVIEW_WIDTH * h / w))),
                                  interpolation=cv2.INTER_AREA)
        self._preview_made.set()

    def close(self) -> None:
        self.stop_event.set()
        while not self._sink_ops.empty():
            self._sink_ops.get_nowait()()
        for sink in self.sinks:
            _close_quietly(sink)
        self.sinks.clear()
        self.sound.close()
        self.pipeline.close()
        self.source.close()


def _drop_oldest(mailbox: queue.Queue, keep: Callable[[], np.ndarray | None] | None) -> bool:
    """Drop the oldest waiting frame, but not the one `keep()` names (its detection is running: dropping it would
    waste that and make the next frame wait behind it); a one-slot mailbox drops it all the same. `keep` is asked
    under the mailbox's lock, so a detection the frame loop starts meanwhile is seen. Returns whether a frame was
    dropped."""
    with mailbox.mutex:
        items = mailbox.queue
        if not items:
            return False
        kept = keep() if keep is not None else None
        victim = next((k for k, item in enumerate(items) if item[0] is not kept), 0)
        del items[victim]
        mailbox.not_full.notify()
        return True


def _why_stopped(sink: Sink, exc: Exception) -> str:
    """An output's failure in a line for the UI and `engine status`."""
    if getattr(sink, "disk_full", False):
        return f"the disk is full (what was written is in {getattr(sink, 'path', '?')})"
    return str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__


def _close_quietly(sink: Sink) -> None:
    try:
        sink.close()
    except Exception as exc:
        log.error("closing sink %s: %s", sink.name, exc)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
