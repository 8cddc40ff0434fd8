"""The control API's wire format, shared by the engine (server) and its clients (UI, CLI).

A request is one JSON object per line with a `cmd` and its arguments; the reply is `{"ok": true, "result":
...}` or `{"ok": false, "error": "..."}`. `subscribe` turns the connection into a telemetry stream
(`{"event": "telemetry", ...}` lines) until the client goes away.

Commands (engine/service.py implements them): ping, status, settings, limits, stream_limits, set {settings},
panic {on}, pause {on}, preview {max_width}, source {spec, loop}, sink_start {kind, path; a stream: bitrate_kbps,
keyframe_s, preset, srt_latency_ms, srt_passphrase}, sink_stop {name},
facebank_list, facebank_add {name, paths, face} (-> added, soft: [path, sharpness] of photos taken though soft),
facebank_remove {name}, facebank_rename {name, new_name}, facebank_refresh, enrol_track {name, track_id, seconds},
facebank_reload, subscribe {hz}, shutdown.

Standard library only: a client that imports this loads no model, no OpenCV, no engine internals.
"""

from __future__ import annotations

import base64
import json
from typing import Any

MAX_LINE = 1 << 20


class ControlError(RuntimeError):
    """The engine answered with an error, or could not be reached."""


class NoAnswer(ControlError):
    """The engine took the request but gave no answer (the client's timeout, a dropped connection): what it asked for
    may still have been done. Not a refusal."""


def encode(obj: Any) -> bytes:
    """One message as a JSON line."""
    return (json.dumps(obj, separators=(",", ":"), default=str) + "\n").encode()


def soft_warning(soft: list) -> str | None:
    """The words for a `facebank_add` reply's `soft` photos ([path, sharpness] each), or None when none is soft."""
    pairs = [photo for photo in soft or [] if isinstance(photo, list | tuple) and len(photo) == 2]
    if not pairs:
        return None
    photos = ", ".join(f"{str(path).rsplit('/', 1)[-1]} (sharpness {float(sharp):.0f})" for path, sharp in pairs)
    return (f"taken, but soft: {photos}. You may be blurred at times: add a sharper photo of the same person "
            "(in focus, held still)")


def decode_preview(result: dict) -> tuple[int, int, bytes]:
    """(width, height, BGR bytes) of a `preview` reply."""
    return int(result["width"]), int(result["height"]), base64.b64decode(result["bgr"])
