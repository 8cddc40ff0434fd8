"""Sink stage: where anonymized frames go. Every sink takes only `SafeFrame`s (see engine/anonymize.py).

- `VirtualCameraSink`: pyvirtualcam (v4l2loopback on Linux, OBS Virtual Camera on Windows/macOS).
- `FileSink`: every frame to a video file through FFmpeg, same size and frame rate, audio copied.
- `PreviewSink`: an OpenCV window, only where a display exists.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from fractions import Fraction
from pathlib import Path
from typing import Protocol

from engine.anonymize import SafeFrame

log = logging.getLogger(__name__)


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


class FileSink:
    """H.264 MP4 (or whatever the suffix says) via an FFmpeg subprocess; audio copied from `audio_from`."""

    name = "file"

    def __init__(self, path: str | Path, width: int, height: int, fps: Fraction, audio_from: str | None = None,
                 preset: str = "veryfast", crf: int = 18) -> None:
        ffmpeg = shutil.which("ffmpeg")
        if ffmpeg is None:
            raise SinkError("the file sink needs ffmpeg on PATH (Debian: `apt-get install ffmpeg`)")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        cmd = [ffmpeg, "-hide_banner", "-loglevel", "error", "-y",
               "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{width}x{height}", "-r", str(fps), "-i", "pipe:0"]
        if audio_from and Path(audio_from).is_file():
            cmd += ["-i", audio_from, "-map", "0:v", "-map", "1:a?", "-c:a", "copy"]
        # yuv420p needs even sizes; pad by one pixel rather than resize, so every face stays where it was.
        cmd += ["-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2", "-c:v", "libx264", "-preset", preset, "-crf", str(crf),
                "-pix_fmt", "yuv420p", "-r", str(fps), str(self.path)]
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
        self.frames = 0

    def write(self, frame: SafeFrame) -> None:
        image = _check(frame).image
        try:
            assert self._proc.stdin is not None
            self._proc.stdin.write(memoryview(image.data if image.flags.c_contiguous else image.copy().data))
        except BrokenPipeError as exc:
            raise SinkError(f"ffmpeg stopped writing {self.path}: {self._stderr()}") from exc
        self.frames += 1

    def close(self) -> None:
        if self._proc.stdin and not self._proc.stdin.closed:
            self._proc.stdin.close()
        code = self._proc.wait()
        if code != 0:
            raise SinkError(f"ffmpeg failed writing {self.path}: {self._stderr()}")

    def _stderr(self) -> str:
        return (self._proc.stderr.read().decode(errors="replace").strip() if self._proc.stderr else "")[-1000:]


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
