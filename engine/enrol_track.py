"""Enrol a face from the live picture: gather one track's best and most varied frames for a few seconds.

The engine (which has the raw frames and the models) does this; the UI only names the track. Crops stay
in memory until the facebank accepts them, and only crops of the chosen track are ever taken: nobody
else's face is written anywhere.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from engine.faces import FrameReport

log = logging.getLogger(__name__)

# A crop is the face box grown to this many times its size, so the facebank's detector sees the whole head.
CROP_SCALE = 2.2
MIN_GAP_S = 0.15  # frames closer than this are nearly the same picture: more of them adds nothing
MAX_CANDIDATES = 24  # kept in memory while gathering (each a few hundred kB)
GIVE_UP_AFTER_S = 10.0  # past `seconds`, a gathering that never finished is failed (nothing came to observe)
LOST_FOR_S = 1.5  # the track gone this long: the gathering fails rather than guess who it was
# A frame whose face is filled grey over more than this share of its middle (another face's box, or a lost track's
# held, growing box, reaching over it) is not taken: half a face embeds as someone else. On the looping dev clip a
# weak false track on the performer's hand and mic covered his mouth and chin in the best-ranked crop, which
# then scored 0.08-0.22 against the others: "the frames show more than one person" (docs/measurements.md, OpenVINO).
MAX_FILLED = 0.2
FACE_MIDDLE_INSET = 0.2  # of the box's width and height, each side: what MAX_FILLED is a share of

# (name, crops best first, each crop's place in time: 0 the first taken) -> photos enrolled; raises with the reason
Save = Callable[[str, list[np.ndarray], list[int]], int]


@dataclass
class Candidate:
    crop: np.ndarray
    quality: float  # bigger, more confidently detected faces first


@dataclass
class TrackEnrolment:
    """One "this is me" request: gather, then hand the crops to `save` on a worker thread."""

    name: str
    track_id: int
    seconds: float
    save: Save
    started: float = field(default_factory=time.monotonic)
    state: str = "gathering"  # gathering -> saving -> done | failed
    message: str = ""
    candidates: list[Candidate] = field(default_factory=list)
    _last_seen: float = field(default_factory=time.monotonic)
    _last_taken: float = float("-inf")
    _covered: int = 0  # frames not taken because other boxes covered the face

    @property
    def active(self) -> bool:
        if self.state == "gathering" and time.monotonic() - self.started > self.seconds + GIVE_UP_AFTER_S:
            # no frames came (a stalled source, panic held on): never block the next "this is me" for good
            self._finish("failed", "no usable frames came in time (source stalled, paused or panic on); try again")
        return self.state == "gathering"

    def wants_raw(self) -> bool:
        """Whether the next frame should be copied raw for a crop (not every frame: a 1080p copy is 6 MB)."""
        return self.active and time.monotonic() - self._last_taken >= MIN_GAP_S

    def observe(self, raw: np.ndarray | None, report: FrameReport) -> None:
        """Called by the frame loop with what was found in each frame, and the raw frame (before anonymizing)
        when `wants_raw()` said so."""
        now = time.monotonic()
        if report.whole_frame is not None or report.coasted:  # no detection ran (panic, a stall, far behind)
            self._last_seen = now
            return
        face = next((f for f in report.faces if f.track_id == self.track_id and f.lost_frames == 0), None)
        if face is not None:
            self._last_seen = now
            if raw is not None:
                others = [f.xyxy for f in report.faces if f.track_id != self.track_id]
                others += [b for b in report.unclaimed if not _centred_in(b, face.xyxy)]  # not this face's own
                if _filled_share(face.xyxy, others) > MAX_FILLED:
                    self._covered += 1  # the next frame is tried instead (no gap)
                else:
                    self._last_taken = now
                    self._keep(Candidate(_crop(raw, face.xyxy, others), _quality(face.xyxy, face.score)))
        elif now - self._last_seen > LOST_FOR_S:
            self._finish("failed", f"face {self.track_id} left the picture; try again while it is in view")
            return
        if now - self.started >= self.seconds:
            self._save_in_background()

    def status(self) -> dict:
        progress = 1.0 if self.state in ("done", "saving") else min(1.0, (time.monotonic() - self.started)
                                                                     / max(self.seconds, 1e-6))
        return {"name": self.name, "track_id": self.track_id, "state": self.state, "progress": round(progress, 2),
                "frames": len(self.candidates), "message": self.message}

    def _keep(self, candidate: Candidate) -> None:
        self.candidates.append(candidate)
        if len(self.candidates) > MAX_CANDIDATES:  # keep time spread: drop the worst of the oldest half
            half = self.candidates[: MAX_CANDIDATES // 2]
            self.candidates.remove(min(half, key=lambda c: c.quality))

    def _save_in_background(self) -> None:
        if not self.candidates:
            why = (f"other faces kept covering face {self.track_id}; try again with only you in view" if self._covered
                   else f"face {self.track_id} was not seen clearly; try again")
            self._finish("failed", why)
            return
        self.state, self.message = "saving", f"enrolling {len(self.candidates)} frames of {self.name}"
        ranked = sorted(enumerate(self.candidates), key=lambda tc: -tc[1].quality)  # candidates are in time order
        crops, order = [c.crop for _, c in ranked], [t for t, _ in ranked]
        threading.Thread(target=self._save, args=(crops, order), name="enrol-track", daemon=True).start()

    def _save(self, crops: list[np.ndarray], order: list[int]) -> None:
        try:
            kept = self.save(self.name, crops, order)
        except Exception as exc:  # the reason goes to the UI; the engine carries on
            log.warning("enrolling %s from face %d failed: %s", self.name, self.track_id, exc)
            # A refusal names its reason alone: the frame files it was about are the engine's own, never seen
            self._finish("failed", str(getattr(exc, "reason", None) or exc))
            return
        self._finish("done", f"{self.name} enrolled from {kept} frames")

    def _finish(self, state: str, message: str) -> None:
        self.state, self.message = state, message
        self.candidates = []  # never keep anyone's face longer than needed
        log.info("enrolment of face %d as %s: %s (%s)", self.track_id, self.name, state, message)


def _crop(frame: np.ndarray, xyxy: tuple[float, float, float, float],
          others: Sequence[tuple[float, float, float, float]] = ()) -> np.ndarray:
    """The face with room around it; any other face reaching into that room is filled grey first, so
    nobody but the person being enrolled is ever kept (or later written beside the facebank)."""
    x1, y1, x2, y2 = xyxy
    cx, cy, half = (x1 + x2) / 2, (y1 + y2) / 2, CROP_SCALE * max(x2 - x1, y2 - y1) / 2
    h, w = frame.shape[:2]
    a, b = max(0, int(cx - half)), max(0, int(cy - half))
    c, d = min(w, int(cx + half)), min(h, int(cy + half))
    crop = frame[b:d, a:c].copy()
    for gx1, gy1, gx2, gy2 in map(_fill_box, others):
        left, top = max(0, gx1 - a), max(0, gy1 - b)
        right, bottom = min(c - a, gx2 - a), min(d - b, gy2 - b)
        if right > left and bottom > top:
            crop[top:bottom, left:right] = 128
    return crop


def _fill_box(box: tuple[float, float, float, float]) -> tuple[int, int, int, int]:
    """The pixels filled for another face (frame coordinates, end exclusive): its box grown by a quarter a side,
    for hair and a moving face's edge."""
    x1, y1, x2, y2 = box
    gx, gy = 0.25 * (x2 - x1), 0.25 * (y2 - y1)
    return int(x1 - gx), int(y1 - gy), int(x2 + gx) + 1, int(y2 + gy) + 1


