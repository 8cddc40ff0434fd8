"""Sink stage: where anonymized frames go. Every sink takes only `SafeFrame`s (see engine/stages/anonymize.py).

- `VirtualCameraSink`: pyvirtualcam (v4l2loopback on Linux, OBS Virtual Camera on Windows/macOS).
- `FileSink`: every frame to a video file through FFmpeg, same size and frame rate, audio copied; what was
  written stays playable after a crash, and a size change or a dead encoder starts a new segment file.
- `ImageSink`: a photo in, a photo out (.jpg, .png...), written whole or not at all.
- `PreviewSink`: an OpenCV window, only where a display exists.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from fractions import Fraction
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from engine.media import IMAGE_SUFFIXES, is_image_path, unread_photo_hint
from engine.stages.anonymize import SafeFrame
from engine.stages.sources.audio import CHANNELS as SOUND_CHANNELS
from engine.stages.sources.audio import RATE as SOUND_RATE
from engine.stages.sources.audio import RECORDING_SOUND_LEAD_S, AudioTap, SoundFeed

log = logging.getLogger(__name__)

# A stream or recording says how its YUV was made (OpenCV's, or swscale's default, BGR -> YUV: BT.601, limited
# range): untagged, a receiver or player guesses, often BT.709 for HD, which shifts saturated colours (16 levels
# on the dev clip, 28 on a saturated green: tests/test_stream_colours.py).
COLOUR_TAGS = ["-colorspace", "smpte170m", "-color_range", "tv"]


class SinkError(RuntimeError):
    """A sink cannot be opened or written; the message names the fix."""


class Sink(Protocol):
    name: str

    def write(self, frame: SafeFrame) -> None: ...

    def close(self) -> None: ...


def _check(frame: object) -> SafeFrame:
    if not isinstance(frame, SafeFrame):
        raise TypeError("sinks accept only SafeFrame: every frame must pass the anonymizer")
    return frame


# Containers the file sink writes, each with muxer options that keep everything written so far playable
# after a crash (kill -9, power cut): fragmented MP4 writes a self-contained fragment at least every quarter second,
# its index with the first one (`delay_moov`: the index then says where the video starts after the B-frame delay,
# so the sound's first 67 ms are no longer ahead of the picture, and AC-3 sound can be copied at all); Matroska is
# readable up to its last complete cluster.
_FRAGMENTED = ["-movflags", "+frag_keyframe+empty_moov+default_base_moof+delay_moov", "-frag_duration", "250000"]
CRASH_SAFE_MUXING = {".mp4": _FRAGMENTED, ".m4v": _FRAGMENTED, ".mov": _FRAGMENTED,
                     ".mkv": ["-cluster_time_limit", "500"]}
KEYFRAME_EVERY_S = 1  # a crash loses at most the last fragment; a player can start at any second
MAX_FILL_FRAMES = 300  # live: at most this many frames filled at once (10 s at 30 fps: a clock jump, not a drop)
MAX_RESTARTS = 5  # an encoder that keeps dying (a codec missing) is given up, not respawned forever
DISK_FULL = ("No space left on device", "Disk quota exceeded")  # FFmpeg's strerror of ENOSPC and EDQUOT
DISK_FULL_BYTES = 1 << 20  # a dead encoder with less than this left where it wrote: the disk filled up
CLOSE_TIMEOUT_S = 30.0
SOUND_FLUSH_S = 5.0  # closing: how long the sound still to write may take to go in


# Sound codecs each container takes as they are (measured with FFmpeg 5.1 and the muxing flags above); any other is
# made AAC: a camera's PCM, or MP3 in .m4v, had killed the encoder on its first sound packet.
COPYABLE_AUDIO: dict[str, set[str] | None] = {
    ".mp4": {"aac", "mp3", "ac3", "eac3", "alac", "opus"},
    ".m4v": {"aac", "ac3", "alac"},
    ".mov": {"aac", "mp3", "ac3", "eac3", "alac", "pcm_s16le", "pcm_s16be", "pcm_s24le", "pcm_s24be"},
    ".mkv": None,  # Matroska takes them all, but:
}
# G.711 (IP cameras' sound): FFmpeg 5.1 writes it into Matroska, PyAV's newer FFmpeg refuses it, so it could not be
# retimed (engine/stages/sinks/retime.py).
NOT_IN_MATROSKA = {"pcm_alaw", "pcm_mulaw"}


def audio_codecs(path: str) -> list[str]:
    """The codec of each sound stream of `path`, in order (ffprobe; empty where it says nothing)."""
    ffprobe = shutil.which("ffprobe")
    if ffprobe is None:
        return []
    try:
        done = subprocess.run([ffprobe, "-v", "error", "-select_streams", "a", "-show_entries", "stream=codec_name",
                               "-of", "json", path], capture_output=True, text=True, timeout=30)
        return [stream.get("codec_name", "") for stream in json.loads(done.stdout or "{}").get("streams", [])]
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return []


def audio_codec_args(codecs: list[str], suffix: str) -> list[str]:
    """FFmpeg's sound options for a recording: copied where the container takes every codec, else AAC. AAC from an
    MPEG-TS (a recorded SRT stream) carries ADTS headers, which MP4 refuses until they become its config (a no-op
    on AAC that has its config already)."""
    copyable = COPYABLE_AUDIO.get(suffix)
    if (not set(codecs) <= copyable) if copyable is not None else bool(set(codecs) & NOT_IN_MATROSKA):
        return ["-c:a", "aac", "-b:a", "192k"]
    adts = [] if suffix == ".mkv" else [arg for index, codec in enumerate(codecs) if codec == "aac"
                                        for arg in (f"-bsf:a:{index}", "aac_adtstoasc")]
    return ["-c:a", "copy", *adts]


def _muxer_options(path: Path) -> dict[str, str]:
    """CRASH_SAFE_MUXING's flags for `path`, as the options PyAV takes."""
    flags = CRASH_SAFE_MUXING[path.suffix.lower()]
    return {flag.lstrip("-"): value for flag, value in zip(flags[::2], flags[1::2], strict=True)}


