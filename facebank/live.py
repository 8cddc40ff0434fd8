"""The engine's side of the facebank: a gallery that follows the file, the identifier built on it, and the
facebank commands the engine runs for its clients (it has the models loaded; the UI never loads one)."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np

from engine.config import Settings
from engine.recognition.gallery import Gallery
from engine.recognition.identify_facebank import FacebankIdentifier, Policy
from engine.recognition.recognize import create_embedder
from facebank.enrol import SAME_PERSON, SHARP_SHARPNESS, EnrolError, Enrolment, soft_photos
from facebank.store import Facebank, FacebankError, ImageRecord, clean_name, model_tag, name_key

log = logging.getLogger(__name__)


class LiveGallery:
    """Zero-argument callable returning the current Gallery; cheap enough to call every frame.

    It stats the file at most every `poll_s` seconds and reloads when the file was replaced, so a person
    added or removed in the UI takes effect within `poll_s` plus one read (a few ms). A facebank that cannot
    be read gives the empty gallery: nobody is recognised, everybody is blurred (fail closed).
    """

    def __init__(self, facebank: Facebank | None, poll_s: float = 0.5,
                 extra: Mapping[str, np.ndarray] | None = None) -> None:
        self.facebank = facebank  # None: blur everyone but `extra` (`--no-facebank`)
        self.extra = dict(extra or {})  # people added for one run only (`--allow PHOTO`), never stored
        self.poll_s = poll_s
        self._gallery = Gallery.empty()
        self.error: str | None = None  # why the facebank could not be read (telemetry: it is not "0 people")
        self._version: tuple[int, int, int] | None = None
        self._checked = float("-inf")
        self._lock = threading.Lock()  # the control thread may call reload() while the frame loop reads
        self.reload()

    def __call__(self) -> Gallery:
        now = time.monotonic()
        if now - self._checked >= self.poll_s:
            self._checked = now
            if self.facebank is not None and self.facebank.version() != self._version:
                self.reload()
        return self._gallery

    def reload(self) -> Gallery:
        with self._lock:
            version = self.facebank.version() if self.facebank is not None else None
            try:
                people = {p.name: p.embeddings() for p in self.facebank.people()} if self.facebank else {}
                gallery = Gallery.from_people({**people, **self.extra})
                self.error = None
            except Exception as exc:  # any damage (even a wrong structure): nobody is recognised, never the old list
                log.error("facebank unreadable, everybody is blurred until it is fixed: %s", exc)
                gallery, self.error = Gallery.empty(), str(exc) or type(exc).__name__
            self._gallery, self._version, self._checked = gallery, version, time.monotonic()
            log.info("facebank loaded: %d person(s), %d photo(s)", len(gallery), len(gallery.embeddings))
            return gallery


def create_identifier(settings: Settings, gallery: LiveGallery,
                      policy: Policy | None = None) -> FacebankIdentifier:
    """The facebank identifier for the engine, reading `gallery` (reload it after a change)."""
    return FacebankIdentifier(create_embedder(settings), gallery, policy)


# Enrolment from the live picture: how many frames are kept, and how alike they must be to be one person.
MAX_LIVE_PHOTOS = 5
# SFace cosines, each where MobileFaceNet's (0.5, 0.3) cut the same share of 7,971 real impostor pairs (0.14 %, 2.5 %).
# SAME_PERSON (facebank/enrol.py): cosine to the frames' medoid; below it a frame is someone else (or not a face)
# Below this, a frame is clearly another person: the track crossed a shot cut or a swap while gathering, and the
# majority may be the bystander, so nobody is enrolled.
OTHER_PERSON = 0.27
# A stored photo's grade in the facebank screen (`grade`): sharpness under this is weak, from that one good (with the
# face's size). Fixed where enrolment's own bar was lowered to 10 (stop 46): a photo just over the bar is still weak.
WEAK_BELOW_SHARPNESS = 100.0
GOOD_FROM_SHARPNESS = 200.0
WEAK_BELOW_FACE_PX = 80.0  # likewise fixed where enrolment's size bar was lowered to 24 px (stop 47)
GOOD_FROM_FACE_PX = 120.0
# A live frame the most-varied pick prefers only where too few others are left: sharp, and as large as enrolment
# asked until stop 47 (a smaller or softer frame embeds least like the others, so the pick would take it first).
CLEAR_FACE_PX = 40.0


class LiveFacebank:
    """The facebank commands, run inside the engine: each change is written, then the gallery reloads at once
    (one notification path; the file poll only catches edits made while no engine ran)."""

    def __init__(self, facebank: Facebank, gallery: LiveGallery) -> None:
        self.facebank = facebank
        self.gallery = gallery
        self._lock = threading.Lock()  # one write at a time from this engine (the store also locks the file)

    @property
    def crops_dir(self) -> Path:
        return self.facebank.path.parent / "crops"

    def crops_of(self, name: str) -> Path:
        """A person's crop folder, named by a hash of their name key: a name is free text ("..", "/home"),
        never a path."""
        return self.crops_dir / hashlib.sha256(name_key(name).encode()).hexdigest()[:24]

    def list(self) -> list[dict]:
        """Each person with their photos' quality figures and grade (what the facebank screen shows)."""
        return [{"name": p.name, "photos": len(p.images), "crops": len(self._crops_of(p.name)),
                 "images": [_image_view(image) for image in p.images]} for p in self.facebank.people()]

    def refresh(self) -> str:
        """Embed again the photos that changed on disk or that an older model embedded; says what it did."""
        with self._lock:
            report = self.facebank.refresh()
        self.gallery.reload()
        parts = [f"{len(report.re_embedded)} photo(s) embedded again", f"{report.unchanged} unchanged"]
        if report.missing:
            parts.append(f"{len(report.missing)} missing on disk (kept)")
        parts += [f"dropped {Path(path).name}: {why}" for path, why in report.dropped]
        return "Re-enrolled: " + ", ".join(parts) + "."

    def add(self, name: str, paths: Sequence[str], face: int | None = None) -> tuple[int, list[tuple[str, float]]]:
        """How many photos were stored (one already enrolled is not stored again), and (path, sharpness) of those
        taken though soft (engine.protocol.soft_warning words them)."""
        with self._lock:
            added = self.facebank.add(name, list(paths), choose=face)
        self.gallery.reload()
        return len(added), soft_photos(added)

    def stored_name(self, name: str) -> str | None:
        """`name` as stored ("lin" is "Lin"), or None where nobody has it."""
        person = self.facebank.person(name)
        return person.name if person is not None else None

    def remove(self, name: str) -> str | None:
        """The name as stored, or None where nobody had it (Facebank.remove)."""
        with self._lock:
            removed = self.facebank.remove(name)
            folder = self.crops_of(name)
            if removed and folder.is_dir():
                shutil.rmtree(folder)  # their crops go with them
        self.gallery.reload()
        return removed

    def rename(self, name: str, new_name: str) -> tuple[str, str] | None:
        """(the name as stored, the new name), or None where nobody had `name` (Facebank.rename). Their live crops
        move to the new name's folder; should the file's update fail, they move back. Idempotent: a rename killed
        between the move and the file's update is finished by asking again."""
        new_name = clean_name(new_name)
        with self._lock:
            person, other = self.facebank.person(name), self.facebank.person(new_name)
            if person is not None and other is not None and other.key != person.key:  # before any folder moves
                raise FacebankError(f"{other.name} is already on the facebank: remove one of them first, or add "
                                    f"the photos to {other.name}")
            old_dir, new_dir = self.crops_of(name), self.crops_of(new_name)
            moving = old_dir != new_dir and old_dir.is_dir() and person is not None
            if moving:
                with suppress(OSError):
                    new_dir.rmdir()  # an empty folder left behind; one with files is refused below
                if new_dir.exists():
                    raise FacebankError(f"cannot rename {name}: {new_dir} holds face crops of nobody on the "
                                        "facebank; remove that folder first")
                os.rename(old_dir, new_dir)  # first: a crash before the file's update leaves paths "missing", kept
            renamed = None
            try:
                moved = _moved(old_dir, new_dir) if old_dir != new_dir else None
                renamed = self.facebank.rename(name, new_name, moved)
            finally:
                if moving and renamed is None:  # refused, failed, or removed meanwhile by another process
                    os.rename(new_dir, old_dir)
        self.gallery.reload()
        return renamed

    def refresh_if_stale(self) -> None:
        """Photos embedded by an older model or recipe do not count (fail closed); embed them again at start,
        so an upgrade does not leave the streamer blurred until someone re-enrols them (`e` on the UI's facebank
        screen)."""
        try:
            people = self.facebank.people()
        except Exception:  # damaged: the gallery has already said so, in one line
            return
        stale = [i for p in people for i in p.images if i.model != model_tag()]
        if not stale:
            return
        log.warning("%d facebank photo(s) were embedded by another model: embedding them again", len(stale))
        try:
            log.warning("%s", self.refresh())
        except Exception as exc:  # never take the engine down; the traceback only with -vv
            log.error("re-embedding the facebank failed (%s): those photos are ignored, so their people are blurred, "
                      "until they are re-enrolled (`e` on the UI's facebank screen) or the engine restarts", exc)
            log.debug("re-embedding failed", exc_info=True)

    def warm_up(self) -> None:
        """Load the enrolment models now (about a second), e.g. while a live face is still being gathered."""
        enroller = self.facebank.enroller
        _ = enroller.detectors, enroller.embedder

    def enrol_crops(self, name: str, crops: list[np.ndarray], order: list[int] | None = None) -> int:
        """Enrol the most varied of `crops` (one live track's faces, best first; `order`: each one's place in time)
        under `name`.

        Crops are written beside the facebank (owner-only) only for the person being enrolled; refused or
        unused ones are deleted again. Raises with the reason when too few are usable or they disagree."""
        name = clean_name(name)
        with self._lock:  # whole: a rename or remove of this person meanwhile would move or delete its folder
            chosen = self._enrol_crops_locked(name, crops, order)
        self.gallery.reload()
        return len(chosen)

    def _enrol_crops_locked(self, name: str, crops: list[np.ndarray], order: list[int] | None) -> list[Enrolment]:
        folder = self.crops_of(name)
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.crops_dir, 0o700)
        os.chmod(folder, 0o700)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        written: list[Path] = []
        try:  # every crop written is removed again on any failure (a full disk included)
            for i, crop in enumerate(crops):
                written.append(_write_private(folder / f"{stamp}-{i:02d}.png", crop))
            chosen = self._choose(written, order)
            self.facebank.add(name, [str(e.path) for e in chosen], agreed=True)  # `_choose` checked them
        except Exception:
            for path in written:
                path.unlink(missing_ok=True)
            with suppress(OSError):
                folder.rmdir()  # only if empty: earlier enrolments of this person keep theirs
            raise
        kept = {Path(e.path).resolve() for e in chosen}
        for path in written:
            if path.resolve() not in kept:
                path.unlink(missing_ok=True)
        return chosen

    def _choose(self, paths: list[Path], order: list[int] | None = None) -> list[Enrolment]:
        usable, times = [], []
        for k, path in enumerate(paths):
            try:
                usable.append(self.facebank.enroller.enrol(path))
                times.append(order[k] if order is not None else 0)
            except EnrolError as exc:
                log.info("live frame not usable: %s", exc)
        if len(usable) < 2:
            raise EnrolError(paths[0] if paths else "", "too few clear frames of the face (it needs to be large, "
                                                         "sharp and facing the camera for a moment)")
        vectors = np.stack([e.embedding for e in usable])
        sims = vectors @ vectors.T
        medoid = int(np.argmax(sims.sum(axis=1)))
        if sims[medoid].min() < OTHER_PERSON and order is not None:
            # The track crossed a shot cut (the tracker kept its id on the next shot's face): the person picked is the
            # one in the first frames. Their frames before the change are enrolled only while they are the majority
            # (a change right at the start, or back and forth, is refused below); the later ones are dropped.
            first = _first_person(sims, times)
            if 2 * len(first) > len(usable):
                log.info("live frames: %d of %d after a change of person dropped", len(usable) - len(first),
                         len(usable))
                usable, vectors = [usable[i] for i in first], vectors[first]
                sims = vectors @ vectors.T
                medoid = int(np.argmax(sims.sum(axis=1)))
        if sims[medoid].min() < OTHER_PERSON:
            raise EnrolError(paths[0], "the frames show more than one person (a cut or someone passing in front); "
                                       "try again with only you in view")
        alike = [i for i in range(len(usable)) if sims[medoid, i] >= SAME_PERSON]
        if len(alike) < max(2, len(usable) // 2):
            raise EnrolError(paths[0], "the frames do not agree on one person (the face changed or was covered); "
                                       "try again with only you in view")
        # Soft or small frames only where too few clear ones are left: enrolment takes them since stops 46 and 47, and
        # such a frame embeds least like the others, so the most varied pick would take it first.
        clear = [i for i in alike if usable[i].sharpness >= SHARP_SHARPNESS and usable[i].face_px >= CLEAR_FACE_PX]
        return [usable[i] for i in _most_varied(vectors, clear if len(clear) >= 2 else alike, MAX_LIVE_PHOTOS)]

    def _crops_of(self, name: str) -> list[Path]:
        folder = self.crops_of(name)
        return sorted(folder.glob("*.png")) if folder.is_dir() else []


def _moved(old_dir: Path, new_dir: Path) -> Callable[[str], str]:
    """A stored photo path's new place once `old_dir` became `new_dir`: a photo of `old_dir` found in `new_dir`
    (moved now, or by a rename killed before the file's update). Other paths stay as they are."""
    old = old_dir.resolve()

    def moved(path: str) -> str:
        photo = Path(path)
        there = new_dir / photo.name
        return str(there) if photo.parent.resolve() == old and there.is_file() else path

    return moved


def _image_view(image: ImageRecord) -> dict:
    return {"path": image.path, "face_px": round(image.face_px, 1), "sharpness": round(image.sharpness, 1),
            "score": round(image.score, 3), "grade": grade(image)}


def grade(image: ImageRecord) -> str:
    """good / ok / weak against the enrolment's own bars; 'old model' counts only after a re-enrol."""
    if image.model != model_tag():
        return "old model"
    if image.face_px < WEAK_BELOW_FACE_PX or image.sharpness < WEAK_BELOW_SHARPNESS:
        return "weak"
    if image.face_px >= GOOD_FROM_FACE_PX and image.sharpness >= GOOD_FROM_SHARPNESS:
        return "good"
    return "ok"


def _first_person(sims: np.ndarray, times: list[int]) -> list[int]:
    """The longest run of frames from the first one on, in time, that agree on one person (each at least
    OTHER_PERSON to their medoid); its indices."""
    by_time = sorted(range(len(times)), key=lambda i: times[i])
    for k in range(len(by_time), 1, -1):
        run = by_time[:k]
        sub = sims[np.ix_(run, run)]
        if sub[int(np.argmax(sub.sum(axis=1)))].min() >= OTHER_PERSON:
            return run
    return by_time[:1]


def _most_varied(vectors: np.ndarray, candidates: list[int], k: int) -> list[int]:
    """Greedy farthest-first: the best frame, then each time the one least like those already chosen
    (several head poses recognise better than five copies of one)."""
    chosen = [candidates[0]]
    while len(chosen) < min(k, len(candidates)):
        rest = [i for i in candidates if i not in chosen]
        chosen.append(min(rest, key=lambda i: max(float(vectors[i] @ vectors[j]) for j in chosen)))
    return chosen


def _write_private(path: Path, image: np.ndarray) -> Path:
    ok, data = cv2.imencode(".png", image)
    if not ok:
        raise EnrolError(path, "could not encode the frame")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data.tobytes())
    return path
