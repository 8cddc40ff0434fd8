"""Engine settings: one object, validated, changeable live, persisted as JSON."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

ANONYMIZE_MODES = ("blur", "mosaic", "fill")
SHAPES = ("box", "ellipse")
DETECTORS = ("yunet", "centerface")
BACKENDS = ("auto", "torch", "onnxruntime")


# Limits no setting may cross, because past them faces go out unanonymized (fail closed):
MAX_CONFIDENCE = 0.9  # clear faces score 0.9-0.95: a higher bar would stop blurring most new faces
MIN_SIMILARITY = 0.4  # 0.1 % of 7,971 real impostor pairs score 0.476 or more; lower lets strangers through
MIN_HOLD_S = 0.2  # a face whose detection drops for a few frames stays blurred where it was


@dataclass(frozen=True)
class Settings:
    """Every knob of the engine. Each trade-off is stated where it is not obvious."""

    # Detection. Lower confidence blurs more false positives but leaks fewer real faces (fail closed).
    detector: str = "yunet"
    backend: str = "auto"  # auto: torch on CUDA, onnxruntime on CPU (measured faster there, same outputs)
    confidence: float = 0.5  # a detection at or above this starts a track and is anonymized at once
    low_confidence: float = 0.2  # ByteTrack second pass: weaker detections only keep existing tracks alive
    detect_width: int = 1280  # detection runs this wide: wider frames shrink (speed), narrower grow <= 1.5x
    deadline_ms: float = 250.0  # a detector slower than this counts as stalled: the whole frame is blurred
    # Tracking: a face whose detection drops stays anonymized at its predicted box for hold_seconds.
    hold_seconds: float = 0.8
    # Anonymizing.
    mode: str = "blur"
    shape: str = "box"  # box covers the whole face box and margin; ellipse looks softer but needs margin >= 0.5
    strength: float = 0.6  # 0..1; the default leaves no usable facial detail (see README figures)
    margin: float = 0.25  # box grown by this fraction of its size on each side
    # Recognition (facebank): a face stays visible only above this cosine similarity.
    similarity_threshold: float = 0.49  # FAR <= 0.1 % on 7,971 real impostor pairs (0.481 measured; README)
    recognition: bool = True
    # Switches.
    panic: bool = False  # anonymize every whole frame
    paused: bool = False  # keep emitting the last safe frame, fully blurred, without processing

    def __post_init__(self) -> None:
        checks = [
            (self.detector in DETECTORS, f"detector must be one of {DETECTORS}"),
            (self.backend in BACKENDS, f"backend must be one of {BACKENDS}"),
            (0.0 < self.confidence <= MAX_CONFIDENCE, f"confidence must be in (0, {MAX_CONFIDENCE}]"),
            (0.0 < self.low_confidence <= self.confidence, "low_confidence must be in (0, confidence]"),
            (64 <= self.detect_width <= 4096, "detect_width must be in [64, 4096]"),
            (1.0 <= self.deadline_ms <= 60_000, "deadline_ms must be in [1, 60000]"),
            (MIN_HOLD_S <= self.hold_seconds <= 10.0, f"hold_seconds must be in [{MIN_HOLD_S}, 10]"),
            (self.mode in ANONYMIZE_MODES, f"mode must be one of {ANONYMIZE_MODES}"),
            (self.shape in SHAPES, f"shape must be one of {SHAPES}"),
            (0.0 <= self.strength <= 1.0, "strength must be in [0, 1]"),
            (0.0 <= self.margin <= 1.0, "margin must be in [0, 1]"),
            (MIN_SIMILARITY <= self.similarity_threshold <= 1.0,
             f"similarity_threshold must be in [{MIN_SIMILARITY}, 1]"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

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
        raise ValueError(f"{name} must be a {kind.__name__}, got {value!r}") from exc


# Settings an older version saved and this one no longer has: dropped on load, so the rest still applies.
RETIRED = frozenset({"upscale_every"})


def load_settings(path: Path) -> Settings:
    """Saved settings, or the defaults when there are none; a damaged file is kept aside, not lost."""
    if not path.exists():
        return Settings()
    try:
        saved = json.loads(path.read_text())
        if isinstance(saved, dict):
            saved = {name: value for name, value in saved.items() if name not in RETIRED}
        return Settings().updated(saved)
    except (ValueError, OSError) as exc:
        aside = path.with_suffix(".bad.json")
        log.error("settings file %s is unusable (%s); using defaults, the file is kept as %s", path, exc, aside)
        os.replace(path, aside)
        return Settings()


def save_settings(settings: Settings, path: Path) -> None:
    """Atomic write (temp file + rename) so a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")  # unique: writers never collide
    with os.fdopen(fd, "w") as out:
        out.write(json.dumps(settings.as_dict(), indent=2))
    os.replace(tmp, path)
