"""Tracking stage: ByteTrack-style association with a constant-velocity Kalman filter per face.

Faces keep an id across frames (the identifier needs it), and the tracker bridges detector misses: a track
whose detection drops is kept for `hold_seconds` at its predicted box, grown by a margin that widens the
longer it is lost, and the anonymizer keeps blurring it there (fail closed).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from engine.faces import Detections, Identity, overlaps

# Kalman noise, in units of the box size: faces move fast relative to their size in hand-held video.
_POS_NOISE = 0.05
_VEL_NOISE = 0.02
_MEAS_NOISE = 0.05
_MATCH_IOU = 0.2  # faces are small and move: a low IoU bar, plus the centre-distance fallback below
_MATCH_CENTRE = 0.5  # ... or centres closer than this fraction of the box size
_DUPLICATE_IOU = 0.3  # a lost track this much on top of a detected one is its duplicate...
_DUPLICATE_COVERED = 0.5  # ...or one lying this much inside a detected face
_LOST_GROWTH_PER_FRAME = 0.08  # a lost track's box grows this fraction of its size per missed frame
_LOST_GROWTH_MAX = 0.6
# A weak detection (below `confidence`) that no track claims starts a face when it is seen again at the same
# place in the next frame: a face half hidden or in profile often scores 0.3-0.5 frame after frame, and
# without this it would never start. Two sightings in a row rule out most one-frame false blobs.
REPEAT_START_SCORE = 0.3
REPEAT_MAX_GAP = 7  # frames a candidate waits for its second sighting (a 1080p tile comes back every 6)
# File mode (the pipeline turns `corroborated_starts` on): a weaker box (LOW_START_SCORE up to REPEAT_START_SCORE)
# starts a face on its LOW_START_SIGHTINGS-th sighting at a consistent place, each within REPEAT_MAX_GAP frames of
# the one before; the look-ahead (stages/lookahead.py) then hides it back over the frames it still holds (8: the
# first sighting may be up to 14 frames back, and the backfill follows the track's box, not the sightings). Hidden and
# motion-blurred faces often score 0.2-0.3 frame after frame; texture rarely does so in one place three times.
LOW_START_SCORE = 0.2
LOW_START_SIGHTINGS = 3
LOW_START_MAX_FACE = 0.15  # of the frame's height at most: on the dev clip, larger weak boxes (20-30 %) were hands
# A candidate waits up to REPEAT_MAX_GAP frames for its next sighting, and the face moves meanwhile (a hand-held
# camera, a pan): the centre distance at which a sighting still counts as the candidate's grows by this fraction of
# the face's size per frame waited, up to CANDIDATE_REACH_MAX. At a fixed 0.5, a 20 px Parade face panning 3 px a
# frame, seen every 3-5 frames at 0.2-0.3, never met its last box again and never started (bench/leak_classes.py).
CANDIDATE_DRIFT = 0.1
CANDIDATE_REACH_MAX = 1.0
# File mode (`scene_motion`): a camera pan or zoom moves every face in a region alike. A new track starts moving
# with the median velocity of the SCENE_MOTION_TRACKS nearest established tracks (matched this frame, at least
# SCENE_MOTION_AGE sightings), and a waiting weak candidate is looked for where that motion has carried it. Started
# at rest, a 16 px face panning 15 px a frame lost its new track on the next frame and was never taken again
# (WIDER Meeting_26, 11 frames; bench/leak_classes.py).
SCENE_MOTION = 1
SCENE_MOTION_TRACKS = 3
SCENE_MOTION_MIN_TRACKS = 2
SCENE_MOTION_AGE = 3
# Live, a face moves with the camera when its motion in the picture is under FOLLOW_SHARE of the camera's step at its
# place, a step of FOLLOW_MIN_STEP px or more (`Track.safety_box`).
FOLLOW_MIN_STEP = 1.0
FOLLOW_SHARE = 0.5


@dataclass
class Track:
    track_id: int
    mean: np.ndarray  # cx, cy, w, h, vcx, vcy, vw, vh
    cov: np.ndarray
    score: float
    landmarks: np.ndarray
    age: int = 1
    lost_frames: int = 0
    lost_seconds: float = 0.0
    extras: dict = field(default_factory=dict)  # per-track state private to later stages
    identity: Identity = field(default_factory=Identity)  # set by the identify stage every frame
    best_score: float = -1.0  # the highest score any of its detections had: a face once found confidently
    # Live: where the face was last detected, whether the camera's motion has moved the track since, the motion's
    # last step at its place (px), and whether the face moved with the camera when last seen: see `safety_box`.
    seen_box: np.ndarray | None = None
    camera_moved: bool = False
    camera_step: np.ndarray | None = None
    follows_camera: bool = False

    def __post_init__(self) -> None:
        self.best_score = max(self.best_score, self.score)
        if self.seen_box is None:
            self.seen_box = self.xyxy

    @property
    def xyxy(self) -> np.ndarray:
        cx, cy, w, h = self.mean[:4]
        return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dtype=np.float32)

    def safety_box(self) -> np.ndarray:
        """The box to anonymize: the estimate, grown while the detector has lost the face. A lost face that moved
        with the camera when last seen (a companion beside a walking streamer, someone on the same bus: still in the
        picture while the background pans) is covered from where it was seen to where the camera's motion took its
        estimate (live): the motion is the background's, and his own velocity, which cancelled it, dies down while
        he is lost. Only such faces: covering every lost face back to where it was seen had doubled a panning
        crowd's anonymizing (WIDER marchingband live, 24 -> 68 CPU ms a frame)."""
        box = self.xyxy
        if self.lost_frames == 0:
            return box
        grow = min(_LOST_GROWTH_MAX, _LOST_GROWTH_PER_FRAME * self.lost_frames)
        w, h = box[2] - box[0], box[3] - box[1]
        box = box + np.array([-w, -h, w, h], dtype=np.float32) * grow
        if not (self.camera_moved and self.follows_camera):
            return box
        seen = self.seen_box
        sw, sh = seen[2] - seen[0], seen[3] - seen[1]
        seen = seen + np.array([-sw, -sh, sw, sh], dtype=np.float32) * grow
        return np.concatenate([np.minimum(box[:2], seen[:2]), np.maximum(box[2:], seen[2:])]).astype(np.float32)


