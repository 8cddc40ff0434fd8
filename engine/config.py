"""Engine settings: one object, validated, changeable live, persisted as JSON."""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

ANONYMIZE_MODES = ("blur", "mosaic", "fill")
SHAPES = ("box", "ellipse")
DETECTORS = ("yunet", "centerface")
BACKENDS = ("auto", "torch", "onnxruntime", "openvino")


# Limits no setting may cross, because past them faces go out unanonymized (fail closed). Measured on the
# corpus with `python bench/suite.py --only hamilton --only walking-and-pause --no-enrol --confidence X` etc.
# (leak = bystander face-frames left visible by ../shared/tools/score_video.py; the bound is 0.3 %, runs <= 1):
MAX_CONFIDENCE = 0.8  # 0.6-0.8: 0.19 % (1 of 538 face-frames, 1-frame run); 0.9 leaked 40 % before weak faces
#                       seen twice started tracks (engine/stages/track.py)
MIN_CONFIDENCE = 0.05  # not a privacy bound: below it nearly everything is a "face"; a slider needs a real end
MIN_SIMILARITY = 0.33  # 0.38 % of 7,971 real impostor pairs score 0.33 or more (SFace); lower lets strangers through
MIN_HOLD_S = 0.2  # a face whose detection drops for a few frames stays blurred where it was (0.2 s: 0 leaks)
MIN_MARGIN = 0.15  # the soft edge fades inside the grown box: margin 0 leaked 14.3 %, 0.1 1.86 %, 0.15 0 %
MAX_LOOKAHEAD_FRAMES = 30  # not a privacy bound: each frame held is a frame of delay and ~6 MB at 1080p
MIN_DETECT_WIDTH = 480  # 160 leaked 21.9 % (the issue); 320 and 480 0 % on the dev clip, whose faces are larger
#                         than a 1080p crowd's: the floor keeps a step of margin


@dataclass(frozen=True)
class Limit:
    """What a setting accepts, and what it trades: published by the engine (`limits`), read by every UI."""

    help: str
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] | None = None

    def check(self, name: str, value: Any) -> None:
        if self.choices is not None:
            if value not in self.choices:
                raise ValueError(f"{name} must be one of {self.choices}")
            return
        if isinstance(value, float) and not math.isfinite(value):  # NaN passes every comparison: refuse it
            raise ValueError(f"{name} must be a finite number, got {value!r}")
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            raise ValueError(f"{name} must be in [{self.low:g}, {self.high:g}]")

    def as_dict(self, default: Any) -> dict[str, Any]:
        return {"default": default, "min": self.low, "max": self.high, "choices": list(self.choices or []) or None,
                "help": self.help}


# Every setting's accepted range, in one place. The privacy-relevant bounds are the fail-closed limits above.
LIMITS: dict[str, Limit] = {
    "detector": Limit("face detector: yunet is fast; centerface finds more tiny faces, ~10x slower",
                      choices=DETECTORS),
    "backend": Limit("network runtime: auto = torch on CUDA; on CPU onnxruntime, the recognizer on OpenVINO (x86), "
                     "where the CPU has bf16 the live detector too, both in bf16; openvino: every network on "
                     "OpenVINO", choices=BACKENDS),
    "confidence": Limit("detector score that starts a face: lower hides more faces, and more false ones",
                        MIN_CONFIDENCE, MAX_CONFIDENCE),
    "low_confidence": Limit("weaker detections keep an existing face hidden (ByteTrack second pass); from 0.3 "
                            "they also start a half-hidden one seen twice in a row", MIN_CONFIDENCE, MAX_CONFIDENCE),
    "detect_width": Limit("detection resolution (the pixels of a 16:9 frame this wide): higher finds smaller "
                          "faces, costs time", MIN_DETECT_WIDTH, 4096),
    "deadline_ms": Limit("a detector slower than this counts as stalled: the whole frame is blurred", 1, 60_000),
    "hold_seconds": Limit("how long a face whose detection drops stays hidden where it was predicted",
                          MIN_HOLD_S, 10.0),
    "lookahead_frames": Limit("live mode: frames held back so a face is also hidden in the frames before it was "
                              "first detected, and an enrolled face shown in those before it was recognised; adds "
                              "that many frames of delay (file mode always holds 24)",
                              0, MAX_LOOKAHEAD_FRAMES),
    "mode": Limit("how faces are hidden", choices=ANONYMIZE_MODES),
    "shape": Limit("shape of the hidden region", choices=SHAPES),
    "strength": Limit("blur/mosaic strength: higher hides more detail", 0.0, 1.0),
    "margin": Limit("the hidden box is grown by this fraction of the face on each side (a small face's by at least "
                    "one detector stride): covers hair and motion", MIN_MARGIN, 1.0),
    "similarity_threshold": Limit("how sure recognition must be to keep a face visible: lower lets look-alikes "
                                  "through, higher blurs you more often", MIN_SIMILARITY, 1.0),
    "recognition": Limit("keep facebank people visible (off: everyone is blurred)"),
    "panic": Limit("blur every whole frame"),
    "paused": Limit("freeze on the last safe frame, fully blurred"),
}


