"""Sources beyond OpenCV's: one module per kind, all decoded by an FFmpeg child process (ffmpeg_pipe.py).

`open_source(spec)` picks the module from the spec; cameras by index and plain files stay on
engine/stages/source.py's OpenCV `VideoSource`.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from engine.stages.source import VideoSource
from engine.stages.sources.ffmpeg_pipe import FFmpegSource
from engine.stages.sources.pull import open_pull
from engine.stages.sources.rtmp import open_rtmp
from engine.stages.sources.srt import open_srt
from engine.stages.sources.v4l2 import open_v4l2
from engine.stream_options import DEFAULT_TLS, TLS_SCHEMES, Tls

OPENERS = {"srt": open_srt, "rtmp": open_rtmp, "rtmps": open_rtmp, "rtsp": open_pull, "http": open_pull,
           "https": open_pull, "v4l2": open_v4l2}


def is_ffmpeg_spec(spec: str) -> bool:
    return urlsplit(str(spec)).scheme.lower() in OPENERS


def open_source(spec: str, loop: bool = False, open_timeout_s: float | None = None,
                tls: Tls = DEFAULT_TLS) -> VideoSource | FFmpegSource:
    """The source for a camera index, file, or srt/rtmp/rtsp/http/v4l2 URL. `open_timeout_s`: how long to
    wait for the first frame (default: 60 s for a listener, whose phone may not be sending yet; else 20 s).
    `tls`: how an https:// or rtmps:// server's certificate is checked."""
    scheme = urlsplit(str(spec)).scheme.lower()
    if scheme in OPENERS:
        options = {} if open_timeout_s is None else {"open_timeout_s": open_timeout_s}
        return OPENERS[scheme](str(spec), **options, **({"tls": tls} if scheme in TLS_SCHEMES else {}))
    return VideoSource(spec, loop=loop)


__all__ = ["FFmpegSource", "is_ffmpeg_spec", "open_source"]