class KalmanBox:
    """Constant-velocity model on (cx, cy, w, h); noise scales with the box size."""

    F = np.eye(8, dtype=np.float64)
    F[:4, 4:] = np.eye(4)
    H = np.eye(4, 8, dtype=np.float64)

    @staticmethod
    def initiate(box: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        z = _to_cxcywh(box)
        mean = np.concatenate([z, np.zeros(4)])
        size = max(z[2], z[3])
        std = np.array([2 * _POS_NOISE * size] * 4 + [10 * _VEL_NOISE * size] * 4)
        return mean, np.diag(std**2)

    @classmethod
    def predict(cls, mean: np.ndarray, cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        size = max(mean[2], mean[3], 1.0)
        q = np.diag(np.array([_POS_NOISE * size] * 4 + [_VEL_NOISE * size] * 4) ** 2)
        mean = cls.F @ mean
        mean[2:4] = np.maximum(mean[2:4], 1.0)
        return mean, cls.F @ cov @ cls.F.T + q

    @classmethod
    def update(cls, mean: np.ndarray, cov: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        z = _to_cxcywh(box)
        size = max(z[2], z[3], 1.0)
        r = np.diag(np.full(4, (_MEAS_NOISE * size) ** 2))
        s = cls.H @ cov @ cls.H.T + r
        gain = cov @ cls.H.T @ np.linalg.inv(s)
        mean = mean + gain @ (z - cls.H @ mean)
        cov = (np.eye(8) - gain @ cls.H) @ cov
        return mean, cov

    # The same steps for n boxes at once (n x 8 means, n x 8 x 8 covariances): a crowd has 100-300 tracks, and one
    # Python call a track was most of the tracker's time (WIDER Parade, live: 8.7 -> 2.3 ms a frame). Each step is the
    # one above over a stack, so every track gets the same numbers (tests/test_small_faces.py compares them).
    @classmethod
    def predict_many(cls, means: np.ndarray, covs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        size = np.maximum(np.maximum(means[:, 2], means[:, 3]), 1.0)
        noise = np.concatenate([np.repeat((_POS_NOISE * size)[:, None], 4, 1),
                                np.repeat((_VEL_NOISE * size)[:, None], 4, 1)], axis=1) ** 2
        means = means @ cls.F.T
        means[:, 2:4] = np.maximum(means[:, 2:4], 1.0)
        covs = cls.F @ covs @ cls.F.T
        diagonal = np.arange(8)
        covs[:, diagonal, diagonal] += noise
        return means, covs

    @classmethod
    def update_many(cls, means: np.ndarray, covs: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        z = _to_cxcywh_many(boxes)
        size = np.maximum(np.maximum(z[:, 2], z[:, 3]), 1.0)
        s = cls.H @ covs @ cls.H.T
        diagonal = np.arange(4)
        # One scalar power a box, as `update` takes it: numpy's array square (x * x) and its scalar power differ
        # in the last bit now and then, and every track must get the same numbers as before.
        s[:, diagonal, diagonal] += np.array([(_MEAS_NOISE * v) ** 2 for v in size])[:, None]
        gain = covs @ cls.H.T @ np.linalg.inv(s)
        means = means + (gain @ (z - means @ cls.H.T)[:, :, None])[:, :, 0]
        covs = (np.eye(8) - gain @ cls.H) @ covs
        return means, covs

    @staticmethod
    def warp_many(means: np.ndarray, covs: np.ndarray, camera: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """n states moved by the camera's similarity transform (2x3: rotation and zoom `linear`, then a shift):
        centres and velocities turn and scale with the picture, sizes scale."""
        linear, shift = camera[:, :2].astype(np.float64), camera[:, 2].astype(np.float64)
        zoom = float(np.sqrt(abs(np.linalg.det(linear))))
        step = np.zeros((8, 8))
        step[0:2, 0:2] = step[4:6, 4:6] = linear
        step[2:4, 2:4] = step[6:8, 6:8] = np.eye(2) * zoom
        means = means @ step.T
        means[:, 0:2] += shift
        return means, step @ covs @ step.T


class FaceTracker:
    """`update` is called every frame, with an empty `Detections` when the detector saw nothing."""

    def __init__(self, confidence: float, low_confidence: float, hold_seconds: float) -> None:
        self.confidence = confidence
        self.low_confidence = low_confidence
        self.hold_seconds = hold_seconds
        self.tracks: list[Track] = []
        self._next_id = 1
        self._candidates: list[_Candidate] = []  # unclaimed weak boxes not yet a face
        self.corroborated_starts = False  # file mode: weaker boxes start a face on their 3rd sighting
        self.scene_motion = False  # file mode: new faces and weak candidates move with the tracks around them
        # Frames a weak candidate waits for its second sighting: longer than a tile takes to come back, which
        # the live loop lengthens while it sheds load (engine/runner.py).
        self.repeat_max_gap = REPEAT_MAX_GAP
        self._coasted = 0  # frames coasted since the last detected one (`coast`)

    def reset(self) -> None:
        self.tracks.clear()
        self._candidates.clear()

    def update(self, detections: Detections, dt: float, frame_size: tuple[int, int] | None = None,
               camera: np.ndarray | None = None) -> list[Track]:
        """Advance every track by `dt` seconds (and with the camera's motion since the last frame, a 2x3 transform:
        stages/motion.py), associate, and return the live tracks (found or held)."""
        self._advance(camera)
        high = detections[detections.score >= self.confidence]
        low = detections[(detections.score >= self.low_confidence) & (detections.score < self.confidence)]
        unmatched_tracks = list(range(len(self.tracks)))
        reach = self._reach()
        unmatched_tracks, unmatched_high = self._associate(unmatched_tracks, high, reach)
        unmatched_tracks, unmatched_low = self._associate(unmatched_tracks, low, reach)  # ByteTrack's second pass
        self._coasted = 0
        for i in unmatched_tracks:
            track = self.tracks[i]
            track.lost_frames += 1
            track.lost_seconds += dt
            track.mean[4:6] *= 0.9  # damp motion so a lost box does not fly away...
            track.mean[6:8] = 0.0  # ...and keep its size: safety_box() grows it on purpose instead
        for j in unmatched_high:
            self._start(high[np.array([j])])
        self._start_repeated(low[np.array(unmatched_low, dtype=np.int64)], frame_size)
        self.tracks = [t for t in self.tracks if t.lost_frames == 0 or t.lost_seconds <= self.hold_seconds]
        self._drop_duplicates()
        if frame_size is not None:  # by the box hidden, not the estimate: a face that stopped half out of the
            # frame, found no more, drifts out on its damped velocity while its grown box still covers the half in
            # the frame (a review: dropped after 9 frames of a 24-frame hold, that half then raw)
            self.tracks = [t for t in self.tracks if _inside(t.safety_box(), frame_size)]
        return self.tracks

    def waiting(self) -> list[tuple[np.ndarray, int]]:
        """(box, frames since it was last seen) of every weak box waiting for the sighting that would start a face:
        where a source ends, that sighting never comes (engine/stages/lookahead.py, `flush`)."""
        return [(c.box.copy(), c.age) for c in self._candidates]

    def coast(self, camera: np.ndarray | None = None) -> list[Track]:
        """A frame the detector did not look at (live mode far behind: engine/pipeline.py, `coast_alternate`):
        every track moves one frame along its motion. Nothing is counted lost or found, no face starts or ends:
        there is no evidence either way, and the next detected frame judges them all."""
        self._advance(camera)
        self._coasted += 1
        return self.tracks

    def _advance(self, camera: np.ndarray | None) -> None:
        """Every track one frame on: its own motion (Kalman), then the camera's, which moves the waiting weak
        candidates too. With the camera's motion taken out, a track's velocity is the face's own in the picture."""
        if self.tracks:
            means, covs = KalmanBox.predict_many(np.stack([t.mean for t in self.tracks]),
                                                 np.stack([t.cov for t in self.tracks]))
            steps = None
            if camera is not None:
                moved, covs = KalmanBox.warp_many(means, covs, camera)
                steps, means = moved[:, :2] - means[:, :2], moved
            for k, (track, mean, cov) in enumerate(zip(self.tracks, means, covs, strict=True)):
                track.mean, track.cov = mean, cov
                if steps is not None:
                    track.camera_moved, track.camera_step = True, steps[k]
        if camera is not None:
            for candidate in self._candidates:
                candidate.box = _warp_box(candidate.box, camera)

    def _reach(self) -> np.ndarray | None:
        """Per track, the centre distance (face sizes) within which a detection may still be its face: farther
        after coasted frames, as the face moved that many frames since it was last seen (a new face's velocity is
        not known yet: a 40 px face walking 20 px a frame lost its track at every detection, office clip). Not for
        a face shown (recognised): its track must not reach for someone else's face."""
        if not self._coasted or not self.tracks:
            return None  # every track's reach is _MATCH_CENTRE
        shown = np.array([t.identity.visible for t in self.tracks], bool)
        return np.where(shown, _MATCH_CENTRE, _MATCH_CENTRE * (1 + self._coasted))

    def _start_repeated(self, weak: Detections, frame_size: tuple[int, int] | None) -> None:
        """Start a track from a weak detection seen at the same place as one in the last frames: on its second
        sighting when both scored at least REPEAT_START_SCORE, or (corroborated starts) on its
        LOW_START_SIGHTINGS-th at LOW_START_SCORE or more."""
        if self.corroborated_starts:
            small = (weak.xyxy[:, 2] - weak.xyxy[:, 0]) <= LOW_START_MAX_FACE * (frame_size or (0, np.inf))[1]
            weak = weak[(weak.score >= REPEAT_START_SCORE) | ((weak.score >= LOW_START_SCORE) & small)]
        else:
            weak = weak[weak.score >= REPEAT_START_SCORE]
        if len(weak) and self.tracks:  # a weak box on a tracked face is part of that face, not a new one
            covered = overlaps(weak.xyxy, _boxes(self.tracks))[1].max(axis=1)
            weak = weak[covered < _DUPLICATE_COVERED]
        fresh: list[_Candidate] = []
        used: set[int] = set()
        affinity = (_affinity(self._carried(self._candidates), weak.xyxy, self._candidate_reach())
                    if len(weak) and self._candidates else None)
        for j in range(len(weak)):
            seen = _Candidate(weak.xyxy[j], float(weak.score[j]))
            if affinity is not None:
                i = int(np.argmax(affinity[:, j]))
                if affinity[i, j] > 0 and i not in used:
                    used.add(i)
                    seen = self._candidates[i].seen_again(seen)
                    if seen.strong >= 2 or (self.corroborated_starts and seen.sightings >= LOW_START_SIGHTINGS):
                        self._start(weak[np.array([j])])
                        continue
            fresh.append(seen)
        aged = [c.older() for k, c in enumerate(self._candidates) if k not in used and c.age + 1 < self.repeat_max_gap]
        self._candidates = fresh + aged

    def _carried(self, candidates: list[_Candidate]) -> np.ndarray:
        """Where each candidate is expected now: its last box, moved with the scene since it was seen."""
        boxes = np.stack([c.box for c in candidates])
        if not (self.scene_motion and SCENE_MOTION):
            return boxes
        ages = np.array([c.age + 1 for c in candidates], np.float64)[:, None]
        motion = self._local_motion((boxes[:, :2] + boxes[:, 2:]) / 2) * ages
        return boxes + np.tile(motion, 2).astype(boxes.dtype)

    def _local_motion(self, centres: np.ndarray) -> np.ndarray:
        """Per centre (n x 2): the median velocity (px a frame) of the established tracks matched this frame nearest
        it, or 0. One distance matrix for all centres: a crowd has hundreds of candidates and tracks a frame."""
        centres = np.atleast_2d(centres)
        moving = [t for t in self.tracks if t.lost_frames == 0 and t.age >= SCENE_MOTION_AGE]
        if len(moving) < SCENE_MOTION_MIN_TRACKS:
            return np.zeros((len(centres), 2))
        means = np.array([t.mean for t in moving])
        distance = np.linalg.norm(centres[:, None, :] - means[None, :, :2], axis=2)
        nearest = np.argsort(distance, axis=1)[:, :SCENE_MOTION_TRACKS]
        return np.median(means[:, 4:6][nearest], axis=1)

    def _candidate_reach(self) -> np.ndarray:
        """Per candidate, the centre distance (in face sizes) within which a sighting is that candidate's."""
        ages = np.array([c.age for c in self._candidates], np.float64)
        return np.minimum(_MATCH_CENTRE + CANDIDATE_DRIFT * ages, max(CANDIDATE_REACH_MAX, _MATCH_CENTRE))[:, None]

    def _drop_duplicates(self) -> None:
        """A lost track lying on a face detected this frame is that face's stale duplicate (a second box the
        detector gave it for a while): the detected track already covers the place, so the duplicate goes.
        Keeping it would blur an allowlisted face through a box that is no longer anybody's.
        Only a confident detection makes a lost track a duplicate: a weak box (a face started on corroborated weak
        sightings, possibly 2.5x larger than a lost face beside it) dropped the lost face's track and left strips
        of that face bare; its own weak boxes then counted as inside the new face and never restarted it."""
        boxes = _boxes(self.tracks)
        found = np.array([t.lost_frames == 0 and t.score >= self.confidence for t in self.tracks], bool)
        lost = np.array([t.lost_frames > 0 for t in self.tracks], bool)
        if not found.any() or not lost.any():
            return
        iou, covered = overlaps(boxes[lost], boxes[found])
        duplicate = np.zeros(len(self.tracks), bool)
        duplicate[lost] = ((iou >= _DUPLICATE_IOU) | (covered >= _DUPLICATE_COVERED)).any(axis=1)
        self.tracks = [t for t, gone in zip(self.tracks, duplicate, strict=True) if not gone]

    def _associate(self, track_ids: list[int], dets: Detections,
                   reach: np.ndarray | None = None) -> tuple[list[int], list[int]]:
        """Greedy matching on IoU (best pairs first), with a centre-distance fallback for small, fast faces
        (`reach`: per track, as `_reach` gives it)."""
        if not track_ids or not len(dets):
            return track_ids, list(range(len(dets)))
        rows = _MATCH_CENTRE if reach is None else reach[np.array(track_ids, np.int64)][:, None]
        affinity = _affinity(_boxes([self.tracks[i] for i in track_ids]), dets.xyxy, rows)
        matched_t: dict[int, int] = {}  # track (index into track_ids) -> its detection
        matched_d: set[int] = set()
        for flat in np.argsort(-affinity, axis=None):
            ti, di = divmod(int(flat), affinity.shape[1])
            if affinity[ti, di] <= 0:
                break
            if ti in matched_t or di in matched_d:
                continue
            matched_t[ti] = di
            matched_d.add(di)
        matches = dets[np.array(list(matched_t.values()), np.int64)]
        self._correct([self.tracks[track_ids[ti]] for ti in matched_t], matches)
        return (
            [t for k, t in enumerate(track_ids) if k not in matched_t],
            [d for d in range(len(dets)) if d not in matched_d],
        )

    def _correct(self, tracks: list[Track], dets: Detections) -> None:
        """Each track corrected by its detection (`dets` in the same order)."""
        if not tracks:
            return
        means, covs = KalmanBox.update_many(np.stack([t.mean for t in tracks]), np.stack([t.cov for t in tracks]),
                                            dets.xyxy)
        for k, track in enumerate(tracks):
            track.mean, track.cov = means[k], covs[k]
            track.score = float(dets.score[k])
            track.best_score = max(track.best_score, track.score)
            track.landmarks = dets.landmarks[k]
            track.age += 1
            track.lost_frames = 0
            track.lost_seconds = 0.0
            track.seen_box = dets.xyxy[k].astype(np.float32)
            track.camera_moved = False
            track.follows_camera = _follows(track.mean[4:6], track.camera_step)

    def _start(self, det: Detections) -> None:
        mean, cov = KalmanBox.initiate(det.xyxy[0])
        if self.scene_motion and SCENE_MOTION:
            mean[4:6] = self._local_motion(mean[:2])[0]
        self.tracks.append(Track(self._next_id, mean, cov, float(det.score[0]), det.landmarks[0]))
        self._next_id += 1


@dataclass
class _Candidate:
    """A weak box no track claims, waiting to be seen again: where it was last, how often, how strongly."""

    box: np.ndarray
    score: float
    sightings: int = 1
    strong: int = 0  # sightings at REPEAT_START_SCORE or more
    age: int = 0  # frames since last seen

    def __post_init__(self) -> None:
        self.strong = max(self.strong, int(self.score >= REPEAT_START_SCORE))

    def seen_again(self, now: _Candidate) -> _Candidate:
        return _Candidate(now.box, now.score, self.sightings + 1, self.strong + now.strong)

    def older(self) -> _Candidate:
        return _Candidate(self.box, self.score, self.sightings, self.strong, self.age + 1)


def _to_cxcywh(box: np.ndarray) -> np.ndarray:
    x1, y1, x2, y2 = (float(v) for v in box)
    return np.array([(x1 + x2) / 2, (y1 + y2) / 2, max(x2 - x1, 1.0), max(y2 - y1, 1.0)])


def _to_cxcywh_many(boxes: np.ndarray) -> np.ndarray:
    """`_to_cxcywh` of each row."""
    b = boxes.astype(np.float64)
    return np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2,
                     np.maximum(b[:, 2] - b[:, 0], 1.0), np.maximum(b[:, 3] - b[:, 1], 1.0)], axis=1)


def _boxes(tracks: list[Track]) -> np.ndarray:
    """Every track's `xyxy` (n x 4, float32), in one step."""
    if not tracks:
        return np.zeros((0, 4), np.float32)
    cx, cy, w, h = np.stack([t.mean[:4] for t in tracks]).T
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1).astype(np.float32)


def _affinity(a: np.ndarray, b: np.ndarray, reach: float | np.ndarray = _MATCH_CENTRE) -> np.ndarray:
    """IoU, or for boxes that barely overlap a small score when their centres are within `reach` face sizes (fast
    motion); `reach` may be one per row of `a`."""
    ix1 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy1 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix2 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    iou = inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)
    ca = (a[:, :2] + a[:, 2:]) / 2
    cb = (b[:, :2] + b[:, 2:]) / 2
    size = np.maximum((a[:, 2] - a[:, 0])[:, None], (b[:, 2] - b[:, 0])[None, :])
    dist = np.linalg.norm(ca[:, None] - cb[None], axis=-1) / np.maximum(size, 1e-9)
    # The fallback is for a face that moved, not one that changed size: a huge weak blob around a small
    # face must not be taken for it (it would inflate the track's box).
    ratio = (a[:, 2] - a[:, 0])[:, None] / np.maximum((b[:, 2] - b[:, 0])[None, :], 1e-9)
    dist = np.where((ratio > 0.6) & (ratio < 1.6), dist, np.inf)
    # Ranked below every real IoU match: a fallback only for what IoU leaves unmatched.
    near = np.where(dist < reach, _MATCH_IOU * 0.99 * (1.0 - dist / reach), 0.0)
    return np.where(iou >= _MATCH_IOU, iou, near)


def _follows(velocity: np.ndarray, camera_step: np.ndarray | None) -> bool:
    """Whether a face moves with the camera: its own velocity (the camera's motion taken out) cancels most of a
    camera step of FOLLOW_MIN_STEP px or more, so that it stays nearly still in the picture."""
    if camera_step is None:
        return False
    step = float(np.hypot(*camera_step))
    return step >= FOLLOW_MIN_STEP and float(np.hypot(*(velocity + camera_step))) < FOLLOW_SHARE * step


def _warp_box(box: np.ndarray, camera: np.ndarray) -> np.ndarray:
    """An (x1, y1, x2, y2) box moved by the camera's similarity transform: its centre moved, its size scaled."""
    centre = camera[:, :2] @ ((box[:2] + box[2:]) / 2) + camera[:, 2]
    half = (box[2:] - box[:2]) / 2 * float(np.sqrt(abs(np.linalg.det(camera[:, :2]))))
    return np.concatenate([centre - half, centre + half]).astype(box.dtype)


def _inside(box: np.ndarray, frame_size: tuple[int, int]) -> bool:
    """Whether any of the box is in the frame (width, height): a track that left the picture is dropped."""
    width, height = frame_size
    return bool(box[2] > 0 and box[3] > 0 and box[0] < width and box[1] < height)