def published_limits() -> dict[str, dict[str, Any]]:
    """Every setting's default, range or choices and what it trades (the control API's `limits`)."""
    defaults = Settings()
    return {f.name: LIMITS[f.name].as_dict(getattr(defaults, f.name)) for f in fields(Settings)}


@dataclass(frozen=True)
class Settings:
    """Every knob of the engine. Each trade-off is stated where it is not obvious."""

    # Detection. Lower confidence blurs more false positives but leaks fewer real faces (fail closed).
    detector: str = "yunet"
    backend: str = "auto"  # auto: torch on CUDA; onnxruntime on CPU, bf16 CPUs some networks on OpenVINO (backends.py)
    confidence: float = 0.5  # a detection at or above this starts a track and is anonymized at once
    low_confidence: float = 0.2  # ByteTrack second pass: weaker detections only keep existing tracks alive
    detect_width: int = 1280  # detection gets the area of a 16:9 frame this wide: larger shrink, smaller grow <= 1.5x
    deadline_ms: float = 250.0  # a detector slower than this counts as stalled: the whole frame is blurred
    # Tracking: a face whose detection drops stays anonymized at its predicted box for hold_seconds.
    hold_seconds: float = 0.8
    # Look-ahead (engine/stages/lookahead.py): live mode holds this many frames to hide a face in the frames before
    # its first detection too; 0 adds no delay. File mode always holds at least FILE_LOOKAHEAD_FRAMES.
    lookahead_frames: int = 0
    # Anonymizing.
    mode: str = "blur"
    shape: str = "box"  # box covers the whole face box and margin; ellipse looks softer but needs margin >= 0.5
    strength: float = 0.6  # 0..1; the default leaves no usable facial detail (see README figures)
    margin: float = 0.25  # box grown by this fraction of its size on each side
    # Recognition (facebank): a face stays visible only above this cosine similarity.
    similarity_threshold: float = 0.37  # FAR <= 0.1 % on 7,971 real impostor pairs (SFace 0.3672; docs/measurements.md)
    recognition: bool = True
    # Switches.
    panic: bool = False  # anonymize every whole frame
    paused: bool = False  # keep emitting the last safe frame, fully blurred, without processing

    def __post_init__(self) -> None:
        for name, limit in LIMITS.items():
            limit.check(name, getattr(self, name))
        if self.low_confidence > self.confidence:
            raise ValueError(f"low_confidence must be at most confidence ({self.confidence:g}), got "
                             f"{self.low_confidence:g}")

    def updated(self, changes: dict[str, Any]) -> Settings:
        """A copy with `changes` applied; unknown names or bad values raise ValueError (nothing applied)."""
        known = {f.name: f for f in fields(self)}
        unknown = sorted(set(changes) - set(known))
        if unknown:
            raise ValueError(f"unknown setting(s): {', '.join(unknown)}")
        coerced = {name: _coerce(value, type(getattr(self, name)), name) for name, value in changes.items()}
        return replace(self, **coerced)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _coerce(value: Any, kind: type, name: str) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "on", "yes", "0", "false", "off", "no"):
            return value.lower() in ("1", "true", "on", "yes")
        raise ValueError(f"{name} must be true or false")
    try:
        return kind(value)
    except (TypeError, ValueError) as exc:
        what = {"int": "a whole number", "float": "a number", "str": "text"}.get(kind.__name__, kind.__name__)
        raise ValueError(f"{name} must be {what}, got {value!r}") from exc


