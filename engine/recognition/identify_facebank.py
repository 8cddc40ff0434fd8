"""Facebank identifier: a tracked face stays visible only while it keeps matching an enrolled person.

Fail closed, with hysteresis in the safe direction only:
- a track is blurred until K of its last M embeddings match the same person (similarity >= threshold) and
  the latest one does; a single non-matching embedding, or a frame where the track is lost, blurs it again;
- visible tracks are re-verified every few frames, and at once when something suggests the tracker may have
  put another face under their id (the face jumps or looks different from the previous frame, the track
  comes back after a miss, it overlaps another face, the scene cuts): an id switch must never carry a
  bystander into a visible state;
- a confirmed track keeps its identity through head turns (looking down, the gallery similarity falls far
  below the threshold) while each new embedding stays consistent with the track's own earlier ones and no
  sign of a switch has come since; any such sign, or an inconsistent embedding, ends it;
- the embeddings are kept per track and matched against the current gallery every frame, so removing a
  person from the facebank or raising the threshold takes effect on the next frame, with no re-embedding.

The network is the expensive part (about 5-10 ms a face on 2 CPU cores, as much as detecting a whole
frame), so work per frame is bounded by a token bucket: `budget_per_frame` embeddings on average, at most
`burst` in one frame, spent on the biggest and least-verified faces first. Re-verifying visible faces is
never skipped for budget; it only delays the work on blurred ones.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import numpy as np

from engine.config import Settings
from engine.faces import (
    BELOW_THRESHOLD,
    CHANGED,
    GHOST_RECHECK_MISSES,
    LOST,
    NO_FACEBANK,
    NOT_RECOGNISED_YET,
    NOT_REFOUND_KEY,
    OVERLAPS,
    RECHECK_GHOST,
    RECOGNITION_OFF,
    REFIND_MISSES_KEY,
    TOO_SMALL,
    Candidate,
    Identity,
    box_iou,
    ghost_geometry,
    is_ghost_of,
    nose_of,
)
from engine.recognition.gallery import Gallery, Match
from engine.recognition.identify_worker import VERIFY_LEAD, EmbeddingWorker
from engine.recognition.recognize import FaceEmbedder, Landmarker, align_face, create_landmarker, face_size, sharpness
from engine.stages import scene
from engine.stages.track import Track

log = logging.getLogger(__name__)

STATE_KEY = "facebank"
_SHARPNESS_CHECKS = 2  # per frame, biggest faces first: each costs an alignment (~0.1 ms)
# Live: the frame also waits (as for a re-check, identify_worker.RECHECK_WAIT_S) for the first embedding of the largest
# face seen for the first time, so that the streamer is shown on a shot's first frame (stop 51). A switch for benches.
WAIT_FOR_FIRST = True


@dataclass(frozen=True)
class Policy:
    """When to embed a face and when to trust it.

    Defaults chosen on the dev clip with MobileFaceNet, the recognizer before SFace (Lin-Manuel Miranda enrolled
    from one photo; 149 of his faces, 392 bystander faces): his faces score 0.36-0.81 against the photo (wide
    shot ~0.5, close-ups ~0.7), bystanders at most 0.23. With these values he is visible in 75 % of his frames
    (the 20-frame wide shot, ~0.5, stays blurred at the 0.56 threshold), no bystander ever is, and 0.31 faces a
    frame are embedded (8 % of the faces seen). A bigger budget does not show him more often: every embedding is
    also a chance to blur him. The similarity figures were re-set for SFace (below); the frame counts and budgets
    were kept.
    """

    confirm_k: int = 2  # matches of the same person needed among ...
    window_m: int = 3  # ... the last M embeddings: one lucky look-alike frame never unblurs anyone
    verify_every: int = 5  # frames between re-checks of a visible face: bounds an undetected id switch
    confirm_every: int = 1  # frames between embeddings of a face that (nearly) matched: confirm it quickly
    # The similarity figures below are SFace cosines, each set where MobileFaceNet's (the recognizer before it) cut
    # the same share of 7,971 real impostor pairs (impostors: median 0.083, 99th percentile 0.301, 99.9th 0.367,
    # maximum 0.471; genuine pairs: 1st percentile 0.417, median 0.738; docs/measurements.md).
    near: float = 0.07  # "nearly": within this of the threshold (0.30: 1.0 % of impostors; 0.37 cut 0.85 % before)
    retry_every: int = 15  # frames between embeddings of a face that does not match (bystanders)
    min_gap: int = 3  # a face is not re-embedded for being bigger/sharper more often than this
    better_size: float = 1.3  # re-embed early when the face is this much bigger than when last embedded
    better_sharpness: float = 1.6  # ... or this much sharper (motion blur gone)
    min_face_px: float = 24.0  # narrower faces are never embedded: too few pixels to identify, they stay blurred
    budget_per_frame: float = 0.3  # average embeddings per frame for faces that are not visible
    burst: int = 4  # most embeddings in one frame from the budget (a new shot brings many new faces)
    jump: float = 0.5  # face centre moved more than this x its size in one frame (1 % of dev-clip moves): suspect
    same_look: float = 0.5  # correlation of the face patch with the previous frame's below this: suspect
    scene_cut: float = scene.CUT_BELOW  # whole-frame correlation (32x18 grey) with the frame before below this: a cut
    overlap_iou: float = 0.1  # two found faces overlapping: the tracker may swap their ids
    # Two-sided hysteresis around the threshold: one embedding this far above it (0.52) is enough to confirm,
    # 0.05 above every impostor measured (a look-alike at 0.471)...
    strong_margin: float = 0.15
    # ...and a confirmed face keeps matching down to this far below it (head turned, wide shot: 0.33, 0.38 % of
    # impostors), as long as nothing suggested another face under its id since it was confirmed (then the full
    # threshold applies).
    keep_margin: float = 0.04
    keep_floor: float = 0.31  # ...but never below the impostors' 99th percentile (0.301), whatever the threshold
    # After a warning sign (lost, new look, overlap), the track's earlier embeddings still count toward K only
    # if the new one is of the same person as them (cosine at least this; impostors' 99.9th percentile 0.367,
    # 0.04 % of them reach 0.42, as 0.55 cut before).
    same_person: float = 0.42
    # A confirmed track keeps its identity through head turns (the gallery similarity of a face looking down
    # falls far below the threshold) while each new embedding stays this close to the track's own earlier ones,
    # and no sign of a switch (lost, jump, new look, overlap, scene cut) came since it was confirmed. Two
    # different people score at most 0.471 in 7,971 real impostor pairs (99.9th percentile 0.367).
    self_consistent: float = 0.42
    anchors: int = 8  # embeddings kept per track from when the gallery itself vouched for it

    def __post_init__(self) -> None:
        if not 1 <= self.confirm_k <= self.window_m:
            raise ValueError("need 1 <= confirm_k <= window_m")
        if min(self.verify_every, self.confirm_every, self.retry_every, self.min_gap, self.burst) < 1:
            raise ValueError("frame intervals and burst must be >= 1")
        if self.budget_per_frame <= 0:
            raise ValueError("budget_per_frame must be > 0")


@dataclass
class TrackRecognition:
    """Per-track recognition state, kept in `track.extras[STATE_KEY]` (it dies with the track)."""

    embeddings: deque = field(default_factory=deque)  # the last M embeddings, oldest first
    last_frame: int = -(10**9)  # frame index of the latest embedding
    last_size: float = 0.0
    last_sharpness: float = 0.0
    latest_matched: bool = False  # the latest embedding matched someone at the last decision
    near_match: bool = False  # some embedding in the window came near the threshold: worth re-checking soon
    eligible: bool = False  # K of the last M and the latest agree: visible unless lost, suspect or stale
    trusted: bool = False  # visible after the latest decision
    suspect: bool = False  # may have become another face since the latest embedding: blurred until re-embedded
    size: float = 0.0  # face size in this frame (`face_size`), set by `_observe`
    prev_centre: np.ndarray | None = None  # landmark centre in the previous frame (jump detection)
    prev_patch: np.ndarray | None = None  # small normalised grey patch of the face in the previous frame
    prev_look: np.ndarray | None = None  # the same, also where only `watch_all` asked for it
    stretch_look: np.ndarray | None = None  # `watch_all`: the patch its current stretch (epoch) started with
    look_epoch: int = -1  # the epoch `stretch_look` belongs to
    matches: list[Match] = field(default_factory=list)  # of `embeddings` against `matched_against`
    matched_against: tuple = ()  # (gallery, number of embeddings, latest frame): skip re-matching when unchanged
    confirmed_name: str | None = None  # whom the track was confirmed as
    doubted: bool = False  # the latest embedding was taken because the face may have changed: no keep_margin
    overlapping: bool = False  # overlaps another found face in this frame
    anchors: deque = field(default_factory=deque)  # embeddings the gallery accepted while the track was confirmed
    anchored_at: int = -1  # frame of the latest embedding considered for `anchors`
    kept_by_track: bool = False  # visible on self-consistency (head turned), not on the gallery's word
    ghosts: set = field(default_factory=set)  # ids of this face's ghost boxes in the frame before (engine/faces.py)
    # Live mode embeds on a worker thread (identify_worker.py): a crop is in flight for this track, and
    # `epoch` counts the signs that another face may be under the id (lost, jump, new look, overlap, scene
    # cut); a result computed from a crop taken before the latest sign is thrown away (fail closed).
    pending: bool = False
    pending_epoch: int = -1  # the epoch of the newest crop in flight
    epoch: int = 0
    serial: int = 0  # which state this is: a track's state made again (gallery emptied, worker died) starts anew

    @property
    def embedded(self) -> bool:
        return bool(self.embeddings)


@dataclass
class _Candidate:
    track: Track
    state: TrackRecognition
    size: float
    tier: int  # lower goes first
    forced: bool = False
    face: np.ndarray | None = None  # aligned crop, when already made


class FacebankIdentifier:
    """Identifier protocol: sets each track's `identity` (visible, name, similarity, reason, candidate)."""

    def __init__(self, embedder: FaceEmbedder, gallery_provider: Callable[[], Gallery],
                 policy: Policy | None = None, landmarker: Landmarker | None = None) -> None:
        self.embedder = embedder
        self.gallery_provider = gallery_provider
        self.policy = policy or Policy()
        self.frame_index = 0
        self.tokens = float(self.policy.burst)
        self.embedded_total = 0  # telemetry, and the budget test
        self.embedded_forced = 0
        self.scene_cuts = 0
        self._gallery_seen: Gallery | None = None  # the gallery the last `update` decided with (`coast`)
        self.landmarker = landmarker  # the photo path's alignment; made on first use when not given
        self.verify_lead = 0  # frames early a visible face is re-verified (live mode: the worker's delay)
        self.worker: EmbeddingWorker | None = None  # live mode: embeddings off the frame path
        self._prev_frame_look: np.ndarray | None = None
        self._refilled_at = -(10**9)  # the frame a scene cut last refilled the budget
        # File mode's look-ahead shows a face in the frames before it was recognised, while its track's
        # `continuity` holds (engine/stages/lookahead.py): the pipeline then has a new look in the same place
        # watched on every face that may be embedded, not only on those near a match.
        self.watch_all = False
        # A photo (engine/pipeline.py, `still`): one frame, so every face is embedded in it, whatever the budget
        # (which spreads a stream's work over frames; a photo's fifth face would never get its turn).
        self.every_face = False
        self._states = 0

    def status(self) -> dict:
        """The gallery in use now: lets the UI confirm that an enrolment has reached the engine."""
        gallery = self.gallery_provider()
        return {"people": len(gallery), "photos": len(gallery.embeddings), "embedded": self.embedded_total,
                "background": self.worker is not None,
                # a damaged facebank reads as nobody: said so, not as an empty facebank (a review, stop 44)
                "error": getattr(self.gallery_provider, "error", None)}

    def run_in_background(self, on: bool) -> None:
        """Live mode (on): embeddings on a worker thread, so the frame loop never waits for the network;
        off: synchronous again (file mode, deterministic). See identify_worker.py for the fail-closed rules."""
        if on and self.worker is None:
            self.worker, self.verify_lead = EmbeddingWorker(self), VERIFY_LEAD
        elif not on and self.worker is not None:
            self.worker.close()
            self.worker, self.verify_lead = None, 0

    def _worker_failed(self, tracks: list[Track]) -> None:
        """Start again from nothing on a fresh worker, and fail this frame (the pipeline blurs every face)."""
        assert self.worker is not None
        error = self.worker.error()
        self.worker.close()
        for track in tracks:
            track.extras.pop(STATE_KEY, None)  # results of the dead worker can never count
        self.worker = EmbeddingWorker(self)
        raise error

    # --- the per-frame entry point -------------------------------------------------------------------------
    def update(self, frame: np.ndarray, tracks: list[Track], settings: Settings) -> None:
        index, self.frame_index = self.frame_index, self.frame_index + 1
        if self.worker is not None and self.worker.failed:
            self._worker_failed(tracks)
        for track in tracks:
            track.extras.pop(NOT_REFOUND_KEY, None)  # a fresh look's verdict holds for the frame it was taken in
        gallery = self.gallery_provider() if settings.recognition else Gallery.empty()
        self._gallery_seen = gallery
        if gallery.is_empty:
            reason = NO_FACEBANK if settings.recognition else RECOGNITION_OFF
            for track in tracks:  # nothing to recognise: blur all, embed nothing, forget what was seen
                if isinstance(state := track.extras.pop(STATE_KEY, None), TrackRecognition):
                    state.epoch += 1  # a result still in flight must not bring it back
                track.identity = Identity.blurred(LOST if track.lost_frames else reason)
            return
        if self.landmarker is None:
            self.landmarker = create_landmarker(settings)
        self.tokens = min(float(self.policy.burst), self.tokens + self.policy.budget_per_frame)
        states = [self._observe(frame, track, tracks) for track in tracks]
        if self._scene_cut(frame):
            for state in states:
                _forget(state)
            # Every face of the new shot is to be recognised from nothing, the streamer's among them: the budget
            # spent on the old shot's strangers must not hold his first look back (the dev clip live: 2 frames
            # after its cut at frame 82 with no token left, then shown 6 frames after the cut). Once in a while
            # only: footage read as a cut on every frame (strobes) must not get a burst every frame.
            if index - self._refilled_at >= self.policy.retry_every:
                self.tokens, self._refilled_at = max(self.tokens, float(self.policy.burst)), index
        self._embed(frame, self._schedule(frame, tracks, states, index), index)
        for track, state in zip(tracks, states, strict=True):
            self._decide(track, state, gallery, settings.similarity_threshold, index)

    def coast(self, frame: np.ndarray, tracks: list[Track], settings: Settings) -> None:
        """A frame the detector did not look at (live mode far behind: engine/pipeline.py). No detection was
        associated, so no id moved onto another face; what can still change under a shown face is the whole
        picture (a cut to another camera), or the gallery (recognition off, a facebank change). On any of these,
        no face stays shown in it; otherwise each keeps what the last detected frame decided.

        `frame_index` does not move: the frame intervals (`verify_every`, retries) count the frames the identifier
        looked at, because an id can only move onto another face where detections are associated. Counted in
        stream frames, the streamer was re-verified on every detected frame while coasting (the worker then fell
        further behind, and every late result blurred him: 52-68 % of his frames shown on the dev clip). The
        embedding budget still accrues per stream frame, so new faces are not recognised later in time."""
        self.tokens = min(float(self.policy.burst), self.tokens + self.policy.budget_per_frame)
        gallery = self.gallery_provider() if settings.recognition else Gallery.empty()
        cut = self._scene_cut(frame)
        if not cut and not gallery.is_empty and gallery is self._gallery_seen:
            return
        for track in tracks:
            if isinstance(state := track.extras.get(STATE_KEY), TrackRecognition) and cut:
                _forget(state)
            if track.identity.visible:
                track.identity = Identity.blurred(NOT_RECOGNISED_YET)

    # --- per-track bookkeeping -----------------------------------------------------------------------------
    def _observe(self, frame: np.ndarray, track: Track, tracks: list[Track]) -> TrackRecognition:
        """Flag a track whose face may have changed since the last frame (cheap: every track, every frame)."""
        state = track.extras.get(STATE_KEY)
        if not isinstance(state, TrackRecognition):
            self._states += 1
            state = TrackRecognition(embeddings=deque(maxlen=self.policy.window_m),
                                     anchors=deque(maxlen=self.policy.anchors), serial=self._states)
            track.extras[STATE_KEY] = state
        if track.lost_frames > 0:
            state.suspect = True  # the tracker may re-associate it with another face when it is found again
            state.epoch += 1
            return state
        landmarks = np.asarray(track.landmarks, np.float32).reshape(5, 2)
        centre, size = landmarks.mean(0), face_size(landmarks)
        state.size = size
        jumped = state.prev_centre is not None and np.linalg.norm(centre - state.prev_centre) > self.policy.jump * size
        if jumped:
            _forget(state)  # what was verified may have been another face: start again
        # A different look in the same place: a scene cut, or the tracker moved the id onto another face. Watched
        # on tracks whose history could make them visible; with a worker, on every face it may embed too: a
        # result arrives frames after its crop, and a swap in between must void it (the epoch).
        watched = state.near_match or state.eligible or (self.worker is not None and size >= self.policy.min_face_px)
        patch = _patch(frame, centre, size) if watched or (self.watch_all and size >= self.policy.min_face_px) else None
        changed = watched and _new_look(patch, state.prev_patch, self.policy.same_look)
        state.overlapping, ghosts = self._overlaps(frame, track, tracks, state.eligible)
        # A ghost of a shown face (a pan's smear: engine/faces.py) is not another face to swap ids with while it
        # lasts, but a ghost not there in the frame before is a sign like any new box over him: he is re-checked,
        # then shown through the pan. Live, an overlap voids every crop while it lasts: he was blurred for as long as
        # the smear.
        new_ghost = not ghosts <= state.ghosts
        state.ghosts = ghosts
        state.suspect = state.suspect or jumped or changed or state.overlapping or new_ghost
        # A new look on a face nobody watched does not make it suspect, but it ends its continuity.
        new_look = _new_look(patch, state.prev_look, self.policy.same_look)
        state.epoch += jumped or changed or state.overlapping or new_look or new_ghost
        if self.watch_all:
            self._watch_drift(state, patch)
        state.prev_centre, state.prev_patch = centre, patch if watched else None
        state.prev_look = patch
        return state

    def _watch_drift(self, state: TrackRecognition, patch: np.ndarray | None) -> None:
        """A look that drifted away from the one its stretch started with ends the stretch too: a cross-dissolve
        from one shot to another, or one face slowly replacing another, changes little from frame to frame and
        passes the new-look check (a reviewer's dissolve between two LFW people: continuity kept in 11 of 12)."""
        if patch is None:
            return
        if state.look_epoch == state.epoch and _new_look(patch, state.stretch_look, self.policy.same_look):
            state.epoch += 1
        if state.look_epoch != state.epoch or state.stretch_look is None:
            state.stretch_look, state.look_epoch = patch, state.epoch

    def _scene_cut(self, frame: np.ndarray) -> bool:
        """A cut to another shot: the tracker may carry ids onto whoever stands where a face was.

        Measured on the dev clip: its 3 cuts correlate 0.01-0.27 with the frame before, every other frame
        pair at least 0.69. The per-face patch check alone missed one cut (0.506 against a 0.5 bar).
        """
        current = scene.look(frame)
        previous, self._prev_frame_look = self._prev_frame_look, current
        cut = scene.is_cut(previous, current, self.policy.scene_cut)
        if cut:
            self.scene_cuts += 1
            log.debug("scene cut: every track must be recognised again")
        return cut

    def _overlaps(self, frame: np.ndarray, track: Track, tracks: list[Track], shown: bool) -> tuple[bool, set[int]]:
        """Whether another face found in this frame overlaps this one, and the ids of its ghosts if it is `shown`
        (not counted as overlapping)."""
        box = track.xyxy
        # Only faces found in this frame: a lost track's predicted box drifts over its neighbours for up to
        # hold_seconds, and a swap onto this id would show up as a jump or a new look anyway.
        near = [other for other in tracks if other is not track and other.lost_frames == 0
                and box_iou(box, other.xyxy) > self.policy.overlap_iou]
        nose = nose_of(track.landmarks)
        ghosts = {other.track_id for other in near if shown and self._ghost(frame, other, track, nose)}
        return any(other.track_id not in ghosts for other in near), ghosts

    def _ghost(self, frame: np.ndarray, other: Track, track: Track, nose: np.ndarray) -> bool:
        """Whether `other` is a ghost box of `track`'s face (engine/faces.py). Where only fresh looks at its region
        can tell, one is taken here, once a frame, and the verdict kept on `other` for the pipeline, which covers a
        ghost as a guess. A box counts as a ghost only after GHOST_RECHECK_MISSES looks in vain, and never again once
        one look found it (as a box that once scored 0.6 never is)."""
        other_nose = nose_of(other.landmarks)
        if ghost_geometry(other.xyxy, other.best_score, other_nose, track.xyxy, nose) == RECHECK_GHOST \
                and NOT_REFOUND_KEY not in other.extras:
            misses = other.extras.get(REFIND_MISSES_KEY, 0)
            refinds = getattr(self.landmarker.detector, "refinds", None)
            if misses is not None and refinds is not None:
                misses = None if refinds(frame, other.xyxy) else misses + 1
                other.extras[REFIND_MISSES_KEY] = misses
            other.extras[NOT_REFOUND_KEY] = misses is not None and refinds is not None \
                and misses >= GHOST_RECHECK_MISSES
        return is_ghost_of(other.xyxy, other.best_score, other_nose, track.xyxy, nose,
                           other.extras.get(NOT_REFOUND_KEY, False), track.score)

    # --- choosing what to embed this frame -----------------------------------------------------------------
    def _schedule(self, frame: np.ndarray, tracks: list[Track], states: list[TrackRecognition],
                  index: int) -> list[_Candidate]:
        due, idle = [], []
        for track, state in zip(tracks, states, strict=True):
            if track.lost_frames > 0:
                continue  # nothing to look at: the box is a prediction
            size = state.size
            if size < self.policy.min_face_px or (state.pending and not _check_voided(state)):
                continue
            candidate = self._due(track, state, size, index)
            if candidate is not None:
                due.append(candidate)
            elif not state.eligible and index - state.last_frame >= self.policy.min_gap:
                idle.append(_Candidate(track, state, size, tier=5))
        due.sort(key=lambda c: (c.tier, -c.size))
        if self.every_face:
            return due
        chosen = [c for c in due if c.forced]  # safety work is never skipped, only paid for later
        self.tokens = max(-float(self.policy.burst), self.tokens - len(chosen))
        for c in due:
            if not c.forced and self.tokens >= 1 and len(chosen) < self.policy.burst:
                chosen.append(c)
                self.tokens -= 1
        if self.tokens >= 1 and len(chosen) < self.policy.burst:
            chosen += self._sharper(frame, idle)
        return chosen

    def _due(self, track: Track, state: TrackRecognition, size: float, index: int) -> _Candidate | None:
        """Why this track should be embedded now, as a priority tier; None when it need not be."""
        p = self.policy
        since = index - state.last_frame
        if state.eligible:
            # Live mode asks `verify_lead` frames early, so the result is back before the face goes stale.
            if state.suspect or since >= p.verify_every - self.verify_lead:
                return _Candidate(track, state, size, tier=0, forced=True)
            return None  # verified recently enough
        if state.near_match and since >= p.confirm_every:
            return _Candidate(track, state, size, tier=1)  # likely an enrolled face: confirm it, or win it back
        if not state.embedded:
            return _Candidate(track, state, size, tier=2)
        if since >= p.min_gap and size >= p.better_size * state.last_size:
            return _Candidate(track, state, size, tier=3)
        if since >= p.retry_every:
            return _Candidate(track, state, size, tier=4)
        return None

    def _sharper(self, frame: np.ndarray, idle: list[_Candidate]) -> list[_Candidate]:
        """With budget to spare: faces notably sharper than when last embedded (motion blur gone).

        Sharpness needs the aligned crop (about 0.1 ms a face), so it is only looked at when there is budget.
        """
        picked = []
        for c in sorted(idle, key=lambda c: -c.size)[:_SHARPNESS_CHECKS]:
            if self.tokens < 1:
                break
            c.face = align_face(frame, c.track.landmarks)  # a sharpness check only: not worth refining
            if sharpness(c.face) >= self.policy.better_sharpness * c.state.last_sharpness:
                picked.append(c)
                self.tokens -= 1
        return picked

    # --- embedding and deciding ----------------------------------------------------------------------------
    def _embed(self, frame: np.ndarray, chosen: list[_Candidate], index: int) -> None:
        if self.worker is not None:
            # A face shown until a sign came (lost and found again, a new look) is re-checked on this frame where the
            # worker is quick enough (RECHECK_WAIT_S); not while it overlaps another face (that sign comes every
            # frame, and its crops are void), nor after a jump (recognised from scratch).
            awaited = [c.state for c in chosen if c.forced and c.state.eligible and c.state.suspect
                       and not c.state.overlapping]
            # The largest face seen for the first time too (a shot's or the stream's first frame, a track made
            # anew): live, the streamer was blurred on the first frame of each shot, for the frame its first
            # embedding took to come back, where file mode shows him. One face only: the wait stays one crop long.
            fresh = [c for c in chosen if not c.state.embedded and not c.state.overlapping] if WAIT_FOR_FIRST else []
            if fresh:
                awaited.append(max(fresh, key=lambda c: c.size).state)
            self.worker.exchange(frame, chosen, index, wait_for=awaited)
            return
        if not chosen:
            return
        faces, sharp = zip(*(self._aligned(frame, c.track) for c in chosen), strict=True)
        vectors = self.embedder.embed_aligned(np.stack(faces))
        for c, vector, measured in zip(chosen, vectors, sharp, strict=True):
            self._record(c.state, vector, measured, c.size, index, c.forced)

    def _record(self, state: TrackRecognition, vector: np.ndarray, sharp: float, size: float, index: int,
                forced: bool) -> None:
        """A new embedding of the face this track held in frame `index`."""
        if self.watch_all and state.embeddings and not self._same_person(state, vector):
            state.epoch += 1  # not the face its earlier embeddings saw: what was shown before is not shown for this
        if state.suspect and not self._same_person(state, vector):
            state.embeddings.clear()  # another face under this id now: its old matches must not vouch for it
            state.anchors.clear()
        state.embeddings.append(vector)
        state.last_frame = index
        state.last_size = size
        state.last_sharpness = sharp
        state.doubted = state.suspect
        state.suspect = False  # this embedding is of the face the track holds now
        self.embedded_total += 1
        self.embedded_forced += forced

    def _same_person(self, state: TrackRecognition, vector: np.ndarray) -> bool:
        return bool(state.embeddings) and float(np.max(np.stack(list(state.embeddings)) @ vector)) >= \
            self.policy.same_person

    def _aligned(self, frame: np.ndarray, track: Track) -> tuple[np.ndarray, float]:
        """The 112x112 crop to embed, aligned exactly as a photo of the same pixels is (`Landmarker`), and its
        sharpness."""
        return self.landmarker.align_and_measure(frame, track.xyxy, track.landmarks)

    def _decide(self, track: Track, state: TrackRecognition, gallery: Gallery, threshold: float,
                index: int) -> None:
        """Visible only when the latest embedding and K of the last M agree (or a confirmed track keeps
        matching itself), the track is found in this frame, nothing since the latest embedding suggests
        another face, and that embedding is recent."""
        if not state.embedded:
            state.trusted = state.eligible = state.latest_matched = state.near_match = False
            small = track.lost_frames == 0 and state.size < self.policy.min_face_px
            track.identity = Identity.blurred(LOST if track.lost_frames else TOO_SMALL if small else NOT_RECOGNISED_YET,
                                              continuity=_continuity(state))
            return
        key = (gallery, len(state.embeddings), state.last_frame)
        if state.matched_against != key:  # Gallery compares by identity: a new snapshot is re-matched
            state.matches, state.matched_against = gallery.match(np.stack(list(state.embeddings))), key
        matches = state.matches
        latest = matches[-1]
        p = self.policy
        agreeing = sum(m.accepted(threshold) and m.name == latest.name for m in matches)
        strong = latest.accepted(threshold + p.strong_margin)
        kept = (state.eligible and not state.doubted and latest.name == state.confirmed_name
                and latest.accepted(max(threshold - p.keep_margin, p.keep_floor)))
        matched = latest.accepted(threshold) and (agreeing >= p.confirm_k or strong)
        by_track = (state.eligible and not state.doubted and not matched and not kept
                    and state.confirmed_name in gallery.names and self._consistent(state)
                    and self._anchored(state, gallery, threshold))
        state.latest_matched = latest.accepted(threshold) or kept or by_track
        state.near_match = any(m.similarity >= threshold - p.near for m in matches)
        name = state.confirmed_name if by_track else latest.name
        state.eligible = matched or kept or by_track
        state.kept_by_track = by_track
        state.confirmed_name = name if state.eligible else None
        if state.eligible and latest.accepted(threshold) and state.anchored_at != state.last_frame:
            state.anchors.append(state.embeddings[-1])  # the gallery vouches for this look of the track
            state.anchored_at = state.last_frame
        recent = index - state.last_frame <= self.policy.verify_every
        state.trusted = state.eligible and track.lost_frames == 0 and not state.suspect and recent
        plausible = latest.name is not None and latest.similarity >= threshold - p.near
        candidate = Candidate(latest.name, latest.similarity) if plausible else None
        if state.trusted:
            track.identity = Identity(True, name, latest.similarity, None, candidate, _continuity(state))
        else:
            track.identity = Identity.blurred(self._reason(track, state, latest, threshold), latest.name,
                                              latest.similarity, candidate, _continuity(state))

    def _anchored(self, state: TrackRecognition, gallery: Gallery, threshold: float) -> bool:
        """Some look of this track that the gallery vouched for *strongly* still passes threshold +
        strong_margin *now*: raising the threshold, or removing the person, ends a head-turn keep at once, as it
        ends every other match. Strongly, because the keep can hold a face for as long as it stays
        self-consistent: a look-alike bystander confirmed at 0.58-0.59 (walking-and-pause, the man enrolled from
        a soft GIF frame, embedded every frame) was kept for 40 frames while her similarity fell to -0.08."""
        if not state.anchors:
            return False
        bar = threshold + self.policy.strong_margin
        return any(m.name == state.confirmed_name and m.accepted(bar)
                   for m in gallery.match(np.stack(list(state.anchors))))

    def _consistent(self, state: TrackRecognition) -> bool:
        """The latest embedding looks like this track's own earlier ones (anchors and recent window)."""
        latest = state.embeddings[-1]
        earlier = [a for a in state.anchors if a is not latest] + list(state.embeddings)[:-1]
        if not earlier:
            return False
        return float(np.max(np.stack(earlier) @ latest)) >= self.policy.self_consistent

    @staticmethod
    def _reason(track: Track, state: TrackRecognition, latest: Match, threshold: float) -> str:
        if track.lost_frames:
            return LOST
        if state.overlapping:
            return OVERLAPS
        if state.suspect:
            return CHANGED
        if not latest.accepted(threshold) and not state.eligible:
            return BELOW_THRESHOLD
        return NOT_RECOGNISED_YET


