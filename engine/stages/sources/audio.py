"""The source's sound, fanned out to the stream outputs with its place on the source's timeline.

Audio is raw PCM (s16le, 48 kHz, stereo) from the decoding FFmpeg. Each chunk carries the index of its
first sample on the same clock as the video frame indices (frame i starts at i / fps seconds), so an
output can line the sound up with the frames it sends, however long the anonymizer held them.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from fractions import Fraction

log = logging.getLogger(__name__)

RATE = 48_000
CHANNELS = 2
BYTES_PER_SAMPLE = 2 * CHANNELS  # s16le, interleaved
EARLY_SOUND_S = 2.0  # sound a tap keeps for its first subscriber (AudioTap)...
EARLY_MAX_CHUNKS = 200  # ...and at most this many chunks (~4 s of 1024), should its sample numbers ever go back
MAX_QUEUED_CHUNKS = 2_000  # ~40 s of 1024-sample chunks: far above any video delay, bounds a stuck reader
STALL_LOG_S = 10.0  # a stalled output's dropped sound is logged as a count this often
# An encoder's sound may lag its picture this much before silence fills in (SoundFeed): an SRT source's sound reaches
# the outputs in bursts up to ~0.5 s behind its picture (a review, stop 38: at 0.25 s half of a recording's sound was
# silence); FFmpeg takes picture up to ~0.85 s ahead of its sound (bench/sound_lag.py).
SOUND_SLACK_S = 0.6
# A sound quiet this long is gone (a phone's sound off, a switched source): then silence follows the picture closely,
# as a stream output's FFmpeg takes picture only ~0.1-0.25 s ahead of its sound (bench/sound_lag.py --output stream)
SOUND_QUIET_S = 1.0
QUIET_SLACK_S = 0.05
# Sound further ahead of the picture handed over than this waits (SoundFeed): after an outage the source's sound
# comes back before the picture that says how much of the outage the output skips (stream outputs skip over 2 s).
MAX_SOUND_LEAD_S = 2.0
# A recording's sound is written at most this far past its picture (FileSink), so that where the recording stops (a
# Ctrl-C, a file's end) its sound stops within this of its picture: a file's sound is decoded 0.5 s ahead of its
# frames, and a recording stopped early had up to 0.54 s of sound past its last frame (a review, stop 39). A
# recording's FFmpeg takes sound ahead of its picture without limit; only sound behind it blocks (above).
RECORDING_SOUND_LEAD_S = 0.05
FIRST_SOUND_SAMPLES = 1024  # what an encoder gets before its first frame, silence if no sound came yet
PIPE_BYTES = 1 << 18  # an encoder's sound pipe: 1.4 s of sound
SOUND_POLL_S = 0.05  # how often a quiet SoundFeed looks where the picture is
MAX_HELD_CHUNKS = 500  # ~10 s of sound a SoundFeed holds (before its output's first frame, or far ahead of it)
MAX_PENDING_S = 10.0  # sound held until the first frame's time is known: a sender's sound may lead its picture


class AudioTap:
    """Thread-safe fan-out of (first_sample_index, pcm bytes) chunks to every subscribed output."""

    def __init__(self) -> None:
        self._subscribers: list[queue.Queue[tuple[int, bytes] | None]] = []
        self._drops: dict[queue.Queue, tuple[int, float | None]] = {}  # stalled output -> (dropped, logged at)
        self._lock = threading.Lock()
        # Until the first subscriber: the last EARLY_SOUND_S published, handed to it. A file's sound starts decoding
        # as its tap is made, a network source's as it connects: a source switched in lost its first beep (its
        # first 0.1 s of sound) in the moment before the engine's relay subscribed (ProgramSound).
        self._early: deque[tuple[int, bytes]] | None = deque(maxlen=EARLY_MAX_CHUNKS)

    def subscribe(self) -> queue.Queue[tuple[int, bytes] | None]:
        q: queue.Queue[tuple[int, bytes] | None] = queue.Queue(maxsize=MAX_QUEUED_CHUNKS)
        with self._lock:
            early, self._early = self._early, None
            for item in early or ():
                q.put_nowait(item)  # at most EARLY_SOUND_S: far below the queue's size
            self._subscribers.append(q)
        return q

    def unsubscribe(self, q: queue.Queue) -> None:
        with self._lock:
            if q in self._subscribers:
                self._subscribers.remove(q)
            self._drops.pop(q, None)
        while True:  # wake its reader even if it is full
            try:
                q.put_nowait(None)
                return
            except queue.Full:
                with contextlib.suppress(queue.Empty):
                    q.get_nowait()

    def publish(self, first_sample: int, pcm: bytes) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
            if self._early is not None:
                self._early.append((first_sample, pcm))
                while first_sample - self._early[0][0] > EARLY_SOUND_S * RATE:
                    self._early.popleft()
                return
        for q in subscribers:
            try:
                q.put_nowait((first_sample, pcm))
            except queue.Full:  # an output that stopped reading: it will fill the gap with silence
                self._note_drop(q)

    def _note_drop(self, q: queue.Queue) -> None:
        """A stalled output's dropped sound, logged once, then as a count every STALL_LOG_S (not per chunk:
        ~47 chunks a second would flood the log for as long as the far end stays away)."""
        now = time.monotonic()
        with self._lock:
            if q not in self._subscribers:  # unsubscribed while this chunk was on its way: keep it gone
                return
            dropped, logged_at = self._drops.get(q, (0, None))
            dropped += 1
            due = logged_at is None or now - logged_at >= STALL_LOG_S
            self._drops[q] = (0 if due else dropped, now if due else logged_at)
        if logged_at is None:
            log.warning("an audio output is %d chunks behind; dropping sound for it", q.maxsize)
        elif due:
            log.warning("an audio output is still stalled: %d sound chunks dropped in the last %.0f s", dropped,
                        now - logged_at)

    @property
    def listeners(self) -> int:
        with self._lock:
            return len(self._subscribers)


class PendingAudio:
    """Sound that arrives before its place on the video's clock is known (FFmpeg's first timestamps), capped
    at `max_s` seconds: past that the oldest is dropped (`add` says how many samples), so a picture that comes
    late, or never, cannot grow it without bound. One per decoder session."""

    def __init__(self, max_s: float | None = None) -> None:
        self.max_s = MAX_PENDING_S if max_s is None else max_s
        self.max_bytes = int(self.max_s * RATE) * BYTES_PER_SAMPLE
        self._chunks: deque[bytes] = deque()
        self._bytes = 0
        self._head_dropped = 0  # samples dropped from the front

    def add(self, chunk: bytes) -> int:
        """Hold `chunk`; the number of samples dropped to stay under the cap."""
        self._chunks.append(chunk)
        self._bytes += len(chunk)
        dropped = 0
        while self._bytes > self.max_bytes and len(self._chunks) > 1:
            old = self._chunks.popleft()
            self._bytes -= len(old)
            dropped += len(old) // BYTES_PER_SAMPLE
        self._head_dropped += dropped
        return dropped

    def take(self, first_sample: int) -> tuple[int, bytes]:
        """Everything held, as one chunk, and its first sample's index given where the first chunk received
        starts (`first_sample`): what was dropped moves the start, so the sound keeps its place."""
        start, pcm = first_sample + self._head_dropped, b"".join(self._chunks)
        self._chunks.clear()
        self._bytes = self._head_dropped = 0
        return start, pcm


class PlacedSound:
    """An encoder's sound input, written on the output's own clock: a chunk whose first sample is `first` on the
    source's timeline goes to sample `first - start` of the output. Sound before the output's start is cut, a gap
    (sound the source never sent) is filled with silence, so every later chunk keeps its place."""

    def __init__(self) -> None:
        self.written = 0  # samples written so far

    def write(self, pipe, first: int, pcm: bytes, start: int, end: int | None = None) -> None:
        """`pcm` at its place; with `end`, nothing past output sample `end`."""
        at = first - start
        if end is not None:
            if at >= end:  # all of it past the end: nothing, and no silence up to it (a closing output's sound
                return     # held ahead had been padded up to, up to 2 s past the picture's end)
            pcm = pcm[:(end - at) * BYTES_PER_SAMPLE]
        if at < self.written:  # before the output's start, or overlapping what was written: cut the head
            pcm = pcm[(self.written - at) * BYTES_PER_SAMPLE:]
        elif at > self.written:
            self.pad_to(pipe, at)
        if pcm:
            pipe.write(pcm)
            self.written += len(pcm) // BYTES_PER_SAMPLE

    def pad_to(self, pipe, at: int) -> None:
        """Silence up to output sample `at`, where no sound came for it (sound that comes later for it is cut)."""
        while at > self.written:  # a second at a time: a long gap is no huge buffer
            step = min(at - self.written, RATE)
            pipe.write(bytes(step * BYTES_PER_SAMPLE))
            self.written += step


class SoundFeed:
    """An encoder's sound input, written by a thread of its own: the sound that comes (placed on the source's clock by
    `PlacedSound`), and silence wherever none came by the time the picture is SOUND_SLACK_S past it (QUIET_SLACK_S
    once no sound came for SOUND_QUIET_S); sound more than `max_lead_s` ahead of the picture waits for it.

    FFmpeg takes no picture before the first sound, stops taking picture that runs ahead of its sound (`python
    bench/sound_lag.py`: a recording's encoder 0.85 s behind kept up, 1 s blocked; a stream's 0.1 s kept up, 0.25 s
    blocked), and reads no sound while it waits for picture. So picture and sound are written by threads of their
    own (either may wait on FFmpeg, never on each other), and the sound follows the picture: a source whose sound
    went quiet (a switch, a phone's sound gone, a looped file's short sound, shutdown) had left FFmpeg waiting for
    sound, the picture's writer blocked, and a recording's picture is written on the engine's frame loop.

    `placement()`: None until the output's first frame is placed, then (the source sample at the output's time 0,
    the output sample where the picture handed to FFmpeg ends)."""

    def __init__(self, tap: AudioTap, fd: int, name: str, placement: Callable[[], tuple[int, int] | None],
                 max_lead_s: float = MAX_SOUND_LEAD_S) -> None:
        self.name = name
        self._max_lead = round(max_lead_s * RATE)
        self._tap = tap
        self._chunks: queue.Queue | None = tap.subscribe()
        self._placement = placement
        self._closing = False
        with contextlib.suppress(OSError, AttributeError):  # Linux: more than a second of sound fits in the pipe
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        self._pipe = os.fdopen(fd, "wb", buffering=0)
        self._thread = threading.Thread(target=self._run, name="sound-feed", daemon=True)
        self._thread.start()

    @property
    def open(self) -> bool:
        return self._chunks is not None

    def _run(self) -> None:
        chunks = self._chunks
        assert chunks is not None
        placed, held = PlacedSound(), []  # held: what came before the first frame was placed
        heard = time.monotonic()  # when sound last came
        try:
            while True:
                try:
                    item = chunks.get(timeout=SOUND_POLL_S)
                except queue.Empty:
                    item = ()
                if item is None:  # unsubscribed: the output is closing
                    self._finish(placed, held)
                    break
                if item:
                    if not item[1]:  # a source switched in goes on from here (ProgramSound): what is held past it goes
                        _replace_from(held, item[0])
                    held.append(item)
                    heard = time.monotonic()
                where = self._placement()
                if where is None:
                    del held[:-MAX_HELD_CHUNKS]  # before the first frame only the last seconds can matter
                    continue
                start, until = where
                lead = until + self._max_lead
                end = until if self._closing else None  # closing: the sound ends where the picture does
                while held and held[0][0] - start < lead:
                    first, pcm = held.pop(0)
                    placed.write(self._pipe, first, pcm, start, end=end)
                del held[:-MAX_HELD_CHUNKS]
                slack = QUIET_SLACK_S if time.monotonic() - heard > SOUND_QUIET_S else SOUND_SLACK_S
                placed.pad_to(self._pipe, max(until - round(slack * RATE), FIRST_SOUND_SAMPLES))
        except (OSError, ValueError) as exc:  # the encoder died or was stopped: its picture pipe says so too
            log.debug("%s: sound pipe closed (%s)", self.name, exc)
        finally:
            with contextlib.suppress(OSError, ValueError):
                self._pipe.close()

    def _finish(self, placed: PlacedSound, held: list) -> None:
        """The output is closing: its sound ends where its picture does (the sound held for later is cut there, and
        silence fills up to there)."""
        where = self._placement()
        if where is None:
            return
        start, until = where
        for first, pcm in held:
            placed.write(self._pipe, first, pcm, start, end=until)
        placed.pad_to(self._pipe, until)

    def close(self, wait_s: float = 0.0) -> None:
        """End the sound: what came is written, then the pipe is closed (the encoder's end of sound). Waits up to
        `wait_s` for that (after the picture's end FFmpeg reads the sound to its end; a dead encoder ends it too)."""
        self._closing = True
        chunks, self._chunks = self._chunks, None
        if chunks is not None:
            self._tap.unsubscribe(chunks)
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=wait_s)


def _replace_from(held: list[tuple[int, bytes]], first: int) -> None:
    """A source switched in (ProgramSound's empty chunk at `first`): the old source's sound held from there on, decoded
    ahead of its frames (0.5 s for a file), is dropped for the new one's. Only there: elsewhere a chunk that starts
    before what is held ends (a loop's sound starting before its picture, a reconnect's first merged chunk) is cut
    by PlacedSound as before, and the sound held keeps its place. Sound already written keeps its place too."""
    while held and held[-1][0] >= first:
        held.pop()
    if held:
        start, pcm = held[-1]
        keep = (first - start) * BYTES_PER_SAMPLE
        if keep < len(pcm):
            held[-1] = (start, pcm[:keep])


MAX_SWITCH_HELD_S = 5.0  # a new source's sound held until its first frame says where it goes on the program's clock


def source_sound(source) -> AudioTap | None:
    """A source's own sound tap (an FFmpeg-decoded source with sound), else None."""
    return source.audio if getattr(source, "has_audio", False) else None  # an error in it is an error, not silence


class ProgramSound:
    """The outputs' frame numbers and sound across source switches (the engine's `replace_source`).

    Outputs place each frame by its source frame number and its sound by sample number on the same clock (frame i
    at i / fps). A new source starts its own numbers again, and has its own tap: the outputs already running had
    been left on the old tap, with silence from the switch on. Here the program's clock goes on instead: a new
    source's frame numbers are moved by an offset, set at its first frame so that it follows the last frame handed
    out (and scaled to the outputs' rate, the first source's, where its own differs: the outputs repeat frames for
    a slower one), and its sound is relayed into the one tap the outputs hold, moved by the same offset. The first
    source's numbers are its own and its tap
    is the program's, so outputs opened on it need no change. An output that started without sound (the first
    source had none) stays without. Everything is published under this object's lock, so the tap gets the sound in
    order (the lock order is this one, then the tap's, which never calls back).
    """

    def __init__(self, source, fps: float | Fraction) -> None:
        self.fps_fraction = Fraction(fps).limit_denominator(1001)  # the outputs' rate: the first source's
        self.fps = max(float(fps), 1.0)
        self._scale = 1.0  # program frames per frame of the source playing: its rate against the outputs'
        self._first = source
        self._tap: AudioTap | None = None
        self._switched = False
        self._offset: int | None = 0  # program frame number = source frame number + offset; None until known
        self._last = -1  # the last program frame number handed out
        self._position_offset: int | None = None  # program number - timeline position, for frames with no number
        self._cut = 0  # no relayed sound goes before this sample: the old source's is there
        self._held: list[tuple[int, bytes]] = []
        self._relay: tuple[AudioTap, queue.Queue] | None = None
        self._lock = threading.Lock()

    @property
    def tap(self) -> AudioTap | None:
        """The tap the outputs take their sound from: the first source's own until a switch (None if it has
        none), then the program's relay."""
        with self._lock:
            if self._tap is not None or self._switched:
                return self._tap
        tap = source_sound(self._first)  # outside the lock: ffprobe, and a file's sound decoder started
        with self._lock:
            if self._tap is None and not self._switched:
                self._tap = tap
            return self._tap

    @property
    def offset(self) -> int | None:
        """The program's number of the current source's frame 0 (None until its first frame after a switch)."""
        with self._lock:
            return self._offset

    def index(self, source_index: int | None) -> int | None:
        """The program's number for the source's frame `source_index` (None stays None: a camera's frames go right
        after the last; `placed` moves the program's clock on with them)."""
        with self._lock:
            if source_index is None:
                return None
            if self._scale != 1.0:  # another rate: its frames on the outputs' (each output fills or repeats as due)
                source_index = round(source_index * self._scale)
            if self._offset is None:  # the new source's first frame: it follows the last one handed out
                self._offset = self._last + 1 - source_index
                held, self._held = self._held, []
                for first, pcm in held:
                    self._publish(first, pcm)
            program = source_index + self._offset
            self._last = max(self._last, program)
            return program

    def placed(self, program: int | None, position: int) -> None:
        """A frame numbered `program` (None: a camera's) went to `position` on the engine's timeline: frames with no
        number move the program's clock on with the timeline, so that a source switched in after a camera follows
        the frames the outputs placed meanwhile (its sound had landed before its picture, where silence was)."""
        with self._lock:
            if program is not None:
                self._position_offset = program - position
            elif self._position_offset is not None:
                self._last = max(self._last, position + self._position_offset)

    def switched(self, source) -> None:
        """`source` plays from its next frame on (the old one is closed): its sound is relayed from now on."""
        self._stop_relay()
        first_tap = None if self._switched else _held_tap(self._first)  # outside the lock: may ask ffprobe
        tap = source_sound(source)
        with self._lock:
            if not self._switched:  # outputs opened later take the program's tap: the first source's, if any held it
                self._tap = self._tap or first_tap or AudioTap()
                self._switched = True
            self._offset, self._held = None, []
            info = getattr(source, "info", None)
            self._scale = self.fps / max(float(info.fps), 1.0) if info is not None else 1.0
            # The old source's sound decoded ahead of its frames (0.5 s for a file) is not the program's past its last
            # frame: an empty chunk there makes each output drop what it holds from that place on (SoundFeed), so
            # the new source's sound takes its place; relayed sound before it is cut (a video that starts after its
            # sound). The old source is closed and its relay stopped: nothing of it comes after this.
            self._cut = round((self._last + 1) * RATE / self.fps)
            self._tap.publish(self._cut, b"")
            if tap is None:
                return
            chunks = tap.subscribe()
            self._relay = (tap, chunks)
        threading.Thread(target=self._run_relay, args=(chunks,), name="sound-relay", daemon=True).start()

    def close(self) -> None:
        self._stop_relay()

    def _publish(self, first: int, pcm: bytes) -> None:
        """Under the lock: a relayed chunk on the program's clock, nothing of it before the cut."""
        first += round((self._offset or 0) * RATE / self.fps)
        if first < self._cut:
            pcm = pcm[(self._cut - first) * BYTES_PER_SAMPLE:]
            first = self._cut
        if pcm and self._tap is not None:
            self._tap.publish(first, pcm)

    def _stop_relay(self) -> None:
        with self._lock:
            relay, self._relay = self._relay, None
        if relay is not None:
            relay[0].unsubscribe(relay[1])  # its thread sees the end and stops

    def _run_relay(self, chunks: queue.Queue) -> None:
        limit = int(MAX_SWITCH_HELD_S * RATE)
        while (item := chunks.get()) is not None:
            with self._lock:
                if self._relay is None or self._relay[1] is not chunks:
                    return  # replaced meanwhile
                if self._offset is None:  # before the new source's first frame: its place is not known yet
                    self._held.append(item)
                    while self._held and item[0] - self._held[0][0] > limit:
                        self._held.pop(0)
                    continue
                self._publish(*item)


def _held_tap(source) -> AudioTap | None:
    """The tap outputs opened on `source` hold, if any: a file's only once its sound was started (not started now, for
    a source being closed), a network source's whatever its last connection carried."""
    if not getattr(source, "audio_started", True):
        return None
    tap = getattr(source, "audio", None)
    return tap if isinstance(tap, AudioTap) else None
