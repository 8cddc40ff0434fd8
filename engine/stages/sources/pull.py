"""RTSP and HTTP(S) pull (IP cameras, HLS, an MPEG-TS over HTTP): FFmpeg with the sound, unlike OpenCV."""

from __future__ import annotations

from urllib.parse import urlsplit

from engine.stages.sources.ffmpeg_pipe import FFmpegSource
from engine.stages.sources.srt import LIVE_INPUT
from engine.stream_options import DEFAULT_TLS, Tls


def open_pull(spec: str, open_timeout_s: float = 20.0, tls: Tls = DEFAULT_TLS) -> FFmpegSource:
    # RTSP over TCP: UDP loses packets on Wi-Fi and a lost packet is a smeared frame for seconds.
    rtsp = ["-rtsp_transport", "tcp"] if urlsplit(spec).scheme == "rtsp" else []
    args = [*LIVE_INPUT, *rtsp, *tls.ffmpeg_args(spec)]
    hint = f"cannot open stream {spec}: check the URL and that the stream is live"
    return FFmpegSource(spec, args, spec, hint, open_timeout_s=open_timeout_s)
