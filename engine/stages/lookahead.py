"""Look-ahead backfill: a face is hidden in the frames *before* the one it was first detected in.

Detectors miss a face as it appears (a profile turning, a face coming out from behind a pillar or another
person, a small face the 1080p tile pass reaches only every 6th frame): the frames before its first detection
went out with the face visible. Holding the last N anonymized frames before the sinks lets the engine go back:
when a face track appears at frame t that was not there at t-1, its box, carried backwards with the velocity
seen over its first sightings and grown with every frame back (fail closed), is anonymized in the buffered
frames t-1 .. t-N as well. Then the oldest frame is released.

Only `SafeFrame`s are held (each already anonymized once): a backfill only adds anonymized regions, through
`Anonymizer.backfill`, which keeps the faces that were visible in that frame (the streamer) visible.
File mode always holds `FILE_LOOKAHEAD_FRAMES` (latency is free there); live mode holds the setting
`lookahead_frames` (default 0: no added delay). N 1080p frames are N x 6 MB of memory.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.faces import REVEALABLE, FrameReport, overlaps
from engine.stages.anonymize import Anonymizer, SafeFrame
from engine.stages.track import REPEAT_MAX_GAP

log = logging.getLogger(__name__)
WHOLE_NOW = ("panic", "paused")  # asked for *now*: the frames held (not sent yet) are hidden whole too
# File mode holds 24 frames; a face is hidden back over the 8 before its first sighting (a tile comes back every 6
# frames, a 0.3 face starts on its 2nd sighting <= 7 frames later), then over every frame still held once it proved
# a confident face (below): faces the detector finds only 9-22 frames after they show (a zoom, a turn) were left
# visible with 8. That proof takes LONG_BACK_SIGHTINGS sightings, so the frames released meanwhile are out of
# reach: a face seen every frame is hidden over the 20 frames before its first sighting, one seen every 2nd frame
# over 16, every 4th over 8. A weak face proves itself by lasting (WEAK_LONG_SIGHTINGS): then over the 15 before.
FILE_LOOKAHEAD_FRAMES = 24
GROWTH_PER_FRAME = 0.1  # each side grows this fraction of the box per frame back: motion the velocity misses
MAX_GROWTH = 1.0  # ... up to the box's own size on each side (3x the box)
# A new face is carried back at its first sighting (where it is, grown) and again at this sighting, along the
# velocity seen over them. Each pass costs ~3 ms a box at 1080p (a grown region blurred), so not at every one.
VELOCITY_SIGHTINGS = 3
# File mode: a face is carried back beyond WEAK_BACK_FRAMES only once it has been seen LONG_BACK_SIGHTINGS times
# and scored CONFIDENT_BACK or more in one of them. Weak and short-lived tracks are where the false faces are (hands,
# texture, a one-off blob): carried back over all 24 frames at once, the dev clip's false blurs rose 41 %; gated on
# 5 sightings, 9 % (bench/recall_price.py, README).
CONFIDENT_BACK = 0.5
WEAK_BACK_FRAMES = 8
LONG_BACK_SIGHTINGS = 5
# ...or once seen WEAK_LONG_SIGHTINGS times, however weakly (0: never): a face half hidden behind another, scoring
# 0.18-0.26 for 11 frames and 0.3-0.4 after, started late and stayed visible in the frames the 8 did not reach (the
# review of stop 34); a weak box seen in that many frames is rarely texture. Reaches the 15 frames before the first
# sighting of a face seen every frame.
WEAK_LONG_SIGHTINGS = 10
# At the source's end, a weak box still waiting for its next sighting is hidden over this many frames before its last
# one (its earlier sightings lie within the tracker's wait) and every frame after it.
WAITING_BACK = REPEAT_MAX_GAP


@dataclass
class _Held:
    safe: SafeFrame
    report: FrameReport
    keep: list[np.ndarray]  # that frame's visible (recognised) faces: a backfill never blurs them
    tag: Any = None
    pushed: float = field(default_factory=time.monotonic)
    # A coasted frame (no detector looked at it): a face new in it is hidden only by the next detected frame's
    # backfill. Until one comes it is released whole: the next detection may fault or miss its deadline, or the
    # frames held be flushed (a stall, a stop) first, and it went out with that face raw (a review, stop 43).
    awaiting_detection: bool = False


@dataclass
class _Newcomer:
    first: int  # frame index of its first sighting
    sightings: list[tuple[int, np.ndarray]]  # (frame index, detected box), its first few
    confident: bool = False  # one of them scored CONFIDENT_BACK or more


class Lookahead:
    """`push` each anonymized frame in order; it returns the frames released (oldest first), at most one
    while the buffer is full. `flush` releases every frame held (end of source, stop, error)."""

    def __init__(self, frames: int, weak_frames: int | None = None) -> None:
        """`weak_frames`: how far back a face is hidden until it proved a confident face (file mode:
        WEAK_BACK_FRAMES); None hides every face over all the frames held at once (live)."""
        self.frames = max(0, int(frames))  # live mode's slider changes it while frames are held
        self._weak = None if weak_frames is None else max(0, int(weak_frames))
        self.backfilled = 0  # boxes anonymized into earlier frames, for telemetry
        self.revealed = 0  # faces shown in earlier frames once recognised (`_reveal`), for telemetry
        self._hid_kept = False
        self.faults = 0  # backfills that failed (the frames held were then anonymized whole)
        self.reveal_faults = 0  # reveals that failed: those faces stayed blurred, the frames were not made whole
        self.undetected = 0  # coasted frames released whole: no detection reached them (`_Held.awaiting_detection`)
        self._held: deque[_Held] = deque()
        self._present: set[int] = set()  # track ids in the last frame pushed
        self._newcomers: dict[int, _Newcomer] = {}
        self._delays_ms: deque[float] = deque(maxlen=240)

    def __len__(self) -> int:
        return len(self._held)

    @property
    def weak_frames(self) -> int:
        """How far back an unproven face is hidden now: worked out from `frames` each time, because live mode
        changes `frames` (the slider) after this was built; a value fixed then left a raised slider at 0."""
        return self.frames if self._weak is None else min(self.frames, self._weak)

    def push(self, safe: SafeFrame, report: FrameReport, anonymizer: Anonymizer,
             tag: Any = None) -> list[tuple[SafeFrame, Any]]:
        """Backfill the faces new in `report` into the frames held, hold `safe`; `tag` (e.g. the source's
        frame index) comes back with it."""
        if self.frames == 0 and not self._held:
            if report.coasted and not safe.whole_frame:  # no frame held for a detection to reach it: whole (the
                safe = anonymizer.whole(safe.image, safe.index)  # runner holds one while coasting: never expected)
                self.undetected += 1
            return [(Anonymizer.seal(safe), tag)]  # processed while the slider was above 0: nothing kept goes out
        keep = [np.asarray(f.xyxy, np.float32) for f in report.faces if f.visible]
        if report.whole_frame in WHOLE_NOW:
            self.hide_all(anonymizer)
        try:
            for item in self._backfill_boxes(report):
                self._backfill(item, report.index, anonymizer)
        except Exception:  # fail closed, as every stage does: what is held goes out whole, nothing stops
            log.exception("lookahead backfill failed: the frames held are anonymized whole")
            self.faults += 1
            self.hide_all(anonymizer)
            if not safe.whole_frame:
                safe = anonymizer.whole(safe.image, safe.index)
        try:
            if not self._hid_kept:  # a face shown by a gallery just changed is not shown back in the frames held
                self._reveal(report, anonymizer)
            self._hid_kept = False
        except Exception:  # what could not be shown stays blurred: nothing is lost
            log.exception("lookahead reveal failed: those faces stay blurred")
            self.reveal_faults += 1
        if report.whole_frame is None and not report.coasted:
            for held in self._held:  # this detection's backfill has reached them
                held.awaiting_detection = False
        self._held.append(_Held(safe, report, keep, tag, awaiting_detection=report.coasted))
        return [self._release(anonymizer) for _ in range(len(self._held) - self.frames)]

    def _reveal(self, report: FrameReport, anonymizer: Anonymizer) -> None:
        """Faces recognised in `report` shown in the frames held where the same face (the same track, its
        continuity unbroken: no loss, jump, new look, overlap or scene cut in between) was blurred only because
        it was not recognised yet; a frame where anything else anonymized reaches into its region keeps it blurred
        (`Anonymizer.reveal`). The streamer, recognised a few frames into a shot, is then shown from its start."""
        if report.whole_frame is not None or report.coasted:
            return
        shown = {f.track_id: f for f in report.faces if f.visible and not f.lost_frames and f.continuity is not None}
        if not shown:
            return
        for held in reversed(self._held):  # newest first
            if held.safe.whole_frame or held.report.whole_frame is not None:
                break  # no face was looked at there (a fault, panic, pause): nothing before it is the same stretch
            for face in held.report.faces:
                now = shown.get(face.track_id)
                if (now is None or face.visible or face.lost_frames or face.continuity != now.continuity
                        or face.reason not in REVEALABLE):
                    continue
                uncovered = anonymizer.reveal(held.safe, np.asarray(face.xyxy, np.float32), face.track_id)
                if uncovered is None:
                    continue
                face.visible, face.reason, face.identity = True, None, now.identity
                held.keep.append(uncovered)  # hidden again over all it showed, should its person leave the facebank
                held.report.revealed += 1
                self.revealed += 1

    def hide_all(self, anonymizer: Anonymizer) -> None:
        """Every frame held, anonymized whole (panic or pause pressed while they wait)."""
        for held in self._held:
            if not held.safe.whole_frame:
                held.safe = anonymizer.whole(held.safe.image, held.safe.index)
                held.keep = []

    def hide_kept(self, anonymizer: Anonymizer) -> None:
        """The faces shown in the frames held, hidden after all (recognition turned off, threshold raised,
        someone removed from the facebank while they wait)."""
        self._hid_kept = True  # until the next push: its frame may have been processed with the old gallery
        for held in self._held:
            if held.keep and not held.safe.whole_frame:
                anonymizer.hide_shown(held.safe, held.keep)
                held.keep = []

    def flush(self, anonymizer: Anonymizer | None = None,
              waiting: Callable[[], Sequence[tuple[np.ndarray, int]]] | None = None) -> list[tuple[SafeFrame, Any]]:
        """Every frame held, oldest first (the source ended, stalled or the engine stops). `waiting` gives the weak
        boxes the tracker still waits to see again, with the frame index of their last sighting
        (`Pipeline.waiting`): they are hidden first in the frames held (fail closed): at the end of a file their
        next sighting never comes, and a face seen once weakly in a clip's last frames went out (WIDER
        Meeting_176's first 3 frames as a clip: a 34 px face, 0.22, visible in all 3)."""
        if anonymizer is not None and waiting is not None and self._held:
            try:
                self._hide_waiting(anonymizer, waiting())
            except Exception:  # fail closed, as a backfill does; the frames held still go out
                log.exception("hiding the waiting weak boxes failed: the frames held are anonymized whole")
                self.faults += 1
                self.hide_all(anonymizer)
        out = [self._release(anonymizer) for _ in range(len(self._held))]
        self._present.clear()
        self._newcomers.clear()
        return out

    def _hide_waiting(self, anonymizer: Anonymizer, waiting: Sequence[tuple[np.ndarray, int]]) -> None:
        """Each waiting box in the held frames from WAITING_BACK frames before its last sighting on, grown with
        every frame away from that sighting as a backfill is (it may have moved)."""
        for box, seen_at in waiting:
            for held in self._held:
                if held.report.index < seen_at - WAITING_BACK or held.safe.whole_frame:
                    continue
                away = abs(held.report.index - seen_at)
                anonymizer.backfill(held.safe, [back_box(np.asarray(box, np.float32), np.zeros(2, np.float32), 0,
                                                         away)], keep=held.keep)
                held.report.backfilled += 1
                self.backfilled += 1

    def delay_ms(self) -> float | None:
        """Median time a frame was held back (added video delay in live mode)."""
        return float(np.median(self._delays_ms)) if self._delays_ms else None

    def _release(self, anonymizer: Anonymizer | None) -> tuple[SafeFrame, Any]:
        """The oldest frame held, whole if it was coasted and no detection has reached it (`awaiting_detection`)."""
        held = self._held[0]
        if held.awaiting_detection and not held.safe.whole_frame and anonymizer is None:
            raise ValueError("a coasted frame no detection reached is released only with an anonymizer (flush's)")
        self._held.popleft()  # after the check: a refused release loses no frame
        self._delays_ms.append((time.monotonic() - held.pushed) * 1000)
        if held.awaiting_detection and not held.safe.whole_frame:
            held.safe = anonymizer.whole(held.safe.image, held.safe.index)
            held.report.whole_frame = "coasted-undetected"
            self.undetected += 1
        return Anonymizer.seal(held.safe), held.tag

    def _backfill_boxes(self, report: FrameReport) -> list[tuple[np.ndarray, np.ndarray, int, int, int]]:
        """The backfills due for the faces in `report` (see `_backfill`)."""
        if report.whole_frame is not None or report.coasted:
            return []  # no faces seen this frame (a fault, or coasted); tracks are judged on the next one
        present = {f.track_id for f in report.faces}
        out = []
        for face in report.faces:
            box = np.asarray(face.xyxy, np.float32)
            if face.track_id not in self._present and face.track_id not in self._newcomers:
                self._newcomers[face.track_id] = _Newcomer(report.index, [])
            newcomer = self._newcomers.get(face.track_id)
            if newcomer is None or face.lost_frames:
                continue
            newcomer.sightings.append((report.index, box))
            newcomer.confident |= face.score >= CONFIDENT_BACK
            out += self._passes(newcomer)
            if _done(newcomer):
                del self._newcomers[face.track_id]
        for track_id in [t for t in self._newcomers if t not in present]:
            del self._newcomers[track_id]  # gone before its velocity was known: carried back as it was
        self._present = present
        # A confident detection no track took (rare: every one starts a track) is carried back where it is.
        # One IoU matrix: pair by pair in Python this was 40 % of a live crowd's frame loop (860 regions, WIDER).
        unclaimed = np.asarray(report.unclaimed, np.float32).reshape(-1, 4)
        tracked = np.asarray([f.xyxy for f in report.faces], np.float32).reshape(-1, 4)
        taken = (overlaps(unclaimed, tracked)[0] > 0.3).any(axis=1) if len(tracked) else np.zeros(len(unclaimed), bool)
        for box in unclaimed[~taken]:
            out.append((box, np.zeros(2, np.float32), report.index, 0, self.frames))
        return out

    def _passes(self, newcomer: _Newcomer) -> list[tuple[np.ndarray, np.ndarray, int, int, int]]:
        """The backfills due at a newcomer's latest sighting: at its 1st and VELOCITY_SIGHTINGS-th over the
        `weak_frames` before its first sighting (all the frames held, once it proved a confident face); at its
        LONG_BACK_SIGHTINGS-th, if confident, or else at its WEAK_LONG_SIGHTINGS-th, over the older frames held."""
        seen, near = len(newcomer.sightings), self.weak_frames
        box, velocity = _extrapolation(newcomer.sightings)
        if seen in (1, VELOCITY_SIGHTINGS):
            return [(box, velocity, newcomer.first, 0, near)]
        # live (near == frames) every pass already reached all the frames held: no second one
        if near < self.frames and seen > VELOCITY_SIGHTINGS and _long_due(newcomer):
            return [(box, velocity, newcomer.first, near, self.frames)]
        return []

    def _backfill(self, item: tuple[np.ndarray, np.ndarray, int, int, int], now: int, anonymizer: Anonymizer) -> None:
        """Item: (box, velocity, frame of the first sighting, frames before it already covered, frames back from
        now at most)."""
        box, velocity, first, covered, reach = item
        for held in self._held:
            back = first - held.report.index  # frames before the face's first sighting
            if back <= covered or now - held.report.index > reach or held.safe.whole_frame:
                continue
            shifted = back_box(box, velocity, now - held.report.index, back)
            anonymizer.backfill(held.safe, [shifted], keep=held.keep)
            held.report.backfilled += 1
            self.backfilled += 1


