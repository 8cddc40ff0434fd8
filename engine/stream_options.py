"""What a stream output accepts (`--bitrate`, `--keyframe`, `--preset`; the control API's `sink_start
kind=stream`), checked before any FFmpeg starts: a bad value is one clear error, never an encoder that
fails later, or a preset string FFmpeg would take as something else."""

from __future__ import annotations

import math
from typing import Any

from engine.config import Limit

X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium")
DEFAULTS: dict[str, Any] = {"bitrate_kbps": 4000, "keyframe_s": 2.0, "preset": "veryfast"}

# Platforms take 2.5-8 Mb/s at 1080p (YouTube up to 51 Mb/s at 4K); below 300 kb/s a 720p picture is mush.
# Keyframes: platforms ask 2 s (Twitch at most 4 s; past 10 s a viewer waits that long for a picture).
STREAM_LIMITS: dict[str, Limit] = {
    "bitrate_kbps": Limit("H.264 bitrate in kb/s (CBR-capped): what the uplink must carry", 300, 51_000),
    "keyframe_s": Limit("seconds between keyframes: platforms ask 2; a viewer joining waits up to this long",
                        0.5, 10.0),
    "preset": Limit("x264 speed: faster presets cost less CPU for a softer picture (ultrafast on a 2-core rig)",
                    choices=X264_PRESETS),
}


def check_stream_options(bitrate_kbps: Any = DEFAULTS["bitrate_kbps"], keyframe_s: Any = DEFAULTS["keyframe_s"],
                         preset: Any = DEFAULTS["preset"]) -> tuple[int, float, str]:
    """The options as FFmpeg gets them, or ValueError naming the option and its accepted range."""
    bitrate = _number("bitrate_kbps", bitrate_kbps, integer=True)
    keyframe = _number("keyframe_s", keyframe_s, integer=False)
    STREAM_LIMITS["bitrate_kbps"].check("bitrate_kbps", bitrate)
    STREAM_LIMITS["keyframe_s"].check("keyframe_s", keyframe)
    STREAM_LIMITS["preset"].check("preset", preset)
    return int(bitrate), keyframe, str(preset)


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


def published_stream_limits() -> dict[str, dict[str, Any]]:
    """Each option's default and range or choices, as `engine.config.published_limits` does for settings."""
    return {name: limit.as_dict(DEFAULTS[name]) for name, limit in STREAM_LIMITS.items()}
