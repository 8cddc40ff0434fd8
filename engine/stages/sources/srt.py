"""SRT in, as listener (the phone or an SRTLA relay calls the rig) or caller (the rig calls a server).

Spec: `srt://:9000?mode=listener` or `srt://relay.example:9000?streamid=...` (caller). The query goes to
FFmpeg unchanged, so its SRT options apply as written there: `latency` (microseconds, as in OBS and
FFmpeg), `passphrase` (10 to 79 characters, SRT's rule), `streamid`, `pbkeylen`...
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from engine.stages.source import SourceError
from engine.stages.sources.ffmpeg_pipe import FFmpegSource

# Short probing: the stream is already live, and FFmpeg's default 5 s analysis is 5 s before the first frame.
LISTEN_TIMEOUT_S = 60.0  # the engine may start before the phone does; `engine start` waits 90 s
LIVE_INPUT = ["-probesize", "1000000", "-analyzeduration", "1000000"]  # -fflags nobuffer measured slower to start


def srt_url(spec: str) -> tuple[str, bool]:
    """FFmpeg's URL for the spec, and whether it listens. No host means listen on every interface."""
    parts = urlsplit(spec)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    if parts.port is None:
        raise SourceError(f"{spec}: an SRT source needs a port, e.g. srt://:9000?mode=listener")
    listener = query.get("mode", "listener" if not parts.hostname else "caller") == "listener"
    query["mode"] = "listener" if listener else "caller"
    passphrase = query.get("passphrase")
    if passphrase is not None and not 10 <= len(passphrase) <= 79:
        raise SourceError("an SRT passphrase has 10 to 79 characters (the sender must use the same one)")
    host = parts.hostname or "0.0.0.0"
    return urlunsplit(("srt", f"{host}:{parts.port}", "", urlencode(query), "")), listener


def open_srt(spec: str, open_timeout_s: float | None = None) -> FFmpegSource:
    url, listener = srt_url(spec)
    open_timeout_s = open_timeout_s or (LISTEN_TIMEOUT_S if listener else 20.0)
    secret = " with the same passphrase" if "passphrase=" in url else ""  # a wrong one is refused at the sender's end
    hint = (f"no SRT sender reached {spec} (is the phone sending to this machine's address and port{secret}?)"
            if listener
            else f"cannot pull SRT from {spec}: check host, port, streamid and passphrase, and that it is live")
    return FFmpegSource(spec, LIVE_INPUT, url, hint, open_timeout_s=open_timeout_s, waits_for_sender=listener)