def _filled_share(face: tuple[float, float, float, float],
                  others: Sequence[tuple[float, float, float, float]]) -> float:
    """The share of the face's middle (its box less a fifth each side: eyes, nose, mouth) that `_crop` fills grey
    for the other boxes. The middle, not the whole box: a neighbour's grown box reaching past a side-by-side
    face's ear (a quarter of its box, a crowd's usual spacing) leaves the face whole and must not stop its frames."""
    x1, y1, x2, y2 = face
    mx, my = FACE_MIDDLE_INSET * (x2 - x1), FACE_MIDDLE_INSET * (y2 - y1)
    left, top = int(x1 + mx), int(y1 + my)
    w, h = max(1, int(x2 - mx) - left), max(1, int(y2 - my) - top)
    mask = np.zeros((h, w), bool)
    for gx1, gy1, gx2, gy2 in map(_fill_box, others):
        mask[max(0, gy1 - top):max(0, gy2 - top), max(0, gx1 - left):max(0, gx2 - left)] = True
    return float(mask.mean())


def _centred_in(box: tuple[float, float, float, float], outer: tuple[float, float, float, float]) -> bool:
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return outer[0] <= cx <= outer[2] and outer[1] <= cy <= outer[3]


def _quality(xyxy: tuple[float, float, float, float], score: float) -> float:
    return float(score) * min(1.0, (xyxy[2] - xyxy[0]) / 160)
