"""Turn a photo into a facebank embedding, or refuse it with a reason the streamer can act on.

Every refusal is an `EnrolError`. A bad enrolment is not harmless: a blurred or tiny face gives an embedding
that matches the streamer poorly (they get blurred on stream), and a photo with several faces risks enrolling
the wrong person (a bystander would then stay visible). So the checks are strict, and each bar is measured:

- detection score >= 0.7: every main face in the recognition data scores >= 0.89 with the two-scale
  detection below, spurious boxes at most 0.66;
- a box only the coarse pass (640 px) finds, under 0.85, which a closer look (the box cut out and scaled to a face's
  best size, 160 px) does not find at 0.7, is no face while a sure face is in the photo: a landscape painting behind
  a portrait scored 0.76 there, nothing at 1280 and 0.54-0.63 at the closer look, and made a photo of one person
  "2 faces" (bench/photo_allow.py, the face_recognition project's biden2.jpg). Only the coarse pass's boxes: a
  real face that is small, dim or turned is found by the finer pass alone, often under 0.85, and must keep the
  photo ambiguous (a second person there may be the one enrolling);
- face width >= 24 px, the stream's own bar for embedding a face (`engine.recognition.identify_facebank`). A face
  enlarged was always taken however small it had been, so the bar of 40 px (until stop 47) refused only the photos
  not enlarged: measured on 400 LFW people enrolled from faces shrunk to each size and enrolled at that size
  (`python bench/small_enrolment.py`), 28-40 px faces match their person's street-size photo (~55 px) 97-98 % of the
  time (48 px: 98.2 %), 24 px 95.4 %, while strangers match 0.04-0.08 % of pairs (48 px: 0.06-0.08 %) against
  street-size, small (~27 px) and smeared probes alike; sharpness and smear refuse the ones too soft at that size
  (20 px: strangers against small probes 0.10 %, so the bar stays at the stream's). Faces under
  40 px (BACKGROUND_FACE_PX) and under a third of the biggest face do not make a photo ambiguous;
- sharpness (variance of the Laplacian on the aligned face, `engine.recognition.recognize.sharpness`) >= 10, a
  warning under 25, and `smear` (detail lost along one direction: a pan, a turning head) under 0.9, or under 0.55
  where sharpness is under 50. Measured on 500 LFW people enrolled from their first photo made soft and matched
  against their second photo at street size (`python bench/soft_enrolment.py`). Out of focus, by the photo's
  median sharpness: 175 (sharp) 98.6 % of them match, 53 98.4 %, 23 97.8 %, 15 96.6 %, 11 94.2 %, 7.6 84.8 %,
  while strangers match 0.05-0.10 % of pairs (a sharp photo 0.10 %), smeared strangers 0.07-0.13 % of the pairs of
  the photos taken: a soft photo costs mainly its own person, so only one that would miss them often is refused.
  The bar was 50 until stop 46, and took 0.8-3.6 % of the photos at 15-23 (the head-pose clip's man at 49). A
  *smeared* photo is another matter: it matches strangers smeared the same way, as a pan leaves them, 0.64-1.04 % of
  pairs at 9-13 px against 0.04-0.07 % for a sharp photo (stop 33 found the same for smeared facebank copies). The
  old bar took 59-74 % of those along x or y (a smear keeps detail across it); the smear bars take 12-49 %, and 5
  points more of those at 30-60 degrees (the old bar's 40-71 %), each as risky as before. Sharp photos reach 0.75
  (LFW) and 0.85 (177 real photos of the recognition sets: a half-turned face); out of focus p95 0.56-0.58;
- a photo the two passes find no face in, and smaller than the coarse pass (so both enlarged it), is looked at once
  more at its own size: enlarging a small, soft photo lowers its face's score (a 141 px GIF face: 0.86 at its own
  size, 0.67 and 0.57 enlarged 1.2x and 1.5x); only then, so that no photo accepted before changes embedding;
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from engine.config import Settings
from engine.faces import Detections, overlaps
from engine.models.backends import resolve_backend
from engine.models.weights import sha256_of
from engine.recognition.recognize import FaceEmbedder, Landmarker, create_embedder, create_landmarker, smear
from engine.stages.detect import Detector, create_detector, merge
from engine.stages.detectors.yunet import turned_back
from facebank.images import ImageRejected, load_photo

MIN_SCORE = 0.7
SURE_SCORE = 0.85
# np.rot90's quarter turns (anticlockwise as shown), and the words for them
TURNS = ((1, "a quarter turn to the left (anticlockwise)"), (3, "a quarter turn to the right (clockwise)"),
         (2, "upside down"))
TURNED_MARGIN = 0.05  # a face scores this much higher turned than as stored: the photo is stored turned
CLOSER_LOOK_PX = 160.0  # a doubtful box's width in its closer look
MIN_FACE_PX = 24  # the stream embeds no narrower face (identify_facebank's min_face_px); bench/small_enrolment.py
BACKGROUND_FACE_PX = 40  # a face this small beside one 3x its width is behind the photo's subject, not a second one
MIN_SHARPNESS = 10.0
SOFT_SHARPNESS = 25.0  # taken, with a warning (`soft_photos`): at 11-23 they match their person 94-98 % of the time
SHARP_SHARPNESS = 50.0  # under it, a photo must be soft alike in every direction...
# ...(`smear`): LFW's sharp faces p90 0.50, out of focus p95 0.56-0.58 (1-6 % of soft photos are refused here; the old
# bar refused them all), smeared 9 px median 0.69-0.88 by direction. 0.5 refused the corpus's GIF frames (0.52-0.53).
MAX_SOFT_SMEAR = 0.55
# A smear this strong is refused however sharp the rest of the photo is: 1,400 LFW faces reach 0.75 at most, 177 real
# photos of the recognition sets 0.85 (a half-turned face); a 480p portrait smeared 9-25 px measures 0.91-0.97 at
# sharpness 41-303, which the old bar of 50 let through.
MAX_SMEAR = 0.9
# Photos of one person: each new photo of a person must reach this cosine with one of their other photos (facebank
# add, facebank/store.py), as each frame of a live enrolment must with the frames' medoid (facebank/live.py). On 1,012
# labelled photos of 355 people (`python bench/facebank_one_person.py --lfw-people 400`), a photo added to its own
# person's others is refused 0.69 % of the time, one added to another person's photos let in 0.33 % (at 0.27: 0.40 %
# and 5.0 %): a wrong photo in a batch kept a stranger visible (a newcomer's walkthrough, stop 43).
SAME_PERSON = 0.36
# One face of one photo is this close to itself (IoU): a photo embedded again (refresh) finds its face there, and
# a photo's other faces (`--face N`: the co-host beside the streamer) are other enrolments of that photo.
SAME_FACE_IOU = 0.5
# Two detection passes: large faces score low when the photo is detected at 1280 px wide (0.70-0.79 for
# faces over 500 px, measured) and high at 640; small faces need the wider pass.
DETECT_WIDTHS = (640, 1280)


class EnrolError(ValueError):
    """A photo was refused; `str()` says why in plain words, `path` says which photo."""

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{Path(path).name}: {reason}")


class FaceMoved(EnrolError):
    """A stored photo's face is not where it was enrolled (`Enroller.enrol(near=...)`)."""


