"""RTSP and HTTP(S) pull (IP cameras, HLS, an MPEG-TS over HTTP): FFmpeg with the sound, unlike OpenCV."""

from __future__ import annotations

from urllib.parse import urlsplit

from engine.stages.sources.ffmpeg_pipe import FFmpegSource
from engine.stages.sources.srt import LIVE_INPUT


def open_pull(spec: str, open_timeout_s: float = 20.0) -> FFmpegSource:
    # RTSP over TCP: UDP loses packets on Wi-Fi and a lost packet is a smeared frame for seconds.
    args = [*LIVE_INPUT, *(["-rtsp_transport", "tcp"] if urlsplit(spec).scheme == "rtsp" else [])]
    hint = f"cannot open stream {spec}: check the URL and that the stream is live"
    return FFmpegSource(spec, args, spec, hint, open_timeout_s=open_timeout_s)