def check_output_path(path: Path, input_path: str | None = None) -> None:
    """Refuse, before any frame, an output that could not become a playable video (or, for a photo, a picture)."""
    if path.is_dir():
        raise SinkError(f"cannot record to {path}: it is a folder; give a file name inside it, e.g. {path / 'out.mp4'}")
    if (hint := unread_photo_hint(input_path)) is not None:
        raise SinkError(f"cannot anonymize {input_path}: {hint}")
    if is_image_path(path) and not is_image_path(input_path):
        raise SinkError(f"cannot record to {path}: a picture holds one frame, and {input_path or 'the source'} is not "
                        f"a photo ({', '.join(IMAGE_SUFFIXES)}); record it to one of {', '.join(CRASH_SAFE_MUXING)}")
    if path.suffix.lower() not in CRASH_SAFE_MUXING and not is_image_path(path):
        what = (f"'{path.suffix}' is not a video type Blurcast writes" if path.suffix else
                "the type is chosen by the name's suffix, and it has none")
        raise SinkError(f"cannot record to {path}: {what}; use one of {', '.join(CRASH_SAFE_MUXING)} (or, for a "
                        f"photo, {', '.join(IMAGE_SUFFIXES)})")
    if not path.parent.is_dir():
        raise SinkError(f"cannot record to {path}: the folder {path.parent} does not exist")
    if input_path and path.exists() and Path(input_path).exists() and path.samefile(input_path):
        raise SinkError(f"cannot record to {path}: it is the input itself; write to another file")
    existed = path.exists()
    try:  # really open it: permissions alone miss read-only mounts and pseudo file systems like /proc
        with open(path, "ab"):
            pass
    except OSError as exc:
        raise SinkError(f"cannot record to {path}: {exc.strerror or exc}") from exc
    if not existed:
        path.unlink(missing_ok=True)  # a refusal later must leave nothing behind; ffmpeg creates it again


def _disk_full(folder: Path) -> bool:
    """Less than DISK_FULL_BYTES left to write in `folder` (root may also use the blocks kept for it)."""
    try:
        st = os.statvfs(folder)
    except OSError:
        return False
    free = st.f_bfree if os.geteuid() == 0 else st.f_bavail
    return free * st.f_frsize < DISK_FULL_BYTES


