"""What a stream output accepts (`--bitrate`, `--keyframe`, `--preset`; the control API's `sink_start
kind=stream`), checked before any FFmpeg starts: a bad value is one clear error, never an encoder that
fails later, or a preset string FFmpeg would take as something else."""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from engine.config import Limit
from engine.cpu_load import usable_cores

X264_PRESETS = ("auto", "ultrafast", "superfast", "veryfast", "faster", "fast", "medium")
DEFAULTS: dict[str, Any] = {"bitrate_kbps": 4000, "keyframe_s": 2.0, "preset": "auto"}
# `auto`: ultrafast on a machine of this many cores or fewer, else veryfast (OBS's default). At 1080p30 x264 veryfast
# took 25 ms of CPU a frame (75 % of a core) and ultrafast 9.5 ms; on 2 cores SRT in -> SRT out then kept 12.8 fps
# against 20.5 (bench/bench_stream.py 1080p, docs/streaming.md): the encoder must not starve the engine.
AUTO_ULTRAFAST_MAX_CORES = 4


def resolve_preset(preset: str) -> str:
    """The x264 preset `preset` stands for: itself, or for `auto` the one this machine's cores can afford."""
    if preset != "auto":
        return preset
    return "ultrafast" if usable_cores() <= AUTO_ULTRAFAST_MAX_CORES else "veryfast"


# Platforms take 2.5-8 Mb/s at 1080p (YouTube up to 51 Mb/s at 4K); below 300 kb/s a 720p picture is mush.
# Keyframes: platforms ask 2 s (Twitch at most 4 s; past 10 s a viewer waits that long for a picture).
STREAM_LIMITS: dict[str, Limit] = {
    "bitrate_kbps": Limit("H.264 bitrate in kb/s (CBR-capped): what the uplink must carry", 300, 51_000),
    "keyframe_s": Limit("seconds between keyframes: platforms ask 2; a viewer joining waits up to this long",
                        0.5, 10.0),
    "preset": Limit("x264 speed: faster presets cost less CPU for a softer picture; auto: ultrafast on 4 cores or "
                    "fewer, else veryfast",
                    choices=X264_PRESETS),
}


def check_stream_options(bitrate_kbps: Any = DEFAULTS["bitrate_kbps"], keyframe_s: Any = DEFAULTS["keyframe_s"],
                         preset: Any = DEFAULTS["preset"]) -> tuple[int, float, str]:
    """The options as FFmpeg gets them (`auto` resolved), or ValueError naming the option and its accepted range."""
    bitrate = _number("bitrate_kbps", bitrate_kbps, integer=True)
    keyframe = _number("keyframe_s", keyframe_s, integer=False)
    STREAM_LIMITS["bitrate_kbps"].check("bitrate_kbps", bitrate)
    STREAM_LIMITS["keyframe_s"].check("keyframe_s", keyframe)
    STREAM_LIMITS["preset"].check("preset", preset)
    return int(bitrate), keyframe, resolve_preset(str(preset))


def _number(name: str, value: Any, integer: bool) -> float:
    # JSON clients may send 6000.0 for 6000; a bool is an int to Python but never a bitrate.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if isinstance(value, int) and abs(value) > 10**9:  # no float for it: math.isfinite would overflow
        raise ValueError(f"{name} is out of range, got a {len(str(abs(value)))}-digit number")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if integer and value != int(value):
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    return float(value)


# SRT outputs (the control API's `srt_latency_ms`, `srt_passphrase`; FFmpeg takes them in the URL's query).
# Latency: SRT's default 120 ms suits a LAN and SRT advises 4x the round trip, so a cellular far end takes 1-3 s;
# below 20 ms nothing can be resent in time, past 10 s the picture is that late. Passphrase: SRT's own rule.
SRT_PASSPHRASE_CHARS = (10, 79)
SRT_LIMITS: dict[str, Limit] = {
    "srt_latency_ms": Limit("SRT latency in ms (both ends use the larger): 4x the round trip; 120 on a LAN",
                            20, 10_000),
    "srt_passphrase": Limit("SRT encryption passphrase, 10 to 79 bytes (the far end uses the same); "
                            "masked in names, logs and telemetry", *SRT_PASSPHRASE_CHARS),
}
SRT_DEFAULTS: dict[str, Any] = {"srt_latency_ms": 120, "srt_passphrase": None}


