"""Decode any FFmpeg input (SRT, RTMP, RTSP, HTTP, V4L2, files) in a child process: raw frames on stdout,
the sound as 48 kHz PCM on a second pipe.

Pixel format on the pipe (bench/bench_stream_pipes.py, CPU per 1080p frame): a BT.601 or untagged limited-range
stream comes as I420 and OpenCV makes it BGR here (1.6-1.9 ms less CPU a frame in all: swscale's conversion leaves
the decoder and the pipe carries half the bytes). A BT.709 stream (phones' HD) comes as BGR converted by FFmpeg:
OpenCV's I420 conversion knows only BT.601 (16 levels off in saturated colours), and a BT.709 correction here
cost more than it saved. Streams up to 1080p60 are decoded on one thread: less CPU, and two frames less delay
than FFmpeg's frame threads.

Why a child process and not OpenCV: OpenCV's bundled FFmpeg has no SRT and drops the sound; the system
FFmpeg has both (`ffmpeg -protocols`). The decoder runs in its own process, so a stalled network read
never holds the GIL, and its CPU is measurable on its own (bench/bench_stream.py).

Fail closed: a stream that stalls (no frame for `stall_s`), ends, or changes size makes `read()` return
None; the engine then reports the source "lost" and calls `reopen()` until frames come back. FFmpeg
itself scales a mid-stream size change to the first size, which would squash the picture silently, so
the size it configures its filters for is read from its log and a change restarts the decoder at the new
size (the sinks are told through `info`).

Timeline: frame i of the source starts at i / fps seconds, audio sample k at k / 48000 s, both counted
from the first frame and kept running across reconnects by the wall clock, so an output can keep sound
and picture aligned however long the anonymizer holds a frame.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import shutil
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from fractions import Fraction

import cv2
import numpy as np

from engine.stages.source import SourceError, SourceInfo
from engine.stages.sources.audio import BYTES_PER_SAMPLE, CHANNELS, RATE, AudioTap, PendingAudio
from engine.stream_options import TLS_HINT, certificate_refused

log = logging.getLogger(__name__)

_GRAPH_INPUT = re.compile(r"\[graph \d+ input from stream \d+:\d+ @ [^\]]+\] w:(\d+) h:(\d+)")
_OUT_AUDIO = re.compile(r"\s+Stream #0:\d+(\(\w+\))?: Audio")  # "(eng)": a language tag
_FIRST_PTS = re.compile(r"^encoder <- type:(video|audio) frame_pts:-?\d+ frame_pts_time:(-?[\d.e+-]+)")
_OUT_FPS = re.compile(r"Video: rawvideo.*?, ([\d.]+)(k?) fps")  # "90k fps": a rate FFmpeg could not find
# The receiver's input video stream: "Stream #0:0[0x100]: Video: h264 (High) (...), yuv420p(tv, bt709, progressive),
# 1920x1080 [SAR 1:1 DAR 16:9], 30 fps, ..."; the parentheses: range, matrix[/primaries/transfer], field order.
_IN_VIDEO = re.compile(r"^\s+Stream #0:\d+\S*: Video: .*?, (\w+)(?:\(([^()]*)\))?, (\d+)x(\d+)")
_IN_SAR = re.compile(r"\[SAR (\d+):(\d+) ")
_OUT_SIZE = re.compile(r"Video: rawvideo.*?, (\d+)x(\d+)")
# Square pixels (an anamorphic sender's 720x480 at SAR 32:27 shown 854x480): the narrow side of its pixels
# stretched, as files are read (engine/stages/source.py `square_pixels_size`); evaluated by FFmpeg per stream
SQUARE_PIXELS = ("scale=w='if(gt(sar,1),trunc(iw*sar/2+0.5)*2,iw)':h='if(lt(sar,1),trunc(ih/sar/2+0.5)*2,ih)',"
                 "setsar=1")
_IN_FPS = re.compile(r", (\d+(?:\.\d+)?) fps")  # a real rate: "tbr" alone is often a guess (90k)
_IN_CODEC = re.compile(r"Video: (\w+)")
UNSET_SOUND = "sample rate not set"  # the receiver's muxer on a sound track whose parameters were never seen
I420_MATRICES = ("", "unknown", "bt470bg", "smpte170m")  # OpenCV's I420 -> BGR is BT.601 limited range
SINGLE_THREAD_MAX_RATE = 1920 * 1080 * 60  # pixels a second one decoder thread keeps up with (1080p: 6.5 ms/frame)
AUDIO_CHUNK = 1024 * BYTES_PER_SAMPLE
DECODE_TS = ["-probesize", "500000", "-analyzeduration", "500000", "-f", "mpegts", "-i", "pipe:0"]
# A stream whose sound comes first (a sender joined mid-GOP: the dev clip from 1.4 s has 1.4 s of sound before its
# first keyframe) left both probes without the picture's size and rate: the decoder wrote "90k fps", the video
# reader waited on it for ever, and the decoder, blocked on its full pipe, held the receiver and a listener's port
# (a review, stop 44). Where the receiver read no rate, the decoder probes long enough for a 2 s GOP (that
# probe's whole length is spent: 3 s, so not for every stream); where it did, the decoder is given that rate.
DECODE_TS_LONG = ["-probesize", "5000000", "-analyzeduration", "3000000", "-f", "mpegts", "-i", "pipe:0"]
MAX_FPS = 240.0  # an output rate above this is FFmpeg's guess (90k: the MPEG-TS clock), not the picture's
# No size and rate stated by then ends the connection. The decoder states them at its first decoded frame: a sender
# joined mid-GOP is waited on up to its next keyframe (IRL apps: 1-2 s; OBS's "auto" on a custom server: 250 frames,
# 8.3 s at 30 fps, 10 s at 25), plus the long probe.
CONFIGURE_S = 15.0
FRAME_QUEUE = 3  # frames decoded but not yet taken; older ones are dropped (the engine keeps only the newest)


@dataclass
class _Session:
    """One connection: the receiver (network in, packets copied out as MPEG-TS), the decoder, and what
    their logs said. Local inputs (V4L2) have no receiver: the decoder reads the device itself."""

    receiver: subprocess.Popen | None
    proc: subprocess.Popen | None = None  # the decoder, started once the receiver says what the input holds
    audio_fd: int | None = None
    size: tuple[int, int] | None = None  # the frames on the decoder's pipe
    input_size: tuple[int, int] | None = None  # the stream's frames as decoded (a change restarts the decoder)
    squared: bool = False  # the stream's pixels are not square: the decoder stretches them (SQUARE_PIXELS)
    sound_unset: bool = False  # the receiver could not write a sound track it never saw a packet of (UNSET_SOUND)
    fps: float | None = None
    size_changed: bool = False
    has_audio: bool | None = None
    video_line: str | None = None  # the receiver's input video stream line: what the decoder will get
    pix_fmt: str = "bgr24"  # on the decoder's pipe: "bgr24", or "yuv420p" converted here (decode_options)
    started: float = field(default_factory=time.monotonic)
    rate_hint: float | None = None  # the rate the stream had before its size changed (the same connection)
    decoding_since: float | None = None  # when the decoder started: a sender reached the receiver
    last_frame: float | None = None
    mapped: threading.Event = field(default_factory=threading.Event)
    configured: threading.Event = field(default_factory=threading.Event)
    base_ready: threading.Event = field(default_factory=threading.Event)
    base_index: int = 0
    first_pts: dict = field(default_factory=dict)  # "video"/"audio" -> first output pts (s), from -debug_ts
    pts_known: threading.Event = field(default_factory=threading.Event)
    frames: queue.Queue = field(default_factory=lambda: queue.Queue(maxsize=FRAME_QUEUE))
    log_tail: deque = field(default_factory=lambda: deque(maxlen=20))
    audio_thread: threading.Thread | None = None  # joined at the session's end: no sound of it comes after

    def alive(self) -> bool:
        return any(p.poll() is None for p in self.processes())

    def processes(self) -> list[subprocess.Popen]:
        return [p for p in (self.receiver, self.proc) if p is not None]


class FFmpegSource:
    """Frames from an FFmpeg input. `kind` is "stream"; `audio` fans out the sound; `last_index` is the
    source frame index of the frame `read()` returned last."""

    def __init__(self, spec: str, input_args: list[str], url: str, hint: str, *, kind: str = "stream",
                 open_timeout_s: float = 20.0, stall_s: float = 2.0, retry_s: float = 10.0,
                 waits_for_sender: bool = False, remux: bool = True) -> None:
        from engine.stages.sinks.stream import redact  # lazy: the stream sink imports this package's audio

        # The spec without secrets is what telemetry, logs and messages show; FFmpeg alone gets `url`.
        self.spec, self.kind, self.loop = redact(spec), kind, False
        self.remux = remux
        self.url, self.hint = url, hint.replace(spec, self.spec)
        self._input_args = input_args
        self._checks_certificate = "-tls_verify" in input_args  # Tls.ffmpeg_args: a refusal then ends the opening
        self.stall_s, self.retry_s, self.waits_for_sender = stall_s, retry_s, waits_for_sender
        self.audio = AudioTap()
        self.audio_dropped_samples = 0  # sound that ran too far ahead of the first picture (PendingAudio)
        self.has_audio = False  # what the last connection's input held
        self._soundless = False  # its sound track could not be copied (UNSET_SOUND): later connections take none
        self.dropped = 0
        self.state = "connecting"
        self.last_index: int | None = None
        self._next_index = 0
        self._t0: float | None = None
        self._fps = 30.0
        self._first: tuple[int, np.ndarray] | None = None
        self._session: _Session | None = None
        self._force_bgr = False  # set once a stream came at an odd size (I420 on the pipe needs even sizes)
        self._last_errors: list[str] = []  # FFmpeg's errors in the last session that had some: why it failed
        try:
            connected = self._connect(open_timeout_s)
        except BaseException:  # Ctrl-C while waiting for a sender: no FFmpeg child outlives us, holding the port
            self._stop_session()
            raise
        if not connected:
            self._stop_session()
            raise SourceError(f"{self.hint} (no frame within {open_timeout_s:.0f} s{self._why()})")
        self.info = self._make_info()

    # --- the source interface ----------------------------------------------------------------------------
    @property
    def fps_fraction(self) -> Fraction:
        return Fraction(self.info.fps).limit_denominator(1001)

    def read(self) -> np.ndarray | None:
        """The next frame, or None when the stream stalled, ended or changed size (then call `reopen`)."""
        if self._first is not None:
            (self.last_index, frame), self._first = self._first, None
            return frame
        session = self._session
        if session is None:
            return None
        try:
            item = session.frames.get(timeout=self.stall_s)
        except queue.Empty:
            return self._lost(f"no frame for {self.stall_s:.1f} s")
        if session.size_changed:
            return self._restart_decoder(session)
        if item is None:
            return self._lost("the stream ended" + self._why())
        self.last_index, frame = item
        return _to_bgr(frame)

    def reopen(self, attempts: int = 1, wait: float = 0.5) -> bool:
        """Start (or keep waiting on) a decoder; True once it gives a frame. A listener keeps listening
        between calls, so a phone that reconnects finds the port open."""
        for _ in range(attempts):
            session = self._session
            alive = session is not None and session.alive()
            stale = alive and time.monotonic() - _waiting_since(session, self.waits_for_sender) > self.retry_s
            if not alive or stale:
                self._stop_session()
                self.state = "reconnecting"
            if self._connect(max(wait, 0.5)):
                self.info = self._make_info()
                return True
        return False

    def close(self) -> None:
        self._stop_session()

    # --- sessions ----------------------------------------------------------------------------------------
    def _connect(self, timeout_s: float) -> bool:
        """Wait up to `timeout_s` for a first frame, (re)starting the decoder whenever it exits: a caller
        whose far end is not up yet fails at once and must try again."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            session = self._session
            if session is None:
                self._session = session = self._start()
            try:
                item = session.frames.get(timeout=min(0.2, max(0.01, deadline - time.monotonic())))
            except queue.Empty:
                if session.alive() or not session.frames.empty():
                    continue
                item = None
            if item is None:  # it exited before a frame (refused, no far end yet): try again shortly
                self._stop_session()
                if self._checks_certificate and (refused := certificate_refused(self._last_errors)) is not None:
                    raise SourceError(f"{self.hint}: the server's certificate is not trusted "
                                      f"({refused.replace(self.url, self.spec)}); {TLS_HINT}")
                time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
                continue
            self._first = (item[0], _to_bgr(item[1]))
            self.has_audio = bool(session.has_audio)
            self.state = "running"
            return True
        return False

    def _start(self) -> _Session:
        ffmpeg = shutil.which("ffmpeg")
        if ffmpeg is None:
            raise SourceError("streams need ffmpeg on PATH (Debian: `apt-get install ffmpeg`)")
        if not self.remux:
            session = _Session(None, has_audio=False)
            session.mapped.set()
            self._start_decoder(session, ffmpeg, [*self._input_args, "-i", self.url], subprocess.DEVNULL)
            return session
        # The receiver holds the one network connection and copies its packets out; it tells whether the
        # input has sound before the decoder starts, so a silent stream is not dropped and reconnected.
        sound = [] if self._soundless else ["-map", "0:a:0?"]
        cmd = [ffmpeg, "-hide_banner", "-nostdin", "-nostats", "-v", "info", *self._input_args, "-i", self.url,
               "-map", "0:v:0", *sound, "-c", "copy", "-flush_packets", "1", "-max_interleave_delta", "1",
               "-f", "mpegts", "pipe:1"]  # no interleaving wait: a sender that batches its sound must not batch frames
        log.debug("receiver: %s", self._loggable(cmd))
        receiver = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        session = _Session(receiver)
        threading.Thread(target=self._read_receiver_log, args=(session, ffmpeg), name="receiver-log",
                         daemon=True).start()
        return session

    def _read_receiver_log(self, session: _Session, ffmpeg: str) -> None:
        """Start the decoder as soon as the receiver lists its output streams (sound or not)."""
        assert session.receiver is not None and session.receiver.stderr is not None
        in_output = False
        for raw in session.receiver.stderr:
            line = raw.decode(errors="replace").rstrip()
            session.log_tail.append(line)
            session.sound_unset = session.sound_unset or UNSET_SOUND in line
            if line.startswith("Output #0"):
                in_output, session.has_audio = True, False
            elif not in_output and session.video_line is None and _IN_VIDEO.match(line):
                session.video_line = line
            elif in_output and _OUT_AUDIO.match(line):
                session.has_audio = True
            elif line.startswith("Stream mapping:") and not session.mapped.is_set():
                self._start_decoder_after_mapping(session, ffmpeg)
        if not session.mapped.is_set():  # never connected: `_connect` retries
            session.mapped.set()
            self._offer(session, None)
        if not self._soundless and session.sound_unset:
            # A sound track with nothing sent on it yet (a muted phone microphone): FFmpeg cannot write its header
            # and the receiver exits, with the sender's connection, on every try, and no picture ever came out.
            self._soundless = True
            log.warning("source %s: its sound track has carried nothing yet, so it cannot be copied; its picture is "
                        "taken without sound from the next connection (restart the source to take sound again)",
                        self.spec)

    def _start_decoder_after_mapping(self, session: _Session, ffmpeg: str) -> None:
        session.mapped.set()
        if session is not self._session:
            return
        self._start_decoder(session, ffmpeg, DECODE_TS if self._known_rate(session) else DECODE_TS_LONG,
                            session.receiver.stdout if session.receiver else None)

    def _start_decoder(self, session: _Session, ffmpeg: str, input_args: list[str], stdin) -> None:
        audio_r, audio_w = os.pipe() if session.has_audio else (None, None)
        session.pix_fmt, threads = decode_options(None if self._force_bgr else session.video_line)
        session.decoding_since = time.monotonic()
        # -debug_ts: the first video frame's and first audio frame's output times, so the sound is placed
        # on the frames' clock exactly (a stream often starts its sound before its first keyframe).
        # The rate the receiver read from the stream, given: the decoder's own short probe may miss it (sound first)
        rate = ["-r", f"{fps:g}"] if (fps := self._known_rate(session)) else []
        # An anamorphic sender, searched as stored, left a face three times narrower unseen (SAR 32:27: 60 of 300)
        session.squared = session.squared or _anamorphic(session.video_line)
        square = ["-vf", SQUARE_PIXELS] if session.squared else []
        cmd = [ffmpeg, "-hide_banner", "-nostdin", "-nostats", "-v", "verbose", "-debug_ts", *threads, *input_args,
               "-map", "0:v:0", *square, "-f", "rawvideo", "-pix_fmt", session.pix_fmt, "-fps_mode", "cfr", *rate,
               "pipe:1"]
        if audio_w is not None:
            # async resampling pads gaps with silence, so sample count stays time on the video's clock
            cmd += ["-map", "0:a:0", "-af", "aresample=async=1000", "-ac", str(CHANNELS), "-ar", str(RATE),
                    "-f", "s16le", f"pipe:{audio_w}"]
        log.debug("decoder: %s", self._loggable(cmd))
        session.proc = subprocess.Popen(cmd, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        pass_fds=(audio_w,) if audio_w is not None else ())
        session.audio_fd = audio_r
        if audio_w is not None:
            os.close(audio_w)
        threading.Thread(target=self._read_log, args=(session,), name="decoder-log", daemon=True).start()
        threading.Thread(target=self._read_video, args=(session,), name="decoder-video", daemon=True).start()
        if audio_r is not None:
            session.audio_thread = threading.Thread(target=self._read_audio, args=(session,), name="decoder-audio",
                                                    daemon=True)
            session.audio_thread.start()

    @staticmethod
    def _known_rate(session: _Session) -> float | None:
        return stated_fps(session.video_line) or session.rate_hint

    def _stop_session(self) -> None:
        session, self._session = self._session, None
        if session is None:
            return
        if errors := _error_lines(session.log_tail):  # a session stopped mid-connect says nothing new
            self._last_errors = errors
        session.mapped.set()
        for proc in session.processes():
            if proc.poll() is None:
                proc.kill()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                log.error("ffmpeg pid %d did not exit", proc.pid)
        # Its sound pipe ends with the decoder: the chunk read last is published before this returns, so a source
        # closed at a switch sends nothing after the switch's cut (ProgramSound; a review measured up to 21 ms of it).
        if session.audio_thread is not None and session.audio_thread is not threading.current_thread():
            session.audio_thread.join(timeout=2.0)

    def _read_log(self, session: _Session) -> None:
        assert session.proc is not None and session.proc.stderr is not None
        in_output = False  # the rate is the *output's*: a raw input (V4L2 YUYV) also says "rawvideo ... fps"
        for raw in session.proc.stderr:
            line = raw.decode(errors="replace").rstrip()
            session.log_tail.append(line)
            if line.startswith("encoder <- "):
                self._note_first_pts(session, line)
                continue
            in_output = in_output or line.startswith("Output #")
            if m := _GRAPH_INPUT.search(line):
                size = (int(m.group(1)), int(m.group(2)))
                if session.input_size is None:
                    session.input_size = size
                    if not session.squared:
                        session.size = size
                elif size != session.input_size:
                    log.warning("%s changed size %dx%d -> %dx%d", self.spec, *session.input_size, *size)
                    session.size_changed = True
            elif in_output and (m := _OUT_FPS.search(line)) and session.fps is None:
                if session.squared and (z := _OUT_SIZE.search(line)):
                    session.size = (int(z.group(1)), int(z.group(2)))  # stretched to square pixels
                fps = float(m.group(1)) * (1000 if m.group(2) else 1)
                if fps > MAX_FPS:
                    log.warning("source %s: the decoder found no frame rate (%g fps); this connection is ended",
                                self.spec, fps)
                session.fps = fps if fps <= MAX_FPS else None
                session.configured.set()
        session.configured.set()  # the process ended: unblock the video reader

    @staticmethod
    def _note_first_pts(session: _Session, line: str) -> None:
        if session.pts_known.is_set() or not (m := _FIRST_PTS.match(line)):
            return
        session.first_pts.setdefault(m.group(1), float(m.group(2)))
        if len(session.first_pts) == 2:
            session.pts_known.set()

    def _read_video(self, session: _Session) -> None:
        assert session.proc is not None and session.proc.stdout is not None
        if not session.configured.wait(CONFIGURE_S):
            log.warning("source %s: the decoder said no picture size and rate within %.0f s; this connection is "
                        "ended", self.spec, CONFIGURE_S)
        if session.size is None or session.fps is None:
            session.proc.kill()  # it may be blocked on its full pipe, holding the receiver (and a listener's port)
            self._offer(session, None)
            return
        w, h = session.size
        i420 = session.pix_fmt == "yuv420p"
        if i420 and (w % 2 or h % 2):  # I420 of an odd size is not OpenCV's layout: this stream goes BGR from now on
            log.warning("source %s: odd size %dx%d; decoding to BGR", self.spec, w, h)
            self._force_bgr = True
            session.size_changed = True  # read() restarts the decoder (as BGR); the sender's connection stays up
            session.frames.put(None)
            return
        shape = (h * 3 // 2, w) if i420 else (h, w, 3)
        n = 0
        while True:
            frame = np.empty(shape, np.uint8)  # read straight into the frame: no copy per frame
            if not _read_into(session.proc.stdout, memoryview(frame).cast("B")):
                break
            if n == 0:
                self._begin_timeline(session)
            self._offer(session, (session.base_index + n, frame))
            n += 1
        self._offer(session, None)

    def _begin_timeline(self, session: _Session) -> None:
        """The first frame of a session: where it sits on the source's clock (after a gap, by the wall clock)."""
        now = time.monotonic()
        self._fps = session.fps or self._fps
        if self._t0 is None:
            self._t0 = now
        session.base_index = max(self._next_index, round((now - self._t0) * self._fps))
        session.base_ready.set()

    def _offer(self, session: _Session, item: tuple[int, np.ndarray] | None) -> None:
        if item is not None:
            self._next_index = item[0] + 1
            session.last_frame = time.monotonic()
        while True:
            try:
                session.frames.put_nowait(item)
                return
            except queue.Full:  # the engine keeps only the newest frame anyway; do not back up the decoder
                try:
                    session.frames.get_nowait()
                    self.dropped += 1
                except queue.Empty:
                    pass

    def _read_audio(self, session: _Session) -> None:
        """Read the sound without ever blocking FFmpeg; publish it once the video's clock is known."""
        assert session.audio_fd is not None
        sample, pending = None, PendingAudio()
        with os.fdopen(session.audio_fd, "rb", buffering=0) as pipe:
            while chunk := _read_exact(pipe, AUDIO_CHUNK, partial=True):
                if sample is None:
                    self._count_dropped_audio(pending.add(bytes(chunk)), pending.max_s)  # capped
                    if not (session.base_ready.is_set() and session.pts_known.is_set()):
                        continue
                    lead = session.first_pts["audio"] - session.first_pts["video"]  # sound before the 1st frame: < 0
                    sample, chunk = pending.take(round(session.base_index * RATE / self._fps + lead * RATE))
                self.audio.publish(sample, chunk)
                sample += len(chunk) // BYTES_PER_SAMPLE

    def _count_dropped_audio(self, samples: int, cap_s: float) -> None:
        if samples and not self.audio_dropped_samples:  # logged once per source; the count goes on
            log.warning("source %s: its sound runs over %g s ahead of its first picture; the oldest is dropped "
                        "(counted: audio_dropped_samples)", self.spec, cap_s)
        self.audio_dropped_samples += samples

    def _restart_decoder(self, session: _Session) -> None:
        """A new size: decode again from the next keyframe at that size; the connection stays up."""
        log.warning("source %s: the picture size changed from %dx%d; restarting the decoder", self.spec,
                    self.info.width, self.info.height)
        self.state = "reconnecting"
        if session.receiver is None or session.receiver.poll() is not None:
            return self._lost("the picture size changed")
        # No stream line: the old one describes the old stream; a sender that retags its colours with the new
        # size would be converted wrongly. BGR from FFmpeg follows the tags frame by frame.
        # Its pixel aspect is not known either: squared by FFmpeg whatever it is (a no-op at 1:1), the size read
        # from the decoder's output line (an HD camera switched to an SD widescreen one behind an encoder box).
        fresh = _Session(session.receiver, has_audio=session.has_audio, video_line=None, squared=True,
                         rate_hint=session.fps or stated_fps(session.video_line))  # read mid-GOP: the rate given
        fresh.mapped.set()
        if session.proc is not None:
            session.proc.kill()
            session.proc.wait()
        self._session = fresh
        ffmpeg = shutil.which("ffmpeg") or "ffmpeg"
        self._start_decoder(fresh, ffmpeg, DECODE_TS if self._known_rate(fresh) else DECODE_TS_LONG,
                            session.receiver.stdout)
        return None

    def _lost(self, why: str) -> None:
        log.warning("source %s: %s", self.spec, why)
        self.state = "lost"
        self._stop_session()
        return None

    def _loggable(self, cmd: list[str]) -> str:
        """An FFmpeg command for the log, its URL without the passphrase or stream key (as `spec` is shown)."""
        from engine.stages.sinks.stream import redact

        return " ".join(redact(arg) if arg == self.url else arg for arg in cmd)

    def _make_info(self) -> SourceInfo:
        assert self._first is not None
        h, w = self._first[1].shape[:2]
        return SourceInfo(self.spec, self.kind, w, h, self._fps, None)

    def _why(self) -> str:
        errors = (_error_lines(self._session.log_tail) if self._session is not None else []) or self._last_errors
        return f": {errors[-1]}".replace(self.url, self.spec) if errors else ""  # FFmpeg names the URL in full


def _waiting_since(session: _Session, waits_for_sender: bool) -> float:
    """Since when a live session has given no frame. A listener waits for a sender for as long as it takes, but
    one whose sender connected (the decoder started) and gives no frame is restarted like a caller's."""
    if not waits_for_sender:
        return session.started
    if session.decoding_since is None:
        return float("inf")  # still listening: never stale
    # Not before the decoder could state its picture (CONFIGURE_S): a long GOP joined midway is no stall
    return (session.last_frame or session.decoding_since) + (0 if session.last_frame else CONFIGURE_S)


def stated_fps(video_line: str | None) -> float | None:
    """The frame rate a stream states in the receiver's input line, where it is a plausible one."""
    fps = float(f.group(1)) if (f := _IN_FPS.search(video_line or "")) else None
    return fps if fps is not None and 1.0 <= fps <= MAX_FPS else None


def _anamorphic(video_line: str | None) -> bool:
    """The receiver's input line states pixels that are not square ("[SAR 32:27 DAR 16:9]")."""
    m = _IN_SAR.search(video_line or "")
    if m is None or not int(m.group(1)) or not int(m.group(2)):
        return False
    return abs(int(m.group(1)) / int(m.group(2)) - 1) > 0.01


def decode_options(video_line: str | None) -> tuple[str, list[str]]:
    """The decoder's pipe pixel format and thread option for the input the receiver described. Anything not
    understood keeps FFmpeg's BGR conversion (it honours the stream's colour tags) and its default threads."""
    m = _IN_VIDEO.match(video_line or "")
    if m is None:
        return "bgr24", []
    pix_fmt, props, w, h = m.group(1), m.group(2) or "", int(m.group(3)), int(m.group(4))
    tokens = [t.strip() for t in props.split(",") if t.strip()]
    ranges = [t for t in tokens if t in ("tv", "pc")]
    colours = [t for t in tokens if t not in ("tv", "pc") and "first" not in t and t != "progressive"]
    matrix = colours[0].split("/")[0] if colours else ""
    i420 = pix_fmt == "yuv420p" and ranges in ([], ["tv"]) and matrix in I420_MATRICES and not (w % 2 or h % 2)
    # One thread only where it was measured to keep up: H.264 at a stated rate up to 1080p60. HEVC, AV1, or a
    # rate FFmpeg only guessed keep its frame threads (one thread falling behind would stall the source).
    fps = float(f.group(1)) if (f := _IN_FPS.search(video_line or "")) else None
    codec = c.group(1) if (c := _IN_CODEC.search(video_line or "")) else ""
    single = codec == "h264" and fps is not None and w * h * fps <= SINGLE_THREAD_MAX_RATE
    threads = ["-threads", "1"] if single else []
    return ("yuv420p" if i420 else "bgr24"), threads


def _to_bgr(frame: np.ndarray) -> np.ndarray:
    """A frame as the engine takes it: I420 from the pipe (2-D, 1.5 x the height) becomes BGR (BT.601)."""
    return cv2.cvtColor(frame, cv2.COLOR_YUV2BGR_I420) if frame.ndim == 2 else frame


def _error_lines(tail) -> list[str]:
    return [line for line in list(tail)
            if any(word in line for word in ("rror", "failed", "refused", "Invalid data", "hostname"))]


def _read_into(pipe, view: memoryview) -> bool:
    """Fill `view` from the pipe; False at the end of the pipe."""
    done = 0
    while done < len(view):
        got = pipe.readinto(view[done:])
        if not got:
            return False
        done += got
    return True


def _read_exact(pipe, size: int, partial: bool = False) -> bytearray | None:
    """`size` bytes (or, with `partial`, whatever whole samples arrived), None at the end of the pipe."""
    buf = bytearray()
    while len(buf) < size:
        chunk = pipe.read(size - len(buf))
        if not chunk:
            break
        buf += chunk
        if partial and len(buf) % BYTES_PER_SAMPLE == 0:
            break
    if len(buf) < size and not (partial and buf):
        return None
    return buf