def next_segment(path: Path) -> Path:
    """`rec.mp4` -> the first free `rec-1.mp4`, `rec-2.mp4`, ... (a recording that had to start again)."""
    for n in itertools.count(1):
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
        if not candidate.exists():
            return candidate
    raise AssertionError("unreachable")


def _first_free(path: Path) -> Path:
    """`path`, or the first free `rec-1.mp4`... when a file is there already: the engine's recordings (the UI's,
    `engine serve --record`, a restart after a crash) never overwrite an earlier one, which may be a whole stream."""
    if not path.exists() or path.is_dir() or path.stat().st_size == 0:
        return path  # a folder is refused by check_output_path, with its own message
    free = next_segment(path)
    log.warning("%s exists: recording to %s instead, to keep it", path, free)
    return free


def recorded_frames(path: Path) -> int:
    """Video frames a player can read from `path` (0 for a missing or unreadable file); needs ffprobe."""
    ffprobe = shutil.which("ffprobe")
    if ffprobe is None or not Path(path).is_file():
        return 0
    done = subprocess.run([ffprobe, "-v", "error", "-select_streams", "v:0", "-count_packets", "-show_entries",
                           "stream=nb_read_packets", "-of", "csv=p=0", str(path)],
                          capture_output=True, text=True, timeout=60)
    try:
        return int(done.stdout.strip().splitlines()[0].strip(","))
    except (IndexError, ValueError):
        return 0


