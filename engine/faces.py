"""The one value object passed between stages: the faces of one frame."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def box_iou(a: np.ndarray | tuple, b: np.ndarray | tuple) -> float:
    """Intersection over union of two (x1, y1, x2, y2) boxes."""
    ix = max(0.0, float(min(a[2], b[2]) - max(a[0], b[0])))
    iy = max(0.0, float(min(a[3], b[3]) - max(a[1], b[1])))
    inter = ix * iy
    union = float((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])) - inter
    return inter / union if union > 0 else 0.0


# A pan's smear makes YuNet find a face twice: at its box (0.9), and as a "ghost" box 1.5-1.8x its size half a face
# off it whose nose landmark lies 0.23-0.37 of his box's width from his nose, on every smeared frame (head_motion_d9
# and talking_katiehill under `bench/suite.py --degrade pans`, scoring 0.24-0.44 and 0.24-0.57). A box is taken for a
# ghost of a face only when it covers GHOST_COVER of that face's box, is GHOST_AREA its size or more, puts its nose
# within GHOST_NOSE of that face's width of his nose, and its track never scored GHOST_MAX_SCORE. Each bound keeps a
# real face out: two faces cannot both be seen with their noses that close (one hides the other's middle), a
# bystander found clearly once (0.9) then half hidden behind him at 0.4, a smaller face (a child's in front of him,
# a face in a corner of his box), and a larger face leaning in beside him (its nose further off than that) are
# never ghosts (the two reviews: 26-30 % and 76 % of such faces' pixels shown under looser rules).
GHOST_COVER = 0.5
GHOST_AREA = 1.2
GHOST_NOSE = 0.45
GHOST_MAX_SCORE = 0.6
# YuNet makes the same ghost, further off, on large faces in other common pictures: a phone held 20 degrees askew
# (head_motion_d9 under `--degrade tilt`: 0.32, its nose 0.58-0.63 of his width off, covering 64 % of his box, for
# 60 frames: he was blurred in 28 % of his frames) and a selfie smeared in every frame (0.44, nose 0.63-0.67 off,
# covering 34-41 %). Such a box is a ghost only when a fresh look at its own region (`refinds`, at three face sizes)
# does not find it again, and his own box is clear (GHOST_RECHECK_FACE_SCORE: a face in front of his hides part of
# it). Measured (bench/ghost_recheck.py, the corpus's photo clips, crowds and GIFs): no look re-finds those ghosts;
# of the real faces YuNet found only weakly (0.2-0.6), 14 of 16 of those 60 px or wider were found again, 21 of 38 at
# 30-60 px, 30 of 55 below: so only a box GHOST_RECHECK_MIN_PX wide is looked at, and it still keeps every other bound
# of a ghost: it never scored GHOST_MAX_SCORE, is larger than him, covers a third of his box, and its nose lies within
# GHOST_RECHECK_NOSE of his width of his.
GHOST_RECHECK_NOSE = 0.7
GHOST_RECHECK_MIN_PX = 60.0
GHOST_RECHECK_COVER = 0.33
GHOST_RECHECK_FACE_SCORE = 0.8

# Track.extras: in this frame a fresh look did not find this box again, nor any look before it in GHOST_RECHECK_MISSES
# frames, nor ever one of this track's (the review: a real face half hidden behind him, tilted or smeared, was missed
# by 12 of 43 single looks, each frame on its own; a ghost is found by none).
NOT_REFOUND_KEY = "not_refound"
REFIND_MISSES_KEY = "refind_misses"  # Track.extras: fresh looks at it that found nothing; None once one found it
GHOST_RECHECK_MISSES = 3
SURE_GHOST = "sure"
RECHECK_GHOST = "recheck"


def ghost_geometry(box: np.ndarray | tuple, best_score: float, nose: np.ndarray | tuple, face: np.ndarray | tuple,
                   face_nose: np.ndarray | tuple) -> str | None:
    """Whether `box` (its nose landmark at `nose`, its track's best score `best_score`) lies around the face found at
    `face` (nose at `face_nose`) as its ghost does: SURE_GHOST, RECHECK_GHOST (a ghost only if a fresh look at its
    region does not find it again), or None."""
    if best_score >= GHOST_MAX_SCORE:
        return None
    width = float(face[2] - face[0])
    face_area = width * float(face[3] - face[1])
    area = float((box[2] - box[0]) * (box[3] - box[1]))
    if width <= 0 or face_area <= 0 or area < GHOST_AREA * face_area:
        return None
    off = float(np.hypot(nose[0] - face_nose[0], nose[1] - face_nose[1])) / width
    ix = max(0.0, float(min(box[2], face[2]) - max(box[0], face[0])))
    iy = max(0.0, float(min(box[3], face[3]) - max(box[1], face[1])))
    cover = ix * iy / face_area
    if off <= GHOST_NOSE and cover >= GHOST_COVER:
        return SURE_GHOST
    if off <= GHOST_RECHECK_NOSE and cover >= GHOST_RECHECK_COVER and box[2] - box[0] >= GHOST_RECHECK_MIN_PX:
        return RECHECK_GHOST
    return None


def is_ghost_of(box: np.ndarray | tuple, best_score: float, nose: np.ndarray | tuple, face: np.ndarray | tuple,
                face_nose: np.ndarray | tuple, not_refound: bool = False, face_score: float = 1.0) -> bool:
    """`box` is a ghost of the face found at `face` (score `face_score`): its geometry is a sure ghost's, or a
    looser one's and a fresh look at its region did not find it again (`not_refound`, engine/stages/detectors:
    `refinds`)."""
    kind = ghost_geometry(box, best_score, nose, face, face_nose)
    return kind == SURE_GHOST or (kind == RECHECK_GHOST and not_refound and face_score >= GHOST_RECHECK_FACE_SCORE)


def nose_of(landmarks: np.ndarray) -> np.ndarray:
    """The nose tip of five (x, y) landmarks (YuNet's order: eyes, nose, mouth corners)."""
    return np.asarray(landmarks, np.float32).reshape(5, 2)[2]


def overlaps(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """IoU of each row of `a` with every row of `b`, and the fraction of each `a` box each `b` box covers: two
    len(a) x len(b) matrices (the tracker's association, a still's views)."""
    ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = ix * iy
    area = np.maximum((a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]), np.float32(1e-9))[:, None]
    union = area + ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))[None, :] - inter
    return inter / np.maximum(union, 1e-9), inter / area


