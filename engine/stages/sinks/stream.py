"""Stream outputs: SRT (caller or listener) and RTMP(S) push, H.264 + AAC through an FFmpeg child process.

Sound and picture stay in sync by timestamps, not by guessing a delay: every frame is placed at its source
frame index (frame i at i / fps s) and every audio chunk at its source sample index (see
engine/stages/sources/audio.py), both counted from the first frame this output sends. The sound therefore waits,
inside FFmpeg's interleaving, exactly as long as the anonymizer held the picture. Input frames the engine
dropped to stay live are filled by repeating the previous *anonymized* frame, so the output keeps a
constant frame rate (platforms and OBS expect one).

`write()` never blocks the engine: frames go through a short queue to a writer thread (an SRT listener
output waits for its caller; a slow uplink backs up FFmpeg, not the anonymizer). A frame of another size
than the output's (the source changed size) is scaled into the output's size with black bars and logged:
a stream cannot change size midway, and a silent mismatch would corrupt the encoder's input.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import re
import shutil
import subprocess
import threading
import time
from collections import deque
from fractions import Fraction
from urllib.parse import urlsplit

import cv2
import numpy as np

from engine.client import redact  # stdlib-only there: the UI logs its restarts with it too
from engine.stages.anonymize import SafeFrame
from engine.stages.sink import COLOUR_TAGS, SinkError, _check
from engine.stages.sources.audio import CHANNELS, RATE, AudioTap, SoundFeed
from engine.stream_options import DEFAULT_TLS, TLS_HINT, Tls, certificate_refused, check_stream_options

log = logging.getLogger(__name__)

RETRY_S = 2.0  # between attempts to reach a far end that is gone
MAX_FILL_S = 2.0  # a longer gap (an outage) is skipped, not filled with 2 s+ of a frozen frame at once
CLOSE_GRACE_S = 2.0  # at close, for FFmpeg to take the queued frames and, after them, to finish
VIDEO_QUEUE = 16  # ~0.5 s: rides out an encoder start-up without dropping, bounds the delay when the uplink lags


def stream_format(url: str) -> str:
    """The container FFmpeg must mux for this URL's protocol."""
    scheme = urlsplit(url).scheme.lower()
    if scheme == "srt":
        return "mpegts"
    if scheme in ("rtmp", "rtmps"):
        return "flv"
    raise SinkError(f"unsupported stream output {redact(url)!r}: use srt://HOST:PORT, srt://:PORT?mode=listener or "
                    "rtmp(s)://HOST/APP/KEY")


