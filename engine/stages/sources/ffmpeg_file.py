"""A file OpenCV's reader cannot convert, decoded by an FFmpeg child instead, behind cv2.VideoCapture's reading API.

Interlaced video (a camcorder's AVCHD 1080i, a capture card's or a broadcast recording's 480i/576i): OpenCV 5's
FFmpeg reader fails to convert its frames ("Cannot convert interlaced to progressive frames") and yet returns each
one as read: a buffer it never filled, black in a fresh process, garbage in a used one. The whole output came out
black with exit 0, and its faces went unlooked-at. FFmpeg's own
deinterlacer (bwdif, one frame per frame) gives the picture a viewer sees, and its swscale the colours its tags say.
Frames are timed at the stream's constant rate from its first frame (interlaced video is broadcast's, at a constant
rate), as OpenCV times them.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections import deque
from fractions import Fraction
from threading import Thread

import cv2
import numpy as np

log = logging.getLogger(__name__)

INTERLACED_ORDERS = ("tt", "bb", "tb", "bt")  # ffprobe's field_order of an interlaced stream
DEINTERLACE = "bwdif=mode=send_frame:parity=auto:deint=interlaced"  # a frame per frame; progressive ones kept


def _ratio(text: str | None, default: float) -> float:
    try:
        value = Fraction(str(text).replace(":", "/"))
    except (ValueError, ZeroDivisionError):
        return default
    return float(value) if value > 0 else default


def _rotation(stream: dict) -> int:
    """The stream's rotation in degrees (its display matrix, or an old `rotate` tag); 0 where it states none."""
    for side in stream.get("side_data_list", []):
        if "rotation" in side:
            return int(float(side["rotation"])) % 360
    try:
        return int(stream.get("tags", {}).get("rotate", 0)) % 360
    except ValueError:
        return 0


class FFmpegFileCapture:
    """`read`, `get`, `set` (back to the start only), `isOpened` and `release`, as VideoSource uses them."""

    def __init__(self, path: str, stream: dict) -> None:
        self.path = path
        self.width, self.height = int(stream["width"]), int(stream["height"])
        if _rotation(stream) % 180 == 90:  # FFmpeg turns the picture by its rotation tag, as OpenCV does
            self.width, self.height = self.height, self.width
        self.fps = _ratio(stream.get("avg_frame_rate"), 0.0) or _ratio(stream.get("r_frame_rate"), 30.0)
        self.aspect = _ratio(stream.get("sample_aspect_ratio"), 1.0)  # "0:1" or "N/A": unknown, taken as square
        frames = str(stream.get("nb_frames", ""))
        self.frames = int(frames) if frames.isdigit() else 0
        self._proc: subprocess.Popen | None = None
        self._errors: deque[str] = deque(maxlen=5)
        self._index = -1
        self._ended = False
        self._start()

    def _start(self) -> None:
        ffmpeg = shutil.which("ffmpeg")
        if ffmpeg is None:
            return
        # 0:V:0: the first video stream that is not cover art, the one `video_streams` describes first
        cmd = [ffmpeg, "-v", "error", "-nostdin", "-i", self.path, "-map", "0:V:0", "-vf", DEINTERLACE,
               "-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "bgr24", "pipe:1"]
        self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        Thread(target=self._read_errors, args=(self._proc,), name="ffmpeg-file-log", daemon=True).start()
        self._index, self._ended = -1, False

    def _read_errors(self, proc: subprocess.Popen) -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            self._errors.append(raw.decode(errors="replace").rstrip())

    def isOpened(self) -> bool:  # cv2.VideoCapture's name
        return self._proc is not None

    def read(self) -> tuple[bool, np.ndarray | None]:
        proc = self._proc  # `release` from another thread (a live source closed) may clear it meanwhile
        if proc is None or proc.stdout is None or self._ended:
            return False, None
        size = self.width * self.height * 3
        try:
            data = proc.stdout.read(size)
        except (OSError, ValueError):  # its pipe closed under it by `release`
            data = b""
        if len(data) < size:
            self._ended = True  # the pipe has ended: FFmpeg has exited or is exiting
            if proc.wait() != 0:
                log.warning("FFmpeg stopped reading %s after frame %d (exit %d): %s", self.path, self._index + 1,
                            proc.returncode, " / ".join(self._errors) or "no message")
            return False, None
        self._index += 1
        return True, np.frombuffer(data, np.uint8).reshape(self.height, self.width, 3).copy()

    def get(self, prop: int) -> float:
        values = {cv2.CAP_PROP_POS_MSEC: 1000.0 * max(self._index, 0) / self.fps, cv2.CAP_PROP_FPS: self.fps,
                  cv2.CAP_PROP_FRAME_COUNT: float(self.frames), cv2.CAP_PROP_FRAME_WIDTH: float(self.width),
                  cv2.CAP_PROP_FRAME_HEIGHT: float(self.height), cv2.CAP_PROP_SAR_NUM: self.aspect,
                  cv2.CAP_PROP_SAR_DEN: 1.0}
        return values.get(prop, 0.0)

    def set(self, prop: int, value: float) -> bool:
        if prop != cv2.CAP_PROP_POS_FRAMES or value != 0:
            return False
        self.release()  # a looped file: read again from its start
        self._start()
        return self._proc is not None

    def release(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()  # its stderr ends with it, in the thread reading it
