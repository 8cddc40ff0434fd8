"""Identify stage: decide, per track, whether the face is on the facebank and may stay visible.

Fail closed: a track is visible only when an identifier has positively confirmed it; everything else,
including every track an identifier has not looked at yet, is anonymized.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from engine.config import Settings
from engine.faces import NO_FACEBANK, Identity
from engine.stages.track import Track


class Identifier(Protocol):
    def update(self, frame: np.ndarray, tracks: list[Track], settings: Settings) -> None:
        """Set `track.identity` (an `Identity`: visible, name, similarity, reason, candidate) for each track."""

    def status(self) -> dict:
        """What the identifier currently knows, for telemetry (e.g. how many people it recognises)."""

    # Optional: `coast(frame, tracks, settings)`, a frame the detector did not look at (engine/pipeline.py). An
    # identifier without it shows nobody in such a frame.


class NoIdentifier:
    """No facebank: every face is anonymized."""

    def update(self, frame: np.ndarray, tracks: list[Track], settings: Settings) -> None:
        for track in tracks:
            track.identity = Identity.blurred(NO_FACEBANK)

    def coast(self, frame: np.ndarray, tracks: list[Track], settings: Settings) -> None:
        """Nobody is shown: nothing to watch."""

    def status(self) -> dict:
        return {"people": 0}


def is_visible(track: Track) -> bool:
    """Visible only when confirmed and currently detected: a lost track is always anonymized."""
    return track.identity.visible and track.lost_frames == 0