def srt_output_url(url: str, latency_ms: Any = None, passphrase: Any = None) -> str:
    """`url` with the SRT latency (ms, as OBS and the phone apps show it; FFmpeg's `latency` is in microseconds)
    and passphrase added to its query; ValueError naming the option and its range. A passphrase already in the
    URL is held to the same rule, so it fails here and not at FFmpeg's first connection."""
    if urlsplit(url).scheme.lower() != "srt":
        if latency_ms is not None or passphrase is not None:
            raise ValueError("latency and passphrase are SRT options: this output is not srt://")
        return url
    # FFmpeg reads the query as written, from the first ? to the end, split at & (libsrt.c: no %-decoding, no
    # fragment: SRS's `streamid=#!::r=...` keeps its #); so is it here: urlsplit would cut it at the #.
    raw_query = url.partition("?")[2]
    query = dict(item.partition("=")[::2] for item in raw_query.split("&") if item)
    added = []
    if latency_ms is not None:
        latency = _number("srt_latency_ms", latency_ms, integer=True)
        SRT_LIMITS["srt_latency_ms"].check("srt_latency_ms", latency)
        added.append(("latency", str(int(latency) * 1000)))
    if passphrase is not None:
        if not isinstance(passphrase, str) or any(c in passphrase for c in "&+#? ") or not passphrase.isprintable():
            raise ValueError("srt_passphrase is text without spaces or any of & + # ? (FFmpeg reads it from the URL)")
        added.append(("passphrase", passphrase))
    for key, _ in added:
        if key in query:
            raise ValueError(f"{key} is given twice: the URL already sets {key}=")
    query.update(added)
    low, high = SRT_PASSPHRASE_CHARS
    if "passphrase" in query:
        size = len(query["passphrase"].encode())  # SRT counts bytes: an accented letter is two
        if not low <= size <= high:
            raise ValueError(f"srt_passphrase must have {low} to {high} bytes (SRT's rule; plain letters are one "
                             f"byte each), got {size}")
    if not added:
        return url
    extra = "&".join(f"{key}={value}" for key, value in added)
    return url + ("&" if raw_query else ("" if url.endswith("?") else "?")) + extra


def published_stream_limits() -> dict[str, dict[str, Any]]:
    """Each option's default and range or choices, as `engine.config.published_limits` does for settings
    (the control API's `stream_limits`); a passphrase's range is its length."""
    return {**{name: limit.as_dict(DEFAULTS[name]) for name, limit in STREAM_LIMITS.items()},
            **{name: limit.as_dict(SRT_DEFAULTS[name]) for name, limit in SRT_LIMITS.items()}}


# TLS far ends: an https:// pull, an rtmps:// push (a platform's ingest: Facebook asks RTMPS, YouTube and Twitch take
# it) or pull. FFmpeg checks no certificate unless asked (`tls_verify` 0), so an rtmps push handed its stream key to
# whoever sat in the middle (a hotel's or a venue's Wi-Fi). Blurcast asks it to, as OBS does for RTMPS: against the
# system's trusted authorities, or against `ca_file` alone (your own relay's self-signed certificate).
TLS_SCHEMES = ("https", "rtmps")
TLS_HINT = "your own relay's self-signed certificate: --tls-ca CERT.pem (--tls-no-verify takes any: not advised)"
# FFmpeg's words for a certificate it refused (GnuTLS here; OpenSSL builds), and only these: a stream's metadata or a
# URL may say "certificate" too, and a failure taken for a refusal is never retried (a review).
_REFUSALS = re.compile(r"Peer certificate failed verification|does not match hostname|certificate verify failed|"
                       r"Unable to verify peer certificate|Certificate verification failed", re.IGNORECASE)
_TAG = re.compile(r"^\[[^\]]*@ 0x[0-9a-f]+\]\s*")


@dataclass(frozen=True)
class Tls:
    """How the certificate of a TLS far end is checked: `verify` against the system's authorities, or against
    `ca_file` alone where given; not at all with `verify` False."""

    verify: bool = True
    ca_file: str | None = None

    def __post_init__(self) -> None:
        if self.ca_file is not None:
            path = Path(self.ca_file).expanduser()
            if not path.is_file() or not os.access(path, os.R_OK):
                raise ValueError(f"--tls-ca {self.ca_file}: no readable certificate file there")
            with path.open("rb") as pem:  # its head only: a --tls-ca that is a huge file is not read whole
                head = pem.read(1_000_000)
            if b"-----BEGIN CERTIFICATE-----" not in head:
                raise ValueError(f"--tls-ca {self.ca_file}: not a PEM certificate (-----BEGIN CERTIFICATE-----)")
            object.__setattr__(self, "ca_file", str(path.resolve()))  # an engine restarted elsewhere finds it

    def checks(self, url: str) -> bool:
        """Whether `url`'s certificate is checked: a TLS scheme, and `verify`."""
        return self.verify and urlsplit(url).scheme.lower() in TLS_SCHEMES

    def ffmpeg_args(self, url: str) -> list[str]:
        """FFmpeg's options for `url` (before its -i, or before it as an output); none for other protocols."""
        if not self.checks(url):
            return []
        return ["-tls_verify", "1", *(["-ca_file", self.ca_file] if self.ca_file else [])]

    def cli_args(self) -> list[str]:
        """`run` / `engine serve` arguments that give these options back (a restart keeps them)."""
        if not self.verify:
            return ["--tls-no-verify"]
        return ["--tls-ca", self.ca_file] if self.ca_file else []


def certificate_refused(lines: list[str]) -> str | None:
    """FFmpeg's message that a far end's certificate was refused (GnuTLS: "Peer certificate failed verification",
    "The certificate's owner does not match hostname"; OpenSSL: "certificate verify failed"), its "[tls @ 0x...]"
    tag cut off; None where no line says so. Ask only where the certificate was checked (`Tls.checks`)."""
    line = next((line for line in reversed(lines) if _REFUSALS.search(line)), None)
    return None if line is None else _TAG.sub("", line)


DEFAULT_TLS = Tls()  # verify against the system's authorities
