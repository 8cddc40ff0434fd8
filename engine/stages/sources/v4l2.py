"""A V4L2 camera or capture card with its size, rate and pixel format chosen (Linux).

Spec: `v4l2:///dev/video0?size=1920x1080&fps=30&format=mjpeg` (format: mjpeg, yuyv422, nv12...).
USB capture cards give 1080p30 only as MJPEG; YUYV at that size exceeds USB 2 bandwidth, so the choice
matters and is left to the user (`v4l2-ctl --list-formats-ext -d /dev/video0` lists what a device offers).
The card's sound is a separate ALSA device and is not read here.

Checked against FFmpeg's v4l2 demuxer (libavdevice/v4l2.c, doc/indevs.texi): `-input_format` takes a pixel
format for raw video (yuyv422, nv12) or a codec name (mjpeg, h264); `-video_size` WxH; `-framerate` a rate
the driver may round ("The driver changed the time per frame"), so the engine uses the rate FFmpeg's output
reports. For raw formats the demuxer sets the stream's rate, so the *input* line already reads "rawvideo ...
30 fps": ffmpeg_pipe.py reads the rate from the output's line only (it took the input's, before the size was
known, and a YUYV card never opened). Tested on files FFmpeg describes the same way (no device here).
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlsplit

from engine.stages.source import SourceError
from engine.stages.sources.ffmpeg_pipe import FFmpegSource

FORMATS = {"mjpeg": "mjpeg", "mjpg": "mjpeg", "yuyv": "yuyv422", "yuyv422": "yuyv422", "nv12": "nv12",
           "h264": "h264"}


def v4l2_args(spec: str) -> tuple[list[str], str]:
    parts = urlsplit(spec)
    query = dict(parse_qsl(parts.query))
    args = ["-f", "v4l2"]
    if fmt := query.get("format"):
        if fmt.lower() not in FORMATS:
            raise SourceError(f"{spec}: format {fmt!r} is not one of {', '.join(sorted(FORMATS))}")
        args += ["-input_format", FORMATS[fmt.lower()]]
    if size := query.get("size"):
        if not re.fullmatch(r"\d+x\d+", size):
            raise SourceError(f"{spec}: size is WIDTHxHEIGHT, e.g. 1920x1080")
        args += ["-video_size", size]
    if fps := query.get("fps"):
        args += ["-framerate", _check_fps(spec, fps)]
    return args, parts.path or "/dev/video0"


def open_v4l2(spec: str, open_timeout_s: float = 10.0) -> FFmpegSource:
    args, device = v4l2_args(spec)
    hint = (f"cannot open {device} as asked ({spec}): absent, busy, or that size/rate/format is not offered "
            f"(`v4l2-ctl --list-formats-ext -d {device}`)")
    # A device is decoded directly: copied into MPEG-TS first, MJPEG and raw video arrive as unusable data.
    source = FFmpegSource(spec, args, device, hint, kind="camera", open_timeout_s=open_timeout_s, remux=False)
    return source


def _check_fps(spec: str, fps: str) -> str:
    """A rate FFmpeg's `-framerate` reads: a positive number or fraction (30, 59.94, 30000/1001)."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(?:/(\d+))?", fps)
    if not m or float(m.group(1)) <= 0 or (m.group(2) is not None and int(m.group(2)) == 0):
        raise SourceError(f"{spec}: fps is a positive rate, e.g. 30, 59.94 or 30000/1001")
    return fps