class StreamSink:
    """H.264 at `bitrate_kbps` with a keyframe every `keyframe_s`, plus the source's sound when it has one."""

    def __init__(self, url: str, width: int, height: int, fps: Fraction, audio: AudioTap | None = None,
                 bitrate_kbps: int = 4000, keyframe_s: float = 2.0, preset: str = "auto",
                 tls: Tls = DEFAULT_TLS) -> None:
        bitrate_kbps, keyframe_s, preset = check_stream_options(bitrate_kbps, keyframe_s, preset)  # before FFmpeg
        ffmpeg = shutil.which("ffmpeg")
        if ffmpeg is None:
            raise SinkError("stream outputs need ffmpeg on PATH (Debian: `apt-get install ffmpeg`)")
        self.url, self.path = url, redact(url)
        self.name = f"stream {self.path}"
        self.width, self.height, self.fps = width, height, Fraction(fps)
        self.frames_sent = self.repeated = self.dropped = self.reconnects = 0
        # Frames FFmpeg encoded and wrote out (its -progress report), over all connections: `frames_sent` counts
        # what went down its pipe, which a far end that never answered also takes (a review, stop 44: a run with
        # no far end at all ended "successfully")
        self.frames_out = 0
        self._out_before = 0  # frames_out of the connections before this one
        self._fmt = stream_format(url)
        self._tls = tls
        # Even sizes go down the pipe as I420, converted here by OpenCV: swscale's bgr24 -> yuv420p cost the
        # encoder 2.8 ms a 1080p frame against OpenCV's 0.75, and the pipe carries half the bytes.
        self._yuv = width % 2 == 0 and height % 2 == 0
        self._encoder = (ffmpeg, bitrate_kbps, keyframe_s, preset)
        self._tap = audio
        self._counter = 0  # for writes without a source index
        self._warned_size: tuple[int, int] | None = None
        self._open()
        log.info("stream output %s: %dx%d @ %.2f fps, %d kb/s, keyframe every %.1f s, x264 %s, %s", self.path, width,
                 height, float(self.fps), bitrate_kbps, keyframe_s, preset,
                 "with sound" if audio is not None else "no sound")

    def _open(self) -> None:
        """A connection: its own FFmpeg, queue, sound subscription and clock (its first frame is time 0)."""
        self._origin: int | None = None  # source index of this connection's first frame
        self._skipped = 0  # source frames skipped over outages (moves the sound with the picture)
        self._slot = 0  # output frames written so far
        self._last: np.ndarray | None = None
        self._video: queue.Queue[tuple[int, np.ndarray] | None] = queue.Queue(maxsize=VIDEO_QUEUE)
        self._log_tail: deque[str] = deque(maxlen=20)
        self._out_before = self.frames_out
        self._opened = time.monotonic()
        self._proc, audio_w = self._spawn(*self._encoder)
        # fed by the picture's writer thread, never behind the picture (sources/audio.py SoundFeed)
        self._submitted = 0  # frames handed to FFmpeg, the one being written included
        self._sound = (SoundFeed(self._tap, audio_w, f"stream output {self.path}", self._sound_placement)
                       if audio_w is not None else None)
        self._threads = [threading.Thread(target=self._write_video, name="stream-video", daemon=True),
                         threading.Thread(target=self._read_log, name="stream-log", daemon=True)]
        for thread in self._threads:
            thread.start()

    def _close_current(self) -> int:
        """End this connection's FFmpeg and threads; its exit code. Prompt: the frames FFmpeg has taken are
        flushed (it exits on the end of its input), but a child that stops taking frames (a listener nobody
        called, a far end gone) is killed after CLOSE_GRACE_S rather than waited on for 15 s."""
        self._end_video_queue()
        writer = self._threads[0]
        writer.join(timeout=CLOSE_GRACE_S)
        if self._proc.poll() is None and (writer.is_alive() or self._origin is None):
            log.info("stream output %s: ffmpeg no longer takes frames (nobody connected?); stopping it", self.path)
            self._proc.kill()
        try:
            code = self._proc.wait(timeout=CLOSE_GRACE_S)
        except subprocess.TimeoutExpired:  # stuck flushing to a far end that stopped reading
            log.warning("stream output %s: ffmpeg did not finish within %.0f s; stopped", self.path, CLOSE_GRACE_S)
            self._proc.kill()
            code = self._proc.wait()
        for thread in self._threads:
            thread.join(timeout=1)
        if self._sound is not None:  # the writer closes it; not if it is still stuck in a write
            self._sound.close()
        return code

    def _end_video_queue(self) -> None:
        """Put the end mark; the writer may be gone (far end lost) with the queue full: make room for it."""
        while True:
            try:
                self._video.put_nowait(None)
                return
            except queue.Full:
                with contextlib.suppress(queue.Empty):
                    self._video.get_nowait()

    def _spawn(self, ffmpeg: str, bitrate: int, keyframe_s: float, preset: str) -> tuple[subprocess.Popen, int | None]:
        audio_r, audio_w = os.pipe() if self._tap is not None else (None, None)
        gop = max(1, round(keyframe_s * float(self.fps)))
        cmd = [ffmpeg, "-hide_banner", "-nostdin", "-nostats", "-loglevel", "error",
               "-f", "rawvideo", "-pix_fmt", "yuv420p" if self._yuv else "bgr24", "-s", f"{self.width}x{self.height}",
               "-framerate", str(self.fps), "-i", "pipe:0"]
        if audio_r is not None:
            cmd += ["-thread_queue_size", "4096", "-probesize", "32", "-analyzeduration", "0",  # raw: no probing
                    "-f", "s16le", "-ar", str(RATE), "-ac", str(CHANNELS),
                    "-i", f"pipe:{audio_r}", "-map", "1:a", "-c:a", "aac", "-b:a", "160k"]
        cmd += ["-map", "0:v", *([] if self._yuv else ["-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2"]),
                "-c:v", "libx264", "-preset", preset,
                "-tune", "zerolatency", "-b:v", f"{bitrate}k", "-maxrate", f"{bitrate}k",
                "-bufsize", f"{bitrate}k", "-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0",
                "-pix_fmt", "yuv420p", *COLOUR_TAGS, "-progress", "pipe:2", "-stats_period", "1",
                *self._tls.ffmpeg_args(self.url), "-f", self._fmt, self.url]
        # In Blurcast's process group, unlike the recording's encoder (sink.py): an SRT listener nobody called waits
        # in listen and ignores the end of its input, so only the terminal's signal ends it if Blurcast dies
        try:
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE,
                                    pass_fds=(audio_r,) if audio_r is not None else ())
        except BaseException:
            if audio_w is not None:
                os.close(audio_w)
            raise
        finally:
            if audio_r is not None:
                os.close(audio_r)
        return proc, audio_w

    # --- the sink interface (engine thread) ----------------------------------------------------------------
    def write(self, frame: SafeFrame) -> None:
        self.write_at(frame, None)

    def write_at(self, frame: SafeFrame, source_index: int | None) -> None:
        """Queue an anonymized frame for the source frame `source_index` (None: right after the last one)."""
        image = self._fit(_check(frame).image)
        if self._proc.poll() is not None and not self._reconnect():
            self.dropped += 1
            return
        index = source_index if source_index is not None else self._counter
        self._counter = index + 1
        try:
            self._video.put_nowait((index, image))
        except queue.Full:  # the far end is slow or not there yet: drop here, never hold the anonymizer
            self.dropped += 1

    def _reconnect(self) -> bool:
        """The far end went away (OBS restarted, network): start again, at most every RETRY_S seconds;
        frames meanwhile are dropped, and the engine and the other outputs go on."""
        if time.monotonic() - self._opened < RETRY_S:
            return False
        self._close_current()  # its log read to the end
        refused = certificate_refused(list(self._log_tail)) if self._tls.checks(self.url) else None
        if refused is not None:  # no retry mends it: the output ends, reported
            raise SinkError(f"stream output {self.path}: the far end's certificate is not trusted "
                            f"({refused}); {TLS_HINT}")
        log.warning("stream output %s stopped (%s); connecting again", self.path, self._stderr() or "no reason given")
        self._open()
        self.reconnects += 1
        return True

    def close(self) -> None:
        code = self._close_current()
        log.info("stream output %s closed: %d frames (%d repeats, %d dropped)%s", self.path, self.frames_sent,
                 self.repeated, self.dropped, f"; ffmpeg said: {self._stderr()}" if self._log_tail else "")
        if code not in (0, -9) and self.frames_sent == 0:
            raise SinkError(f"ffmpeg failed sending to {self.path}: {self._stderr()}")

    def status(self) -> dict:
        """For telemetry `outputs` (and the UI's output list): how the far end is taking the stream."""
        if self._proc.poll() is not None:
            state = "reconnecting"
        elif self._video.full():  # FFmpeg takes no frames: nobody called the listener yet, or the uplink stalls
            state = "waiting for the far end"
        else:
            state = "sending"
        return {"state": state, "sent": self.frames_sent, "out": self.frames_out, "dropped": self.dropped,
                "reconnects": self.reconnects}

    # --- writer threads ---------------------------------------------------------------------------------------
    def _fit(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        if (w, h) == (self.width, self.height):
            return image
        if self._warned_size != (w, h):
            log.warning("%s: frames are now %dx%d, the stream stays %dx%d (scaled, black bars)", self.path, w, h,
                        self.width, self.height)
            self._warned_size = (w, h)
        scale = min(self.width / w, self.height / h)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        canvas = np.zeros((self.height, self.width, 3), np.uint8)
        x, y = (self.width - nw) // 2, (self.height - nh) // 2
        canvas[y:y + nh, x:x + nw] = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA)
        return canvas

    def _write_video(self) -> None:
        stdin, sound = self._proc.stdin, self._sound  # this connection's (a reconnect makes new ones)
        assert stdin is not None
        try:
            while (item := self._video.get()) is not None:
                index, image = item
                if self._origin is None:
                    self._origin = index
                target = index - self._origin - self._skipped
                if target < self._slot:  # older than what was sent (a source restart): send in place of the next
                    target = self._slot
                gap = target - self._slot
                if gap > MAX_FILL_S * float(self.fps):  # an outage: skip the time rather than replay it
                    self._skipped += gap
                    gap = 0
                for _ in range(gap if self._last is not None else 0):
                    self._submitted += 1
                    stdin.write(memoryview(self._last))
                    self.repeated += 1
                    self._slot += 1
                data = cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420) if self._yuv else np.ascontiguousarray(image)
                self._submitted += 1  # before the write: FFmpeg may wait for this frame's sound first
                stdin.write(memoryview(data))
                self._last = data
                self._slot += 1
                self.frames_sent += 1
        except (BrokenPipeError, ValueError, OSError) as exc:
            log.error("stream output %s: ffmpeg stopped taking frames (%s): %s", self.path, exc, self._stderr())
        finally:
            _close(stdin)
            if sound is not None:  # after the picture's end FFmpeg reads the sound to its end
                sound.close(wait_s=CLOSE_GRACE_S)

    @property
    def has_sound(self) -> bool:
        """Whether this output carries the source's sound (each connection takes it afresh)."""
        return self._tap is not None

    def _sound_placement(self) -> tuple[int, int] | None:
        """For the sound's thread (SoundFeed): the source sample at this connection's time 0, and where the picture
        handed to FFmpeg ends; None before the first frame."""
        start = self._sound_start()
        return None if start is None else (start, round(self._submitted * RATE / float(self.fps)))

    def _sound_start(self) -> int | None:
        """The source sample at this connection's time 0: its first frame's, moved by the outages skipped."""
        if self._origin is None:
            return None
        return round((self._origin + self._skipped) * RATE / float(self.fps))

    def _read_log(self) -> None:
        """Drain FFmpeg's messages (a full pipe would stall it) and keep the last ones for errors."""
        assert self._proc.stderr is not None
        for raw in self._proc.stderr:
            line = raw.decode(errors="replace").rstrip().replace(self.url, self.path)  # FFmpeg names the URL in full
            if m := _PROGRESS.match(line):  # -progress: "key=value" lines, once a second once the output is open
                if m.group(1) == "frame" and m.group(2).isdigit():
                    self.frames_out = self._out_before + int(m.group(2))
                continue
            self._log_tail.append(line)
            log.debug("stream output %s: %s", self.path, line)

    def _stderr(self) -> str:
        return "\n".join(self._log_tail)[-800:]


_PROGRESS = re.compile(r"^(frame|fps|stream_\d+_\d+_q|bitrate|total_size|out_time\w*|dup_frames|drop_frames|speed|"
                       r"progress)=(.*)$")


def _close(stream) -> None:
    with contextlib.suppress(OSError):
        stream.close()