class FileSink:
    """H.264 in fragmented MP4 (or Matroska) via an FFmpeg subprocess; the sound copied from the file `audio_from`,
    or (live, a network source) taken from the source's `audio` tap and placed on the frames' source timeline.

    Crash-safe: what was written stays playable if the engine or the encoder dies. A source whose size
    changes starts a new segment file (`rec-1.mp4`) at the new size; mismatched bytes are never written.
    """

    name = "file"

    def __init__(self, path: str | Path, width: int, height: int, fps: Fraction | float,
                 audio_from: str | None = None, preset: str = "veryfast", crf: int = 18,
                 keep_existing: bool = False, audio: AudioTap | None = None) -> None:
        self._ffmpeg = shutil.which("ffmpeg")
        if self._ffmpeg is None:
            raise SinkError("the file sink needs ffmpeg on PATH (Debian: `apt-get install ffmpeg`)")
        self.fps = Fraction(fps).limit_denominator(1001)
        self.preset, self.crf, self.restarts = preset, crf, 0
        self.disk_full = False  # the encoder died of a full disk (or quota): the recording stopped there
        self.segments: list[Path] = []  # every file this recording wrote, in order
        self.frames = 0  # frames written, all segments together (repeats included)
        self.repeated = 0  # live: frames the engine dropped, filled with the frame before them
        self._next_position: int | None = None  # live: the source timeline's next frame
        self._tap = audio if not audio_from else None  # a file's own sound is copied whole instead
        self._base = Path(path)
        self._open(_first_free(self._base) if keep_existing else self._base, width, height, audio_from)

    def _open(self, path: Path, width: int, height: int, audio_from: str | None) -> None:
        check_output_path(path, audio_from)
        self.path, self.width, self.height, self.audio_from = path, width, height, audio_from
        # Even sizes go down the pipe as I420, converted here by OpenCV, as the stream outputs do
        # (sinks/stream.py): FFmpeg's bgr24 -> yuv420p cost more than OpenCV's, and the pipe carries half the bytes.
        self._yuv = width % 2 == 0 and height % 2 == 0
        self._segment_frames = 0
        self._closed = False
        self._last: tuple[tuple[int, ...], memoryview] | None = None  # live: the last frame written to *this* encoder
        self._stderr_file = tempfile.TemporaryFile()  # noqa: SIM115 (lives as long as the encoder; a file, not a pipe, so a chatty ffmpeg never blocks)
        # This segment's sound from the source's tap, placed from its own first frame (`write_live`): a segment after
        # a size change or an encoder's death keeps its sound in sync too.
        self._sound_origin: int | None = None  # the source frame index of this segment's first frame
        self._sound_skipped = 0  # source frames not filled (a gap over MAX_FILL_FRAMES): the sound skips them too
        sound_r, sound_w = os.pipe() if self._tap is not None else (None, None)
        self._submitted = 0  # frames handed to this segment's encoder, the one being written included
        self._sound = (SoundFeed(self._tap, sound_w, f"recording {path}", self._sound_placement,
                                 max_lead_s=RECORDING_SOUND_LEAD_S)
                       if sound_w is not None else None)
        # Its own process group: a terminal's Ctrl-C reaches Blurcast alone, which ends the recording by closing the
        # pipe (one playable file); the encoder killed by it first had made a second file, `rec-1.mp4`.
        try:
            self._proc = subprocess.Popen(self._command(sound_r), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                          stderr=self._stderr_file, process_group=0,
                                          pass_fds=() if sound_r is None else (sound_r,))
        except BaseException:
            self._end_sound()
            raise
        finally:
            if sound_r is not None:
                os.close(sound_r)
        self.segments.append(path)
        log.info("recording %dx%d @ %s fps to %s (ffmpeg pid %d)", width, height, self.fps, path, self._proc.pid)

    @property
    def encoder_pid(self) -> int:
        return self._proc.pid

    @property
    def has_sound(self) -> bool:
        """Whether this segment carries the source's sound from its tap (a file's copied sound aside)."""
        return self._sound is not None and self._sound.open

    def _sound_placement(self) -> tuple[int, int] | None:
        """For the sound's thread (SoundFeed): the source sample at this segment's time 0, and where its picture
        handed to the encoder ends; None before its first frame is placed."""
        origin = self._sound_origin
        if origin is None:
            return None
        rate = SOUND_RATE / float(self.fps)
        return round((origin + self._sound_skipped) * rate), round(self._submitted * rate)

    def _end_sound(self, wait_s: float = 0.0) -> None:
        if self._sound is not None:
            self._sound.close(wait_s)

    def _command(self, sound_fd: int | None = None) -> list[str]:
        fps = str(self.fps)
        cmd = [self._ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-f", "rawvideo",
               "-pix_fmt", "yuv420p" if self._yuv else "bgr24", "-s", f"{self.width}x{self.height}", "-r", fps,
               "-i", "pipe:0"]
        if sound_fd is not None:  # the source's sound, raw from its tap (sources/audio.py); raw needs no probing,
            # which waited for a second of it (the engine's frame loop froze ~1 s at every start)
            cmd += ["-thread_queue_size", "4096", "-probesize", "32", "-analyzeduration", "0",
                    "-f", "s16le", "-ar", str(SOUND_RATE), "-ac", str(SOUND_CHANNELS),
                    "-i", f"pipe:{sound_fd}", "-map", "0:v", "-map", "1:a", "-c:a", "aac", "-b:a", "192k"]
        elif self.audio_from and Path(self.audio_from).is_file():
            # No -shortest: it would drop the last frames of a video whose audio ends first (and end a live
            # recording when the audio file does). A truncated input's audio is cut afterwards: trim_audio().
            cmd += ["-i", self.audio_from, "-map", "0:v", "-map", "1:a?",
                    *audio_codec_args(audio_codecs(self.audio_from), self.path.suffix.lower())]
        # yuv420p needs even sizes; pad by one pixel rather than resize, so every face stays where it was.
        # Sliced threads and a short lookahead keep ~10 frames inside x264 instead of ~30, so a crash loses
        # under half a second more than the last fragment (measured: 76 of 90 frames kept vs 60; size +1 %).
        pad = [] if self._yuv else ["-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2"]
        cmd += [*pad, "-c:v", "libx264", "-preset", self.preset, "-crf", str(self.crf),
                "-x264-params", "sliced-threads=1:sync-lookahead=0:rc-lookahead=8",
                "-pix_fmt", "yuv420p", *COLOUR_TAGS, "-r", fps,
                "-force_key_frames", f"expr:gte(t,n_forced*{KEYFRAME_EVERY_S})",
                *CRASH_SAFE_MUXING[self.path.suffix.lower()], "-flush_packets", "1", str(self.path)]
        return cmd

    def write(self, frame: SafeFrame) -> None:
        if self._sound is not None and self._sound_origin is None:  # a frame with no place: sound cannot follow
            self._end_sound()
        self._write_frame(frame)

    def _write_frame(self, frame: SafeFrame) -> np.ndarray:
        """Writes an anonymized frame's pixels; returns what went down the pipe."""
        image = _check(frame).image
        height, width = image.shape[:2]
        if (width, height) != (self.width, self.height):
            self._new_segment(width, height)
        pixels = self._pixels(image)
        self._write_bytes(memoryview(pixels))
        return pixels

    def _pixels(self, image: np.ndarray) -> np.ndarray:
        """What goes down the encoder's pipe for `image`: I420 for even sizes, else BGR as it is."""
        return cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420) if self._yuv else np.ascontiguousarray(image)

    def _write_bytes(self, pixels: bytes | memoryview) -> None:
        self._submitted += 1  # before the write: FFmpeg may wait for this frame's sound first
        try:
            assert self._proc.stdin is not None
            self._proc.stdin.write(pixels)
        except (OSError, ValueError) as exc:  # BrokenPipeError: the encoder died
            raise SinkError(f"the encoder of {self.path} stopped (exit {self._exit_code()}): {self._stderr()}") from exc
        self.frames += 1
        self._segment_frames += 1

    def write_live(self, frame: SafeFrame, position: int, source_index: int | None = None) -> None:
        """Live: `frame` is frame `position` of the source's timeline (`source_index`: the source's own frame number,
        where its sound is placed). The frames the engine dropped before it are filled with the last frame written
        (anonymized, kept as bytes: never a buffer the source may refill), so the recording lasts as long as the
        source and its sound stays in sync. Without it a 2-core machine at 1080p recorded 150 of 300 frames, played
        twice as fast."""
        image = _check(frame).image
        height, width = image.shape[:2]
        if (width, height) != (self.width, self.height):
            self._new_segment(width, height)  # before the sound's origin: this frame is the new segment's first
        if self._next_position is not None and self._last is not None and self._last[0] == image.shape:
            gap = position - self._next_position
            self._sound_skipped += max(0, gap - MAX_FILL_FRAMES)  # before the fill: the sound's thread reads it
            for _ in range(min(gap, MAX_FILL_FRAMES)):
                self._write_bytes(self._last[1])
                self.repeated += 1
        if self._sound_origin is None and self._segment_frames == 0 and source_index is not None:
            self._sound_origin = source_index
        pixels = self._write_frame(frame)
        self._next_position = max(position + 1, self._next_position or 0)
        # BGR goes down the pipe from the frame's own buffer, which the frame loop may reuse: kept as a copy.
        self._last = (image.shape, memoryview(pixels.copy() if np.shares_memory(pixels, image) else pixels))

    def restart(self) -> bool:
        """After the encoder died: go on in a new file (`rec-1.mp4`), unless it keeps dying or the disk is full.
        True if it did."""
        self._abandon()
        if any(words in self._stderr() for words in DISK_FULL) or _disk_full(self.path.parent):  # each new file
            # would die on its first write too. The folder is asked as well: where the temp folder shares the full
            # disk, FFmpeg's own words could not be kept (a review, stop 45)
            self.disk_full = True
            log.error("the disk holding %s is full: the recording stopped after %d frames", self.path, self.frames)
            return False
        if self.restarts >= MAX_RESTARTS:
            log.error("the encoder of %s died %d times; recording given up", self.path, self.restarts + 1)
            return False
        self.restarts += 1
        self._open(next_segment(self._base), self.width, self.height, audio_from=None)
        log.error("recording goes on in %s after its encoder died", self.path)
        return True

    def close(self) -> None:
        """Finish the current file; SinkError if the encoder failed."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._proc.stdin and not self._proc.stdin.closed:
                self._proc.stdin.close()
        except OSError:
            pass  # the encoder is already gone; its exit code says why
        self._end_sound(wait_s=SOUND_FLUSH_S)  # after the picture's end FFmpeg reads the sound to its end
        try:
            code = self._proc.wait(timeout=CLOSE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self._abandon()
            raise SinkError(f"ffmpeg did not finish {self.path} within {CLOSE_TIMEOUT_S:.0f} s") from None
        if code != 0:
            raise SinkError(f"ffmpeg failed writing {self.path} (exit {code}): {self._stderr()}")

    def keep_source_times(self, times: list[float] | None) -> bool:
        """After close: put the frames back at their source times where the constant rate drifts from them (a
        variable frame rate, or a video that starts after its sound), so the copied sound stays in sync.

        `times`: the source's frame times, at least one per frame written (engine/stages/source.py). True if it
        retimed; RetimeError (the file left as it was) if it could not. A recording in several segments, or with
        frames repeated (live), keeps its constant rate."""
        # sinks/ imports this module, so not at the top
        from engine.stages.sinks.retime import needs_retiming, retime, usable_times

        if (not times or not self._closed or self._proc.poll() is None or len(self.segments) != 1
                or self.repeated or len(times) < self._segment_frames):
            return False
        times = times[: self._segment_frames]
        if not usable_times(times):
            log.warning("the input's frame times are not increasing; %s keeps a constant %s fps", self.path, self.fps)
            return False
        if not needs_retiming(times, float(self.fps)):
            return False
        self._video_end_s = retime(self.path, times, _muxer_options(self.path))
        log.info("%s: its %d frames put back at their source times (the sound stays in sync)", self.path, len(times))
        return True

    _video_end_s: float | None = None  # where the video ends once retimed (the file's clock); else frames / fps

    def trim_audio(self) -> None:
        """After close: cut the copied audio where the video ends (an input truncated mid-file keeps more
        audio than frames). A stream-copy remux of the last segment; SinkError if it fails."""
        if not self.audio_from or not self._closed or self._proc.poll() is None:
            return  # not closed, or its encoder still finishing the file (a Ctrl-C during close): leave it whole
        tmp = self.path.with_name(f".{self.path.stem}.trimming{self.path.suffix}")
        try:
            done = subprocess.run([self._ffmpeg, "-v", "error", "-y", "-i", str(self.path), "-map", "0", "-c", "copy",
                                   "-t", f"{self._video_seconds():.3f}",
                                   *CRASH_SAFE_MUXING[self.path.suffix.lower()], str(tmp)],
                                  capture_output=True, text=True, timeout=600)
            if done.returncode != 0:
                raise SinkError(f"could not cut the audio of {self.path} to its video: {done.stderr.strip()[-500:]}")
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)  # a failed or interrupted cut leaves no hidden file beside the recording

    def _video_seconds(self) -> float:
        return self._video_end_s if self._video_end_s is not None else float(self._segment_frames / self.fps)

    def _new_segment(self, width: int, height: int) -> None:
        """The source changed size: finish this file and go on in a new one at the new size."""
        previous = self.path
        try:
            self.close()
        except SinkError as exc:
            log.error("%s", exc)
        self._open(next_segment(self._base), width, height, audio_from=None)  # audio would no longer line up
        log.warning("the source changed size; %s ends there and the recording goes on in %s (%dx%d)",
                    previous, self.path, width, height)

    def _exit_code(self) -> int | None:
        try:
            return self._proc.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            return None

    def _abandon(self) -> None:
        self._end_sound()
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()
        self._closed = True

    def _stderr(self) -> str:
        self._stderr_file.seek(0)
        return self._stderr_file.read().decode(errors="replace").strip()[-1000:]


class VirtualCameraSink:
    """The virtual camera OBS (or any broadcasting software) reads."""

    name = "vcam"

    def __init__(self, width: int, height: int, fps: float, device: str | None = None) -> None:
        try:
            import pyvirtualcam
        except ImportError as exc:
            raise SinkError("the virtual camera needs pyvirtualcam (pip install pyvirtualcam)") from exc
        try:
            self._cam = pyvirtualcam.Camera(width, height, fps, fmt=pyvirtualcam.PixelFormat.BGR, device=device,
                                            print_fps=False)
        except Exception as exc:  # pyvirtualcam raises RuntimeError/ValueError depending on backend
            raise SinkError(f"no virtual camera available ({exc}). {_vcam_fix()}") from exc
        self.device = self._cam.device
        log.info("virtual camera %s open at %dx%d %.2f fps", self.device, width, height, fps)

    def write(self, frame: SafeFrame) -> None:
        self._cam.send(_check(frame).image)

    def close(self) -> None:
        self._cam.close()


def _vcam_fix() -> str:
    if sys.platform.startswith("linux"):
        return ("On Linux load v4l2loopback: `sudo apt-get install v4l2loopback-dkms && sudo modprobe v4l2loopback "
                "devices=1 exclusive_caps=1 card_label=Blurcast`, then pick 'Blurcast' as a Video Capture Device "
                "in OBS.")
    return "Install OBS Studio and start its Virtual Camera once (Tools -> Start Virtual Camera), then stop it."


ALPHA_SUFFIXES = (".png", ".webp", ".tif", ".tiff", ".avif")  # picture types OpenCV writes with an alpha channel


class ImageSink:
    """A photo in, a photo out: the anonymized frame written as a picture when the sink closes, through a temporary
    file renamed into place, so that a failed or killed run never leaves a half-written picture (nor replaces the
    one that was there). A second frame is refused: a picture cannot hold a video."""

    name = "image"

    def __init__(self, path: str | Path, alpha: np.ndarray | None = None) -> None:
        self.path = Path(path)  # checked by `check_output_path` against its source (engine/service.py, open_sink)
        # A transparent picture's alpha (engine/stages/picture.py), kept where the output's type holds one: without
        # it what lay under the transparent parts showed. A JPEG has none: written as the pixels are.
        self._alpha = alpha if self.path.suffix.lower() in ALPHA_SUFFIXES else None
        if not is_image_path(self.path):
            raise SinkError(f"cannot write a picture to {self.path}: use one of {', '.join(IMAGE_SUFFIXES)}")
        self.segments = [self.path]  # what the run wrote, as `FileSink` lists it
        self.frames = 0
        self._image = None

    def write(self, frame: SafeFrame) -> None:
        image = _check(frame).image
        if self._image is not None or self.frames:
            self._image = None  # a failed run replaces nothing: not even with its first frame
            raise SinkError(f"cannot write a second frame to the picture {self.path}: record a video to "
                            f"{self.path.with_suffix('.mp4')}")
        self._image = image.copy()  # the frame loop may reuse its buffer
        self.frames += 1

    def close(self) -> None:
        if self._image is None:
            return
        image, self._image = self._image, None
        if self._alpha is not None and self._alpha.shape == image.shape[:2] and image.ndim == 3:
            image = np.dstack([image, self._alpha])
        try:  # beside the picture (the rename stays on one file system), its suffix choosing the codec
            handle, name = tempfile.mkstemp(prefix=f".{self.path.stem}.", suffix=self.path.suffix, dir=self.path.parent)
            os.close(handle)
        except OSError as exc:
            raise SinkError(f"cannot write {self.path}: {exc.strerror or exc}") from exc
        partial = Path(name)
        try:
            if not cv2.imwrite(str(partial), image):
                raise SinkError(f"cannot write {self.path}: OpenCV wrote no {self.path.suffix} picture "
                                f"(disk full, or no encoder for it)")
            partial.chmod(_new_file_mode())  # mkstemp makes it 0600; the picture gets what any new file would
            os.replace(partial, self.path)
        except (OSError, cv2.error) as exc:
            raise SinkError(f"cannot write {self.path}: {exc}") from exc
        finally:
            partial.unlink(missing_ok=True)
        log.info("picture written: %s", self.path)


def _new_file_mode() -> int:
    """0666 less the umask, read without setting it (`os.umask` would change it for every thread meanwhile); owner
    only where it cannot be read (no /proc, a kernel before 4.7)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except OSError:
        pass
    return 0o600


class PreviewSink:
    """A local window of the anonymized output (never the raw frame)."""

    name = "preview"

    def __init__(self, title: str = "Blurcast preview") -> None:
        if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            raise SinkError("no display for a preview window (over SSH use the terminal UI's preview instead)")
        import cv2

        self._cv2 = cv2
        self.title = title

    def write(self, frame: SafeFrame) -> None:
        self._cv2.imshow(self.title, _check(frame).image)
        self._cv2.waitKey(1)

    def close(self) -> None:
        self._cv2.destroyWindow(self.title)