def _long_due(newcomer: _Newcomer) -> bool:
    """Whether a newcomer has proved a face worth carrying back over the older frames held (then it is forgotten)."""
    seen = len(newcomer.sightings)
    return (newcomer.confident and seen >= LONG_BACK_SIGHTINGS) or 0 < WEAK_LONG_SIGHTINGS <= seen


def _done(newcomer: _Newcomer) -> bool:
    seen = len(newcomer.sightings)
    if seen < max(VELOCITY_SIGHTINGS, LONG_BACK_SIGHTINGS):
        return False
    return _long_due(newcomer) or not WEAK_LONG_SIGHTINGS


def _extrapolation(sightings: list[tuple[int, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """The latest box and the centre's velocity per frame over the sightings so far (zero from one)."""
    (first_index, first_box), (last_index, last_box) = sightings[0], sightings[-1]
    if last_index == first_index:
        return last_box, np.zeros(2, np.float32)
    centre = lambda b: np.array([(b[0] + b[2]) / 2, (b[1] + b[3]) / 2], np.float32)  # noqa: E731
    return last_box, (centre(last_box) - centre(first_box)) / (last_index - first_index)


def back_box(box: np.ndarray, velocity: np.ndarray, frames_back: int, unseen: int) -> np.ndarray:
    """`box` carried `frames_back` frames back along `velocity`, grown on each side for each of the `unseen`
    frames before the face's first sighting (fail closed: the velocity is a guess there)."""
    w, h = box[2] - box[0], box[3] - box[1]
    dx, dy = -velocity * frames_back
    grow = min(MAX_GROWTH, GROWTH_PER_FRAME * unseen)
    return np.array([box[0] + dx - w * grow, box[1] + dy - h * grow, box[2] + dx + w * grow, box[3] + dy + h * grow],
                    np.float32)
