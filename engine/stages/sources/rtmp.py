"""RTMP in: listen for a publisher (the phone pushes to the rig; no RTMP server needed) or pull from a server.

Spec: `rtmp://:1935/live/KEY` (no host: listen; also `?listen=1`) or `rtmp://server/app/KEY` (pull).
FFmpeg's `-listen 1` is the server: one publisher at a time, which is what a rig needs.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from engine.stages.sources.ffmpeg_pipe import FFmpegSource
from engine.stages.sources.srt import LISTEN_TIMEOUT_S, LIVE_INPUT
from engine.stream_options import DEFAULT_TLS, Tls


def rtmp_url(spec: str) -> tuple[str, bool]:
    parts = urlsplit(spec)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    listen = query.pop("listen", "0") == "1" or not parts.hostname
    netloc = f"{parts.hostname or '0.0.0.0'}:{parts.port or (443 if parts.scheme.lower() == 'rtmps' else 1935)}"
    return urlunsplit((parts.scheme, netloc, parts.path or "/live/stream", urlencode(query), "")), listen


def open_rtmp(spec: str, open_timeout_s: float | None = None, tls: Tls = DEFAULT_TLS) -> FFmpegSource:
    url, listen = rtmp_url(spec)
    open_timeout_s = open_timeout_s or (LISTEN_TIMEOUT_S if listen else 20.0)
    args = [*LIVE_INPUT, *(["-listen", "1"] if listen else []), *tls.ffmpeg_args(url)]
    hint = (f"no RTMP publisher reached {spec} (push to rtmp://THIS-MACHINE:{url.split(':')[2].split('/')[0]}"
            f"/{url.split('/', 3)[3]})" if listen else f"cannot pull RTMP from {spec}: check the URL and key")
    return FFmpegSource(spec, args, url, hint, open_timeout_s=open_timeout_s, waits_for_sender=listen)