@dataclass
class Detections:
    """Raw detector output for one frame, in frame pixel coordinates.

    xyxy: (n, 4) float32 boxes; score: (n,) float32 in [0, 1]; landmarks: (n, 5, 2) float32
    (right eye, left eye, nose, right mouth corner, left mouth corner as seen in the image, left to right).
    """

    xyxy: np.ndarray
    score: np.ndarray
    landmarks: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.xyxy)
        if self.xyxy.shape != (n, 4) or self.score.shape != (n,) or self.landmarks.shape != (n, 5, 2):
            raise ValueError(
                f"inconsistent detections: xyxy {self.xyxy.shape}, score {self.score.shape}, "
                f"landmarks {self.landmarks.shape}"
            )

    def __len__(self) -> int:
        return len(self.xyxy)

    def __getitem__(self, index: np.ndarray | slice) -> Detections:
        return Detections(self.xyxy[index], self.score[index], self.landmarks[index])

    def shifted(self, dx: float, dy: float) -> Detections:
        """The same faces in the coordinates of a frame this one was cropped from at (dx, dy)."""
        offset = np.asarray([dx, dy], np.float32)
        return Detections(self.xyxy + np.tile(offset, 2), self.score, self.landmarks + offset)

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0, 5, 2), np.float32))

    def validate(self, width: int, height: int) -> None:
        """Reject garbage (NaN, inverted or absurd boxes, scores outside [0, 1]): the pipeline then blurs the
        whole frame instead of trusting it."""
        if not (np.isfinite(self.xyxy).all() and np.isfinite(self.score).all() and np.isfinite(self.landmarks).all()):
            raise ValueError("detector returned non-finite values")
        if ((self.score < 0) | (self.score > 1)).any():
            raise ValueError("detector returned scores outside [0, 1]")
        if len(self) and ((self.xyxy[:, 2] < self.xyxy[:, 0]) | (self.xyxy[:, 3] < self.xyxy[:, 1])).any():
            raise ValueError("detector returned inverted boxes")
        limit = 4 * max(width, height)
        if len(self) and (np.abs(self.xyxy) > limit).any():
            raise ValueError("detector returned boxes far outside the frame")