# Settings an older version saved and this one no longer has: dropped on load, so the rest still applies.
RETIRED = frozenset({"upscale_every"})
# The recognizer whose cosines `similarity_threshold` is written in (its weights name, weights/manifest.json).
# Saved beside the settings: a threshold saved for another recognizer (files without the key were saved with
# MobileFaceNet, whose 0.52 default is SFace's strong-match level) means something else and is not carried over.
RECOGNIZER = "sface"
SCALE_KEY = "_similarity_scale"


def load_settings(path: Path) -> Settings:
    """Saved settings, or the defaults when there are none. Never raises.

    A file that is not a JSON object is set aside whole (`settings.bad.json`) and the defaults apply. In an
    object, each value is taken on its own: one that an upgrade's tighter limit or a hand edit made invalid is
    dropped with a logged message, and every other setting (panic, recognition off...) is kept. The original
    file is copied aside and the settings file rewritten clean. A similarity threshold saved for another
    recognizer (RECOGNIZER) is dropped too: the default applies."""
    try:
        if not path.exists():
            return Settings()
        saved = json.loads(path.read_text())
        if not isinstance(saved, dict):
            raise ValueError(f"expected a JSON object of settings, found {type(saved).__name__}")
    except Exception as exc:  # bad JSON, absurd nesting or numbers, unreadable, not a file...
        _set_aside(path, exc, move=True)
        return Settings()
    settings, refused = Settings(), []
    rescaled = saved.get(SCALE_KEY) != RECOGNIZER and "similarity_threshold" in saved
    if rescaled:
        log.warning("settings file %s: similarity_threshold %s was set for another recognizer (%s), whose scores mean "
                    "something else: the default %s applies", path, saved["similarity_threshold"],
                    saved.get(SCALE_KEY, "mobilefacenet"), settings.similarity_threshold)
        saved = {k: v for k, v in saved.items() if k != "similarity_threshold"}
    for name, value in saved.items():
        if name in RETIRED or name == SCALE_KEY:
            continue
        try:
            settings = settings.updated({name: value})
        except Exception as exc:  # ValueError, or an absurd value (1e400 as an int: OverflowError)
            refused.append(f"{name}: {exc}")
    if refused:
        _set_aside(path, ValueError("; ".join(refused)), move=False)
    if refused or rescaled:
        try:
            save_settings(settings, path)
        except OSError as exc:
            log.error("could not rewrite %s: %s", path, exc)
    return settings


def _set_aside(path: Path, why: Exception, move: bool) -> None:
    """Keep the user's file under the first free `settings.bad[-N].json` (an earlier one is never overwritten)."""
    aside = path.with_suffix(".bad.json")
    n = 1
    while aside.exists():
        aside, n = path.with_name(f"{path.stem}.bad-{n}.json"), n + 1
    try:
        if move:
            os.replace(path, aside)
        else:
            shutil.copyfile(path, aside)
    except OSError as exc:  # e.g. a read-only folder: still start
        log.error("settings file %s: %s; it could not be kept aside (%s)", path, why, exc)
        return
    what = "using defaults" if move else "those values are dropped, every other setting is kept"
    log.error("settings file %s: %s; %s; the file is kept as %s", path, why, what, aside)


def save_settings(settings: Settings, path: Path) -> None:
    """Atomic write (temp file + rename) so a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")  # unique: writers never collide
    with os.fdopen(fd, "w") as out:
        out.write(json.dumps({**settings.as_dict(), SCALE_KEY: RECOGNIZER}, indent=2))
    os.replace(tmp, path)