class SeveralFaces(EnrolError):
    """A photo with several faces and none picked: `found` lists them, `hint` says how to pick one (a caller
    without a face option, `run --allow`, gives its own)."""

    def __init__(self, path: Path | str, found: str, hint: str) -> None:
        self.found = found
        super().__init__(path, f"{found}. {hint}")


@dataclass(frozen=True)
class FaceCandidate:
    """One face found in a photo, numbered left to right (the `choose` index)."""

    index: int
    box: tuple[float, float, float, float]
    score: float
    width: float

    def describe(self, image_width: int) -> str:
        centre = (self.box[0] + self.box[2]) / 2 / max(image_width, 1)
        where = "left" if centre < 0.36 else "right" if centre > 0.64 else "centre"
        return f"#{self.index} ({where}, {self.width:.0f} px wide)"


@dataclass(frozen=True)
class Enrolment:
    """An accepted photo: where it is, its checksum, the face's quality figures and its embedding."""

    path: str
    sha256: str
    box: tuple[float, float, float, float]
    score: float
    face_px: float
    sharpness: float
    image_size: tuple[int, int]  # width, height
    embedding: np.ndarray = field(repr=False)


file_sha256 = sha256_of  # a photo's checksum: the same helper the model files are verified with


class Enroller:
    """Detects, checks and embeds faces in photos. Loads the models on first use (about a second)."""

    def __init__(self, settings: Settings | None = None, detectors: list[Detector] | None = None,
                 embedder: FaceEmbedder | None = None, landmarker: Landmarker | None = None) -> None:
        self.settings = settings or Settings()
        self._detectors = detectors
        self._embedder = embedder
        self._landmarker = landmarker

    @property
    def detectors(self) -> list[Detector]:
        if self._detectors is None:
            # `auto` keeps photos on onnxruntime (resolve_backend: "photo" is not in OPENVINO_AUTO): speed does not
            # matter here, and the bf16 detector's boxes, which seed the alignment, took LFW from 99.27 to 99.12 %.
            backend = resolve_backend(self.settings.backend, "photo")
            self._detectors = [create_detector(self.settings.updated({"detect_width": w, "backend": backend}))
                               for w in DETECT_WIDTHS]
        return self._detectors

    @property
    def landmarker(self) -> Landmarker:
        """The alignment the stream uses too (`engine.recognition.recognize.Landmarker`)."""
        if self._landmarker is None:
            self._landmarker = create_landmarker(self.settings)
        return self._landmarker

    @property
    def embedder(self) -> FaceEmbedder:
        if self._embedder is None:
            self._embedder = create_embedder(self.settings)
        return self._embedder

    def faces(self, image: np.ndarray) -> list[FaceCandidate]:
        """The faces `choose` picks from (scoring >= MIN_SCORE; not much smaller than the biggest, or MIN_FACE_PX
        wide), left to right."""
        detections = self._detect(image)
        return _candidates(detections, _numbered(detections, _usable(detections)))

    def _detect(self, image: np.ndarray) -> Detections:
        parts = [d.detect(image, MIN_SCORE) for d in self.detectors]
        if not any(len(part) for part in parts) and (canvas := _own_size_canvas(image)) is not None:
            parts = [_inside(self.detectors[0].detect(canvas, MIN_SCORE), image)]
        found = merge(parts, 0.3)
        return found[~self._doubtful(image, found, parts)]

    def _doubtful(self, image: np.ndarray, found: Detections, parts: list[Detections]) -> np.ndarray:
        """Mask of the boxes that are no face (see the module doc): found by the coarse pass alone under SURE_SCORE,
        not found again by a closer look, while some other box is a sure face. Rarely any: the closer look runs only
        for such boxes."""
        seen_finer = np.zeros(len(found), bool)
        for part in parts[1:]:  # DETECT_WIDTHS: the coarse pass first
            if len(part) and len(found):
                seen_finer |= (overlaps(found.xyxy, part.xyxy)[0] >= 0.3).any(axis=1)
        weak = ~seen_finer & (found.score < SURE_SCORE)
        if not weak.any() or weak.all():
            return np.zeros(len(found), bool)
        return np.array([w and not self._closer_look(image, box) for w, box in zip(weak, found.xyxy, strict=True)])

    def _closer_look(self, image: np.ndarray, box: np.ndarray) -> bool:
        """Whether the coarse detector finds a face at `box` in the box cut out (with half its size around it) and
        scaled to CLOSER_LOOK_PX wide."""
        x1, y1, x2, y2 = (float(v) for v in box)
        grow_x, grow_y = 0.5 * (x2 - x1), 0.5 * (y2 - y1)
        cx1, cy1 = int(max(0.0, x1 - grow_x)), int(max(0.0, y1 - grow_y))
        cx2, cy2 = int(min(image.shape[1], x2 + grow_x)), int(min(image.shape[0], y2 + grow_y))
        scale = CLOSER_LOOK_PX / max(x2 - x1, 1.0)
        crop = cv2.resize(image[cy1:cy2, cx1:cx2], None, fx=scale, fy=scale,
                          interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        again = self.detectors[0].detect(crop, MIN_SCORE)
        if not len(again):
            return False
        again_xyxy = again.xyxy / scale + np.array([cx1, cy1, cx1, cy1], np.float32)
        return bool((overlaps(np.asarray(box, np.float32)[None], again_xyxy)[0] >= 0.3).any())

    def enrol(self, path: Path | str, choose: int | None = None, near: Sequence[float] | None = None,
              behind: bool = True) -> Enrolment:
        """Check one photo and embed its face; raises EnrolError with the reason when it is not usable.

        `choose`: the face's number (`faces`). `near`: instead, the face at this box (a photo enrolled before,
        embedded again: its numbers may have moved with the detector, its faces have not). `behind` False: a
        number may not pick a face behind the photo's subjects (one number for a batch of photos)."""
        path = Path(path).expanduser()
        try:
            photo = load_photo(path)
        except ImageRejected as exc:
            raise EnrolError(path, str(exc)) from exc
        image = photo.image
        height, width = image.shape[:2]
        detections = self._detect(image)
        chosen = self._at(path, detections, near) if near is not None else self._choose(path, image, detections,
                                                                                         choose, behind)
        if near is None and (turned := self._turned_hint(image, detections.xyxy[chosen], detections.score[chosen])):
            raise EnrolError(path, turned)
        face, sharp = self.landmarker.align_and_measure(image, detections.xyxy[chosen], detections.landmarks[chosen])
        box = tuple(float(v) for v in detections.xyxy[chosen])
        face_px = box[2] - box[0]
        if (refusal := softness_refusal(sharp, smear(face))) is not None:
            raise EnrolError(path, refusal)
        embedding = self.embedder.embed_aligned(face[None])[0]
        return Enrolment(str(path.resolve()), photo.sha256, box, float(detections.score[chosen]),
                         face_px, sharp, (width, height), embedding)

    def _turned_hint(self, image: np.ndarray, box: np.ndarray | None = None, score: float = 0.0) -> str:
        """Where the photo is stored turned (sideways or upside down, its orientation tag lost on the way): which way
        to turn it; "" where it is upright. Turned: a face shows only with the photo turned, or the face at `box`
        scores clearly higher so (YuNet finds some faces upside down or sideways, with landmarks in the wrong places:
        their embeddings did not match the same person's upright photo, cosine 0.05-0.19). Enrolment does not turn
        the photo itself: it is embedded again later as stored."""
        best, best_way = (SURE_SCORE if box is None else score + TURNED_MARGIN), ""
        for quarters, way in TURNS:  # the turn where it scores highest (a face shows upside down too)
            found = self.detectors[0].detect(np.ascontiguousarray(np.rot90(image, quarters)), MIN_SCORE)
            if box is not None and len(found):
                back = turned_back(found, quarters, image.shape)
                found = found[overlaps(np.asarray(box, np.float32)[None], back.xyxy)[0][0] >= 0.3]
            if len(found) and found.score.max() >= best:
                best, best_way = float(found.score.max()), way
        if not best_way:
            return ""
        return (f"no face was found upright as the photo is stored, but one shows with it turned {best_way} (its "
                "orientation tag may have been lost): turn the photo upright and add it again")

    @staticmethod
    def _at(path: Path, detections: Detections, near: Sequence[float]) -> int:
        """Index into `detections` of the face at `near` (the same face: IoU >= SAME_FACE_IOU), or EnrolError."""
        if len(detections):
            ious = overlaps(np.asarray(near, np.float32)[None], detections.xyxy)[0][0]
            if ious.max() >= SAME_FACE_IOU:
                return int(ious.argmax())
        raise FaceMoved(path, "the face enrolled from this photo is no longer found there; add the photo again "
                              "(--face N picks a face)")

    def _choose(self, path: Path, image: np.ndarray, detections: Detections, choose: int | None,
                behind: bool = True) -> int:
        """Index into `detections` of the face to enrol, or EnrolError."""
        width = image.shape[1]
        if not len(detections):
            raise EnrolError(path, self._turned_hint(image) or "no face was found; use a photo where your face is "
                                   "clearly visible, facing the camera, in good light")
        widths = detections.xyxy[:, 2] - detections.xyxy[:, 0]
        if widths.max() < MIN_FACE_PX:
            raise EnrolError(path, f"the face is too small ({int(widths.max())} px wide, needs {MIN_FACE_PX}); use a "
                                   "photo taken closer, or with more pixels")
        usable = _usable(detections)
        # Numbered: the faces that make the photo ambiguous, and any other face big enough to enrol (a friend behind
        # the photo's subject is picked by number; until stop 48 a 24-39 px face there had none)
        numbered = _numbered(detections, usable)
        listed = _candidates(detections, numbered)
        if choose is None and len(usable) > 1:
            faces = ", ".join(c.describe(width) for c in listed)
            raise SeveralFaces(path, f"{len(listed)} faces were found: {faces}",
                               "Pick one with its number (--face N), or use a photo of you alone")
        if choose is not None and not 0 <= choose < len(numbered):
            faces = ", ".join(c.describe(width) for c in listed)
            raise EnrolError(path, f"there is no face #{choose}; the faces found are {faces}")
        picked = usable[0] if choose is None else numbered[choose]
        if not behind and picked not in usable:
            raise EnrolError(path, f"face #{choose} is a small face behind this photo's subject: one number for "
                                   "several photos may not pick it; give this photo alone to enrol it")
        if widths[picked] < MIN_FACE_PX:
            raise EnrolError(path, f"face #{choose or 0} is too small ({int(widths[picked])} px wide, "
                                   f"needs {MIN_FACE_PX})")
        return picked


def soft_photos(enrolments: Sequence[Enrolment]) -> list[tuple[str, float]]:
    """(path, sharpness) of the photos taken though soft: each caller tells its user (engine.protocol.soft_warning)."""
    return [(e.path, round(e.sharpness, 1)) for e in enrolments if e.sharpness < SOFT_SHARPNESS]


def softness_refusal(sharp: float, smeared: float) -> str | None:
    """Why a face of this sharpness and smear (`engine.recognition.recognize`) cannot be enrolled, or None."""
    if sharp < MIN_SHARPNESS:
        return (f"the face is too blurred to recognise reliably (sharpness {sharp:.0f}, needs {MIN_SHARPNESS:.0f}); "
                "use a photo in focus, without motion blur")
    if smeared >= MAX_SMEAR or (sharp < SHARP_SHARPNESS and smeared >= MAX_SOFT_SMEAR):
        return (f"the face is smeared by motion (sharpness {sharp:.0f}, smear {smeared:.2f}): a smeared photo lets "
                "smeared strangers through in a pan; use a photo taken while still, or a sharper one")
    return None


def _own_size_canvas(image: np.ndarray) -> np.ndarray | None:
    """A photo smaller than the coarse pass (which enlarges it) on a black canvas at least the pass's size, so that
    the pass sees it at its own size (or a little smaller); None for a photo the pass did not enlarge."""
    height, width = image.shape[:2]
    coarse_w, coarse_h = DETECT_WIDTHS[0], DETECT_WIDTHS[0] * 9 // 16
    if width * height >= coarse_w * coarse_h:
        return None
    canvas = np.zeros((max(height, coarse_h), max(width, coarse_w), 3), image.dtype)
    canvas[:height, :width] = image
    return canvas


def _inside(found: Detections, image: np.ndarray) -> Detections:
    """The boxes whose centre lies in the photo (not on the canvas's black padding)."""
    centre_x = (found.xyxy[:, 0] + found.xyxy[:, 2]) / 2
    centre_y = (found.xyxy[:, 1] + found.xyxy[:, 3]) / 2
    return found[(centre_x < image.shape[1]) & (centre_y < image.shape[0])]


def _usable(detections: Detections) -> list[int]:
    """Indices of the faces that make a photo ambiguous, left to right: all but the much smaller ones.

    A face under BACKGROUND_FACE_PX that is also under a third of the biggest face's width is left out: it is
    plainly not the photo's subject (a selfie with a crowd far behind is a photo of one
    person). A small face near the size of the biggest still counts: then it is unclear whose photo it is.
    """
    widths = detections.xyxy[:, 2] - detections.xyxy[:, 0]
    order = np.argsort((detections.xyxy[:, 0] + detections.xyxy[:, 2]) / 2, kind="stable")
    return [int(j) for j in order if widths[j] >= BACKGROUND_FACE_PX or 3 * widths[j] >= widths.max()]


def _numbered(detections: Detections, usable: list[int]) -> list[int]:
    """Indices of the faces `--face N` numbers: the usable ones left to right, then every other face of MIN_FACE_PX
    or more, left to right (one behind the photo's subject does not make the photo ambiguous, yet may be the one to
    enrol). The subjects come first so that their numbers are those they had before the faces behind them were
    numbered (stop 48): a number typed for a photo of one person still picks that person."""
    widths = detections.xyxy[:, 2] - detections.xyxy[:, 0]
    order = np.argsort((detections.xyxy[:, 0] + detections.xyxy[:, 2]) / 2, kind="stable")
    return list(usable) + [int(j) for j in order if j not in usable and widths[j] >= MIN_FACE_PX]


def _candidates(detections: Detections, usable: list[int]) -> list[FaceCandidate]:
    return [
        FaceCandidate(i, tuple(float(v) for v in detections.xyxy[j]), float(detections.score[j]),
                      float(detections.xyxy[j, 2] - detections.xyxy[j, 0]))
        for i, j in enumerate(usable)
    ]