def _check_voided(state: TrackRecognition) -> bool:
    """A confirmed face's crop in flight was taken before a sign that another face may be under its id: its result
    will be thrown away, so a fresh crop goes now. Waiting for the void result first kept the streamer blurred for
    two round trips of the worker after every new look (a loaded 2-core machine coasting: 67-87 % of his samples
    shown in the UI test, `may be another face` most of the rest)."""
    # Not while it overlaps another face: that sign comes again every frame, so each fresh crop would be void too
    # (a crop a frame, every result thrown away); the first frame without it sends one.
    return state.eligible and state.suspect and not state.overlapping and state.pending_epoch != state.epoch


def _forget(state: TrackRecognition) -> None:
    """Drop every embedding: the face under this track id must be recognised from scratch."""
    state.embeddings.clear()
    state.anchors.clear()
    state.epoch += 1  # an embedding still in flight is of the face that was forgotten
    state.latest_matched = state.near_match = state.eligible = state.trusted = state.kept_by_track = False
    state.confirmed_name = None


def _continuity(state: TrackRecognition) -> tuple[int, int]:
    return state.serial, state.epoch


def _new_look(patch: np.ndarray | None, previous: np.ndarray | None, bar: float) -> bool:
    return patch is not None and previous is not None and float(patch @ previous) < bar


def _patch(frame: np.ndarray, centre: np.ndarray, size: float, side: int = 16) -> np.ndarray:
    """The face's square as a 16x16 grey patch, zero-mean and unit-norm: a dot product is the correlation."""
    h, w = frame.shape[:2]
    half = max(size / 2, 2.0)
    x1, y1 = max(0, int(centre[0] - half)), max(0, int(centre[1] - half))
    x2, y2 = min(w, int(centre[0] + half) + 1), min(h, int(centre[1] + half) + 1)
    if x2 <= x1 or y2 <= y1:
        return np.zeros(side * side, np.float32)
    grey = cv2.cvtColor(frame[y1:y2, x1:x2], cv2.COLOR_BGR2GRAY)
    vector = cv2.resize(grey, (side, side), interpolation=cv2.INTER_AREA).astype(np.float32).ravel()
    vector -= vector.mean()
    return vector / max(float(np.linalg.norm(vector)), 1e-6)