# Why a face is blurred, as published in telemetry (`FaceState.reason`); None when it is visible.
NOT_RECOGNISED_YET = "not recognised yet"
BELOW_THRESHOLD = "below threshold"
LOST = "lost"
OVERLAPS = "overlaps another face"
CHANGED = "may be another face"  # jumped, looked different, or the scene cut: re-checked before it can show
TOO_SMALL = "too small to recognise"
NO_FACEBANK = "no facebank"
RECOGNITION_OFF = "recognition off"
IDENTIFIER_ERROR = "identifier error"
# Blurred only for want of recognition so far: such a face may be shown in frames held back once a later frame
# recognises it (engine/stages/lookahead.py). Not a lost, changed or overlapping face.
REVEALABLE = frozenset({NOT_RECOGNISED_YET, BELOW_THRESHOLD})


@dataclass(frozen=True)
class Candidate:
    """The best *enrolled* match for a face, published only when it is plausibly that person."""

    name: str
    similarity: float


@dataclass
class Identity:
    """What the identify stage decided about one tracked face this frame (typed, on `Track.identity`).

    Fail closed by construction: a new Identity is blurred, with the reason "not recognised yet".
    """

    visible: bool = False
    name: str | None = None  # best enrolled match (the confirmed person when visible)
    similarity: float | None = None  # cosine of the latest embedding to `name`
    reason: str | None = NOT_RECOGNISED_YET  # why it is blurred; None when visible
    candidate: Candidate | None = None
    # Which stretch of the track this is: (the track's recognition state, its count of signs that another face may
    # have come under the id: lost, jump, new look, overlap, scene cut). Two frames of a track with the same
    # continuity show one face, as far as the identifier can tell: the look-ahead may then show, in the earlier
    # frame, a face confirmed in the later one (engine/stages/lookahead.py). None: nobody watched.
    continuity: tuple[int, int] | None = None

    @classmethod
    def blurred(cls, reason: str, name: str | None = None, similarity: float | None = None,
                candidate: Candidate | None = None, continuity: tuple[int, int] | None = None) -> Identity:
        return cls(False, name, similarity, reason, candidate, continuity)


@dataclass
class FaceState:
    """One tracked face as the anonymizer and the telemetry see it."""

    track_id: int
    xyxy: tuple[float, float, float, float]
    score: float
    lost_frames: int = 0  # > 0: the detector missed it; the box is the track's prediction
    visible: bool = False  # True only when the identifier has confirmed a facebank match
    identity: str | None = None
    similarity: float | None = None
    reason: str | None = NOT_RECOGNISED_YET  # why it is blurred; None when visible
    candidate: Candidate | None = None  # best enrolled match, only when plausible
    continuity: tuple[int, int] | None = None  # `Identity.continuity` (not published)

    def as_dict(self) -> dict:
        x1, y1, x2, y2 = self.xyxy
        return {
            "track_id": self.track_id,
            "box": [round(x1, 1), round(y1, 1), round(x2, 1), round(y2, 1)],
            "size": round(max(x2 - x1, y2 - y1), 1),
            "score": round(self.score, 3),
            "state": "visible" if self.visible else "blurred",
            "lost_frames": self.lost_frames,
            "identity": self.identity,
            "similarity": None if self.similarity is None else round(self.similarity, 3),
            "reason": None if self.visible else (self.reason or NOT_RECOGNISED_YET),
            "candidate": None if self.candidate is None else
            {"name": self.candidate.name, "similarity": round(self.candidate.similarity, 3)},
        }


@dataclass
class FrameReport:
    """What happened to one frame, for telemetry and tests."""

    index: int
    faces: list[FaceState] = field(default_factory=list)
    whole_frame: str | None = None  # why the whole frame was anonymized: "panic", "detector-error", ...
    detect_ms: float = 0.0
    unclaimed: list[tuple[float, float, float, float]] = field(default_factory=list)  # hidden, but no track yet
    backfilled: int = 0  # boxes anonymized into this frame later, for faces first found after it (lookahead)
    revealed: int = 0  # faces shown in this frame later, once recognised in a later frame (lookahead)
    coasted: bool = False  # not detected: its faces are the tracks' predictions (live mode far behind)
