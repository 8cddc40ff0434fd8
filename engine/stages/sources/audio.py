"""The source's sound, fanned out to the stream outputs with its place on the source's timeline.

Audio is raw PCM (s16le, 48 kHz, stereo) from the decoding FFmpeg. Each chunk carries the index of its
first sample on the same clock as the video frame indices (frame i starts at i / fps seconds), so an
output can line the sound up with the frames it sends, however long the anonymizer held them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable

log = logging.getLogger(__name__)

RATE = 48_000
CHANNELS = 2
BYTES_PER_SAMPLE = 2 * CHANNELS  # s16le, interleaved
MAX_QUEUED_CHUNKS = 2_000  # ~40 s of 1024-sample chunks: far above any video delay, bounds a stuck reader
STALL_LOG_S = 10.0  # a stalled output's dropped sound is logged as a count this often
MAX_PENDING_S = 10.0  # sound held until the first frame's time is known: a sender's sound may lead its picture


class AudioTap:
    """Thread-safe fan-out of (first_sample_index, pcm bytes) chunks to every subscribed output."""

    def __init__(self) -> None:
        self._subscribers: list[queue.Queue[tuple[int, bytes] | None]] = []
        self._drops: dict[queue.Queue, tuple[int, float | None]] = {}  # stalled output -> (dropped, logged at)
        self._lock = threading.Lock()

    def subscribe(self) -> queue.Queue[tuple[int, bytes] | None]:
        q: queue.Queue[tuple[int, bytes] | None] = queue.Queue(maxsize=MAX_QUEUED_CHUNKS)
        with self._lock:
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

    def write(self, pipe, first: int, pcm: bytes, start: int) -> None:
        at = first - start
        if at < self.written:  # before the output's start, or overlapping what was written: cut the head
            pcm = pcm[(self.written - at) * BYTES_PER_SAMPLE:]
        elif at > self.written:
            pipe.write(bytes((at - self.written) * BYTES_PER_SAMPLE))
            self.written = at
        if pcm:
            pipe.write(pcm)
            self.written += len(pcm) // BYTES_PER_SAMPLE

    def pad_to(self, pipe, at: int) -> None:
        """Silence up to output sample `at`, where no sound came for it (sound that comes later for it is cut)."""
        if at > self.written:
            pipe.write(bytes((at - self.written) * BYTES_PER_SAMPLE))
            self.written = at


def pump_sound(fd: int, chunks: queue.Queue, ready: threading.Event, start: Callable[[], int | None],
               name: str) -> None:
    """A writer thread's body: once `ready` (the output's first frame is placed), every chunk from `chunks` into the
    pipe `fd` at its place, `start()` being the source sample of the output's time 0 (None: the output ended).
    Returns at the subscription's end mark (AudioTap.unsubscribe), closing the pipe: the encoder's end of sound."""
    placed = PlacedSound()
    with os.fdopen(fd, "wb", buffering=0) as pipe:
        ready.wait()
        try:
            while (item := chunks.get()) is not None and (origin := start()) is not None:
                placed.write(pipe, item[0], item[1], origin)
        except (BrokenPipeError, OSError) as exc:
            log.debug("%s: sound pipe closed (%s)", name, exc)
