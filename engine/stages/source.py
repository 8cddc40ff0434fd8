"""Source stage: frames from a webcam, a video file or an RTSP/HTTP URL, through OpenCV (FFmpeg inside)."""

from __future__ import annotations

import functools
import json
import logging
import re
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from engine.media import is_image_path, unread_photo_hint
from engine.stages.picture import picture_info, read_alpha, read_picture, too_large_why, unreadable_why

if TYPE_CHECKING:  # the sources package imports this module
    from engine.stages.sources.audio import AudioTap
    from engine.stages.sources.file_sound import FileSound

log = logging.getLogger(__name__)


class SourceError(RuntimeError):
    """The source cannot be opened or read; the message says what to check."""


@dataclass(frozen=True)
class SourceInfo:
    spec: str
    kind: str  # "camera", "file" or "url"
    width: int
    height: int
    fps: float
    frame_count: int | None  # known for files only


def classify(spec: str) -> str:
    if re.fullmatch(r"\d+", spec) or spec.startswith("/dev/video"):
        return "camera"
    if re.match(r"^(rtsp|rtmps?|https?|udp|tcp|srt|v4l2)://", spec):  # srt/rtmp/v4l2: engine/sources (FFmpeg)
        return "url"
    return "file"


def _video_entry(spec: str, entry: str, section: str = "stream") -> str | None:
    """One `stream=` (or `stream_tags=`) entry of a file's first video stream, by ffprobe; None where ffprobe is
    absent or fails."""
    ffprobe = shutil.which("ffprobe")
    if ffprobe is None or classify(spec) != "file":
        return None
    try:
        done = subprocess.run([ffprobe, "-v", "error", "-select_streams", "v:0", "-show_entries", f"{section}={entry}",
                               "-of", "csv=p=0", spec], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip().strip(",") if done.returncode == 0 else None


def announced_frames(spec: str) -> int | None:
    """The video frame count a file's header states (an MP4 index, say), read by ffprobe; None where the
    container states none (fragmented MP4, Matroska, streams) or ffprobe is absent. OpenCV's count is an
    estimate from the duration (a fragmented MP4 with longer audio reads 302 for 275 frames), so a file that
    ends early is judged against this one."""
    value = _video_entry(spec, "nb_frames")
    return int(value) if value and value.isdigit() else None


def stated_duration(spec: str) -> float | None:
    """How long the file says its video lasts, from its first frame (ffprobe; None where it says nothing). An edit
    list (a clip trimmed on a phone) shortens it, and not the frame count of its header. Matroska states it in the
    track's DURATION tag (HH:MM:SS.fraction, where the track ends on the file's clock), which a cut file keeps: a
    half .mkv went through unremarked."""
    try:
        return float(_video_entry(spec, "duration") or "")
    except ValueError:
        pass
    tag = _video_entry(spec, "DURATION", "stream_tags") or ""
    hours, _, rest = tag.partition(":")
    minutes, _, seconds = rest.partition(":")
    try:
        ends = int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    except ValueError:
        return None
    try:  # unread, the tag's end would be taken for a duration and overstate it: nothing is claimed then
        return ends - float(_video_entry(spec, "start_time") or "")
    except ValueError:
        return None


SHORT_FIRST_S = 1.0  # a first video stream this short beside a longer one is a cover or a slate, not the video


def _stream_seconds(stream: dict) -> float | None:
    """A video stream's length as ffprobe states it (its duration, Matroska's DURATION tag, or frames over rate)."""
    try:
        return float(stream["duration"])
    except (KeyError, ValueError):
        pass
    hours, _, rest = str(stream.get("tags", {}).get("DURATION", "")).partition(":")
    minutes, _, seconds = rest.partition(":")
    try:
        return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    except ValueError:
        pass
    try:
        num, _, den = str(stream.get("avg_frame_rate", "")).partition("/")
        return int(stream["nb_frames"]) / (float(num) / float(den or 1))
    except (KeyError, ValueError, ZeroDivisionError):
        return None


def video_streams(spec: str) -> list[dict]:
    """A file's video streams as ffprobe states them (size, rate, length, field order, pixel aspect), cover art an
    MP4 marks as such left out (not a video stream to FFmpeg's readers); [] where ffprobe is absent or fails."""
    ffprobe = shutil.which("ffprobe")
    if ffprobe is None:
        return []
    try:
        done = subprocess.run([ffprobe, "-v", "error", "-select_streams", "v", "-show_entries",
                               "stream=width,height,nb_frames,duration,avg_frame_rate,r_frame_rate,field_order,"
                               "sample_aspect_ratio:stream_tags=DURATION,rotate:stream_side_data=rotation"
                               ":stream_disposition=attached_pic",
                               "-of", "json", spec], capture_output=True, text=True, timeout=30)
        return [s for s in json.loads(done.stdout or "{}").get("streams", [])
                if not s.get("disposition", {}).get("attached_pic")]
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return []


def check_video_streams(spec: str, streams: list[dict]) -> None:
    """A file with several video streams: OpenCV reads only the first, and the output holds only that one. A first
    stream that is a cover picture or a short slate beside the real video is refused (its video had been lost with
    exit 0: "1 frame" written from an MKV's cover), saying how to keep the video; otherwise a warning names the one
    read."""
    if len(streams) < 2:
        return
    lengths = [_stream_seconds(s) for s in streams]
    named = [f"{n}: {s.get('width')}x{s.get('height')}" + (f", {t:.1f} s" if t is not None else "")
             for n, (s, t) in enumerate(zip(streams, lengths, strict=True))]
    longest = max(range(len(streams)), key=lambda n: lengths[n] or 0.0)
    first, most = lengths[0], lengths[longest]
    keep = f"ffmpeg -i {shlex.quote(spec)} -map 0:v:{longest} -map 0:a? -c copy VIDEO.mkv"
    if longest != 0 and first is not None and most is not None and first < min(SHORT_FIRST_S, most / 2):
        raise SourceError(f"{spec} holds {len(streams)} video streams ({'; '.join(named)}) and only the first is "
                          f"read, a still or a slate beside the video: make its video the only one first ({keep})")
    log.warning("%s holds %d video streams (%s): only the first is anonymized and written; to take another: "
                "ffmpeg -i %s -map 0:v:N -map 0:a? -c copy VIDEO.mkv", spec, len(streams), "; ".join(named),
                shlex.quote(spec))


# Containers whose timestamps may jump (a stream recorded across an encoder restart): FFmpeg's own command line
# removes a jump over DISCONTINUITY_S from the sound it copies, OpenCV keeps it in the frames' times.
JUMPY_FORMATS = {"mpegts", "mpeg", "flv", "mpegtsraw"}
DISCONTINUITY_S = 10.0  # FFmpeg's dts_delta_threshold


def file_clock(spec: str) -> tuple[float, str]:
    """(how long after the file's start its video starts, the container's name), by ffprobe; (0, "") where it says
    nothing. OpenCV times frames from the video's start, FFmpeg copies the sound from the file's."""
    ffprobe = shutil.which("ffprobe")
    if ffprobe is None:
        return 0.0, ""
    try:
        done = subprocess.run([ffprobe, "-v", "error", "-select_streams", "v:0", "-show_entries",
                               "stream=start_time:format=start_time,format_name", "-of", "json", spec],
                              capture_output=True, text=True, timeout=30)
        probe = json.loads(done.stdout or "{}")
        name = str(probe.get("format", {}).get("format_name", ""))
        return float(probe["streams"][0]["start_time"]) - float(probe["format"]["start_time"]), name
    except (ValueError, KeyError, IndexError, TypeError, OSError, subprocess.TimeoutExpired):
        return 0.0, ""


DAMAGED_READS = 250  # failed reads tried past a file's undecodable frames (10 s at 25 fps) before it counts as ended
STILL_FPS = 25.0  # a picture's rate as FFmpeg's image reader states it (a still played as a camera runs at it)


def open_capture(target: int | str, streams: list[dict] = ()):
    """OpenCV's reader, or for an interlaced file (its first video stream, as `video_streams` states it) an FFmpeg
    child's behind the same API: OpenCV returns an interlaced file's frames unfilled, black or garbage
    (engine/stages/sources/ffmpeg_file.py)."""
    from engine.stages.sources.ffmpeg_file import INTERLACED_ORDERS, FFmpegFileCapture  # sources/ imports this module

    if streams and streams[0].get("field_order") in INTERLACED_ORDERS and shutil.which("ffmpeg"):
        log.info("%s is interlaced: decoded and deinterlaced by FFmpeg", target)
        return FFmpegFileCapture(str(target), streams[0])
    return cv2.VideoCapture(target)


MAX_SQUARED_SIDE = 8192  # an anamorphic frame is stretched along its short pixels unless that passes this


def pixel_aspect(cap: cv2.VideoCapture) -> float:
    """The video's sample (pixel) aspect ratio as its stream states it; 1 where it states none."""
    num, den = cap.get(cv2.CAP_PROP_SAR_NUM), cap.get(cv2.CAP_PROP_SAR_DEN)
    return num / den if num > 0 and den > 0 else 1.0


def square_pixels_size(shape: tuple[int, int], aspect: float) -> tuple[int, int] | None:
    """(height, width) of a frame of `shape` stored with pixels `aspect` wide as tall, shown with square pixels:
    the narrow side of its pixels stretched (no detail dropped) unless that passes MAX_SQUARED_SIDE, then the other
    shrunk; even sizes (the encoders' 4:2:0). None where its pixels are square (within 1 %)."""
    if abs(aspect - 1.0) <= 0.01:
        return None
    height, width = shape
    wider, taller = (height, width * aspect), (height / aspect, width)
    height, width = wider if aspect > 1 else taller
    if max(height, width) > MAX_SQUARED_SIDE:
        height, width = taller if aspect > 1 else wider
    return max(2, 2 * round(height / 2)), max(2, 2 * round(width / 2))


class VideoSource:
    """`read()` returns the next BGR frame, or None at the end of a file (or when a camera is gone)."""

    alpha: np.ndarray | None = None  # a transparent picture's alpha, upright: its output keeps it (ImageSink)
    undecodable = 0  # a file's frames its decoder failed on and that were skipped (`_past_damage`)
    _square: tuple[int, int] | None = None  # an anamorphic video's size with square pixels (`_squared`)

    def __init__(self, spec: str, loop: bool = False) -> None:
        self.spec = str(spec)
        self.kind = classify(self.spec)
        self.loop = loop
        # A file's frame times (s, from the file's start), one per frame read, so that a recording of a variable
        # frame rate can be put back on them (engine/stages/sinks/retime.py). Not kept when looped (live only).
        self.frame_times: list[float] | None = [] if self.kind == "file" and not loop else None
        self._streams = video_streams(self.spec) if self._is_video_file() else []
        check_video_streams(self.spec, self._streams)
        self._cap = self._open()
        self.info = self._probe()
        # A picture played looped is a still camera: the same frame for as long as it runs. OpenCV's image reader
        # cannot seek back to its one frame, and the engine then saw a camera lost and back every second.
        self._still = self._first.copy() if self.kind == "file" and is_image_path(self.spec) else None
        self._read_count = 0  # frames read, loops included: a file's frame numbers (`last_index`)
        self._loop_start = 0  # the frame number where the pass being read began
        self._sound: FileSound | None = None  # a file played live to stream outputs: its sound (`audio`)
        self._closed = False  # no sound decoder starts for it once closed (`audio`)

    def _open(self) -> cv2.VideoCapture:
        if self.kind == "file":
            path = Path(self.spec)
            if not path.exists():
                raise SourceError(f"no such video file: {self.spec}")
            if not path.is_file():
                raise SourceError(f"not a file: {self.spec}")
            if is_image_path(self.spec):
                return self._open_picture()
        target: int | str = int(self.spec) if self.spec.isdigit() else self.spec
        cap = open_capture(target, self._streams)
        if not cap.isOpened():
            raise SourceError(self._open_hint())
        ok, first = cap.read()
        if not ok or first is None:
            cap.release()
            raise SourceError(f"{self._open_hint()} (opened, but no frame could be read)")
        self._square = square_pixels_size(first.shape[:2], pixel_aspect(cap))
        self._first: np.ndarray | None = self._squared(first)
        self._first_time = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000
        return cap

    def _is_video_file(self) -> bool:
        return self.kind == "file" and not is_image_path(self.spec) and Path(self.spec).is_file()

    def _squared(self, frame: np.ndarray) -> np.ndarray:
        """The frame as a player shows it, where its pixels are not square (anamorphic video: HDV's 1440x1080 shown
        at 1920x1080). The faces are looked for in this picture: stored 3x narrower, a close-up went unseen in every
        frame (69 of 69 face-frames left visible, exit 0); the output is this picture, its pixels square."""
        if self._square is None or frame.shape[:2] == self._square:
            return frame
        height, width = self._square
        grows = height * width >= frame.shape[0] * frame.shape[1]
        return cv2.resize(frame, (width, height), interpolation=cv2.INTER_LINEAR if grows else cv2.INTER_AREA)

    def _open_picture(self) -> cv2.VideoCapture:
        """A photo, upright by its EXIF orientation (engine/stages/picture.py); OpenCV's video reader only where
        `imread` cannot read it. Returns a capture with nothing more to read: its one frame is `_first`."""
        info = picture_info(self.spec)  # its header, once
        if (why := too_large_why(info)) is not None:
            raise SourceError(f"cannot read picture {self.spec}: {why}")
        picture = read_picture(self.spec, info)
        if picture is None:
            raise SourceError(f"cannot read picture {self.spec}: {unreadable_why(self.spec, info)}")
        self._first, self._first_time = picture, 0.0
        self.alpha = read_alpha(self.spec, picture.shape[:2], info)
        return cv2.VideoCapture()

    def _open_hint(self) -> str:
        if self.kind == "camera":
            return (
                f"cannot open camera {self.spec}: it is absent or busy (another program may hold it; "
                "`v4l2-ctl --list-devices` lists cameras)"
            )
        if self.kind == "url":
            return f"cannot open stream {self.spec}: check the URL and that the stream is live"
        if (hint := unread_photo_hint(self.spec)) is not None:
            return f"cannot read {self.spec}: {hint}"
        if is_image_path(self.spec):
            return f"cannot read picture {self.spec}: not a picture, or corrupt"
        return f"cannot read video {self.spec}: not a video, or corrupt"

    def _probe(self) -> SourceInfo:
        assert self._first is not None
        h, w = self._first.shape[:2]
        fps = self._cap.get(cv2.CAP_PROP_FPS) if self._cap.isOpened() else STILL_FPS
        if not fps or not np.isfinite(fps) or fps <= 0 or fps > 240:
            fps = 30.0
        count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT)) if self.kind == "file" else None
        if self.kind == "file" and is_image_path(self.spec):  # OpenCV reports 1 for JPEG, nonsense for PNG, TIFF...
            count = 1
        return SourceInfo(self.spec, self.kind, w, h, float(fps), count if count and count > 0 else None)

    @property
    def fps_fraction(self) -> Fraction:
        """The frame rate as a fraction (29.97 -> 30000/1001) so a file sink keeps timing exact."""
        return Fraction(self.info.fps).limit_denominator(1001)

    def read(self) -> np.ndarray | None:
        frame = self._next_frame()
        if frame is not None:
            self._read_count += 1
            if self._sound is not None:
                self._sound.frames_read(self._read_count)
        return frame

    def _next_frame(self) -> np.ndarray | None:
        if self._first is not None:
            frame, self._first = self._first, None
            self._timed(self._first_time)
            return frame
        if self._still is not None:
            return self._still.copy() if self.loop else None
        ok, frame = self._cap.read()
        if not (ok and frame is not None) and self.kind == "file":
            ok, frame = self._past_damage()
        if ok and frame is not None:
            self._timed(self._cap.get(cv2.CAP_PROP_POS_MSEC) / 1000)
            return self._squared(frame)
        if self.kind == "file" and self.loop:
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, frame = self._cap.read()
            if ok:
                self._wrapped()
            return self._squared(frame) if ok else None
        return None

    def _past_damage(self) -> tuple[bool, np.ndarray | None]:
        """The next frame a damaged stretch of a file leaves readable. OpenCV's reader fails on each frame it cannot
        decode and goes on after them: a few zeroed kilobytes mid-file had ended the run there (40 of its 90 frames,
        86 decodable), reported as a file cut short. At the true end every try fails at once."""
        for tries in range(1, DAMAGED_READS + 1):
            ok, frame = self._cap.read()
            if ok and frame is not None:
                self.undecodable += tries
                log.warning("%s: %d frame(s) after frame %d could not be decoded (the file is damaged there); "
                            "they are not in the output", self.spec, tries, self._read_count)
                return ok, frame
        return False, None

    def _wrapped(self) -> None:
        """A looped file starts a new pass with the next frame read."""
        self._loop_start = self._read_count
        if self._sound is not None:
            self._sound.loop_started(self._read_count)

    @property
    def last_index(self) -> int | None:
        """A file's number of the frame read last, counted across loops (frame i at i / fps s on the stream
        outputs' clock, where its sound is placed: sources/file_sound.py); None for a camera."""
        return self._read_count - 1 if self.kind == "file" and self._read_count else None

    @functools.cached_property
    def has_audio(self) -> bool:
        """Whether a video file has sound (ffprobe); a camera or picture has none here."""
        if self.kind != "file" or is_image_path(self.spec):
            return False
        from engine.stages.sink import audio_codecs  # sink.py's sound imports the sources package

        return bool(audio_codecs(self.spec))

    @property
    def audio_started(self) -> bool:
        """Whether `audio` was taken (a file's sound decoder runs): outputs may hold its tap."""
        return self._sound is not None

    @property
    def audio(self) -> AudioTap | None:
        """The file's sound for stream outputs, decoded by FFmpeg in step with the frames read (started on first
        use: `blurcast run` and recordings copy the sound from the file instead)."""
        if not self.has_audio:
            return None
        if self._sound is None and self._closed:
            return None  # closed (a source switched out): a decoder started now would run for nothing, unclosed
        if self._sound is None:
            from engine.stages.sources.file_sound import FileSound

            # the pass being read starts at `_loop_start`: a recording started after the file wrapped takes its sound
            # from there (starting from frame 0 left the outputs without sound until the next wrap)
            self._sound = FileSound(self.spec, self.info.fps, video_start_s=file_clock(self.spec)[0],
                                    frames=self.info.frame_count, first_loop=self._loop_start)
            self._sound.frames_read(self._read_count)
        return self._sound.audio

    def _timed(self, seconds: float) -> None:
        if self.frame_times is not None:
            self.frame_times.append(seconds)

    def source_times(self) -> list[float] | None:
        """The times of the frames read so far, on the file's clock as FFmpeg copies its sound (from the file's
        start, which may be before the video's); None for cameras, streams and looped files, and where the times
        jump in a way FFmpeg's sound copy does not follow."""
        if self.frame_times is None:
            return None
        offset, container = file_clock(self.spec)
        gaps = np.diff(self.frame_times) if len(self.frame_times) > 1 else np.zeros(0)
        if container in JUMPY_FORMATS and (gaps > DISCONTINUITY_S).any():
            log.warning("the frame times of %s jump by %.0f s (a stream recorded across a restart?): the recording "
                        "keeps a constant rate", self.spec, float(gaps.max()))
            return None
        return [t + offset for t in self.frame_times]

    def ended_early(self) -> bool:
        """Whether the frames read stop short of the video's stated duration (a cut download), by more than two
        frames. Unknown times or duration: True, so that the header's frame count is believed."""
        short = self.short_of_stated()
        return True if short is None else short[0] < short[1]

    def short_of_stated(self) -> tuple[float, float] | None:
        """(seconds the frames read span, with two frames to spare; the seconds the file states), or None where
        either is unknown."""
        duration = stated_duration(self.spec)
        if not self.frame_times or duration is None:
            return None
        first, last = self.frame_times[0], self.frame_times[-1]
        return last - first + 3 / max(self.info.fps, 1.0), duration

    def reopen(self, attempts: int = 1, wait: float = 0.5) -> bool:
        """Try to get a vanished camera or stream back (unplugged, network blip)."""
        for _ in range(attempts):
            self._cap.release()
            try:
                self._cap = self._open()
                if self.kind == "file":  # a file read again from its start: a new pass, as a loop's wrap
                    self._wrapped()
                return True
            except SourceError:
                time.sleep(wait)
        return False

    def close(self) -> None:
        self._closed = True
        self._cap.release()
        if self._sound is not None:
            self._sound.close()
