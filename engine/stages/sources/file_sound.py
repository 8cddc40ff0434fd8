"""A file's sound for the stream outputs of a file played live (`engine serve --source clip.mp4 --out srt://...`).

OpenCV reads the file's picture and has no sound. FFmpeg decodes the sound here, as the network sources'
decoder does (PCM s16le, 48 kHz, stereo), and publishes it on an `AudioTap` on the same clock as the picture:
frame i of the source (counted across loops) at i / fps s. The sound goes out a little ahead of the frames read
(`LEAD_S`), never further: the file is read at its own rate by the engine, and a tap's subscriber holds at most
~40 s. Each loop of a looped file decodes the sound again from the loop's first frame.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import subprocess
import threading

from engine.stages.sources.audio import BYTES_PER_SAMPLE, CHANNELS, RATE, AudioTap

log = logging.getLogger(__name__)

LEAD_S = 0.5  # sound published this far ahead of the frames read: the outputs place it by its index anyway
CHUNK_SAMPLES = 1024  # as the network sources' chunks
WAIT_S = 0.02  # how often the pacing looks at the frames read


class FileSound:
    """Decodes `path`'s first sound stream and publishes it on `audio` in step with the frames the source reads.

    `video_start_s`: how long after the file's start its video starts (engine/stages/source.py `file_clock`):
    FFmpeg's sound starts at the file's start, OpenCV's frame 0 at the video's. `frames`: the file's frame count
    (its header's), `first_loop`: the source frame where the pass being read began."""

    def __init__(self, path: str, fps: float, video_start_s: float = 0.0, frames: int | None = None,
                 first_loop: int = 0) -> None:
        self.path, self.fps = path, max(float(fps), 1.0)
        self.audio = AudioTap()
        self._skip = round(video_start_s * RATE)  # samples before frame 0 (negative: the sound starts later)
        self._frames_read = 0
        self._loops = [first_loop]  # the source frame index where each loop starts (guarded by _read)
        # A loop's length in frames: the header's count until the file has wrapped once, then what was read. Sound
        # goes out LEAD_S ahead of the frames read, so a file whose sound outlasts its picture would otherwise put
        # the old loop's tail where the next loop's start belongs.
        self._loop_frames = frames if frames and frames > 0 else None
        self._stop = threading.Event()
        self._read = threading.Condition()
        self._proc: subprocess.Popen | None = None
        self._thread = threading.Thread(target=self._run, name="file-sound", daemon=True)
        self._thread.start()

    # --- called by the source, on the frame loop's reader thread ----------------------------------------------
    def frames_read(self, count: int) -> None:
        """`count` frames of the source have been read (across loops): the sound may go up to them + LEAD_S."""
        with self._read:
            self._frames_read = count
            self._read.notify_all()

    def loop_started(self, index: int) -> None:
        """The file wrapped: its next loop's first frame is source frame `index`. The loop before ends there, even
        if its sound is longer than its picture: the next loop's sound takes its place."""
        with self._read:
            if index > self._loops[-1]:
                self._loop_frames = index - self._loops[-1]
            self._loops.append(index)
            self._read.notify_all()

    def close(self) -> None:
        self._stop.set()
        with self._read:
            self._read.notify_all()
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
        self._thread.join(timeout=5)

    # --- the decoding thread -----------------------------------------------------------------------------------
    def _run(self) -> None:
        loop = 0
        while not self._stop.is_set():
            with self._read:
                while not self._stop.is_set() and loop >= len(self._loops):
                    self._read.wait(0.2)
                if self._stop.is_set():
                    return
                start_frame = self._loops[loop]
            base = round(start_frame * RATE / self.fps) - self._skip
            decoded = self._decode_loop(loop, base)
            if decoded is None:
                return
            if decoded == 0:  # nothing decoded: go on in silence rather than hold the outputs' encoders up
                log.warning("cannot decode the sound of %s; its stream outputs carry silence", self.path)
                self._silence(max(base, 0))
                return
            loop += 1

    def _silence(self, sample: int) -> None:
        """Silence in step with the frames read, until closed: an output's encoder waits for sound it was
        promised before it sends a first frame."""
        pcm = bytes(CHUNK_SAMPLES * BYTES_PER_SAMPLE)
        while self._wait_for_frames(sample):
            self.audio.publish(sample, pcm)
            sample += CHUNK_SAMPLES

    def _loop_end(self, loop: int) -> int | None:
        """Where loop `loop`'s sound ends (a source sample): the next loop's first frame, or where it will be."""
        with self._read:
            if loop + 1 < len(self._loops):
                return round(self._loops[loop + 1] * RATE / self.fps)
            if self._loop_frames is None:
                return None
            return round((self._loops[loop] + self._loop_frames) * RATE / self.fps)

    def _decode_loop(self, loop: int, base: int) -> int | None:
        """One pass over the file's sound, its sample 0 at source sample `base`: the samples published (0: none
        could be decoded), None once closed."""
        ffmpeg = shutil.which("ffmpeg")
        if ffmpeg is None:
            return 0
        # aresample's async fills the sound's own gaps and first_pts=0 pads a late start, so the samples are
        # contiguous from the file's start: sample k is k / RATE s after it.
        cmd = [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-i", self.path, "-map", "0:a:0", "-vn",
               "-af", "aresample=async=1:first_pts=0", "-f", "s16le", "-ar", str(RATE), "-ac", str(CHANNELS), "pipe:1"]
        self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                      stderr=subprocess.DEVNULL)
        assert self._proc.stdout is not None
        sample = base
        try:
            while not self._stop.is_set():
                pcm = self._proc.stdout.read(CHUNK_SAMPLES * BYTES_PER_SAMPLE)
                if not pcm or not self._wait_for_frames(sample):
                    break
                end = self._loop_end(loop)
                if end is not None and sample + len(pcm) // BYTES_PER_SAMPLE > end:
                    pcm = pcm[:max(0, end - sample) * BYTES_PER_SAMPLE]
                if not pcm:
                    break
                self.audio.publish(sample, pcm)
                sample += len(pcm) // BYTES_PER_SAMPLE
        finally:
            with contextlib.suppress(OSError):
                self._proc.stdout.close()
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.wait()
        return None if self._stop.is_set() else sample - base

    def _wait_for_frames(self, sample: int) -> bool:
        """Hold the chunk starting at `sample` until the frames read reach its time, less LEAD_S. False: closed."""
        with self._read:
            while not self._stop.is_set() and sample / RATE > self._frames_read / self.fps + LEAD_S:
                self._read.wait(WAIT_S)
        return not self._stop.is_set()
