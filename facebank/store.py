"""The facebank on disk: who may stay visible, as TinyDB documents, safe against crashes and shared use.

One document per person: their name and, per enrolled photo, its path, the sha256 of its bytes, quality
figures and the 128-D embedding. Photos themselves are never copied: only embeddings are kept.

- Every write goes to a temporary file that is fsynced and then renamed over the old one (`os.replace`), so a
  reader, or a process killed mid-write, only ever sees the old or the new file, never half of one.
- Writers take an exclusive `fcntl.flock` on `<file>.lock` around each read-modify-write, so the engine and
  the UI (different processes) never lose each other's changes. Readers need no lock (see above).
- The file holds biometric data: it is created readable by its owner only (0600, folder 0700).
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import stat
import tempfile
import time
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from tinydb import Query, TinyDB
from tinydb.storages import Storage

from engine.client import default_paths
from engine.faces import box_iou
from engine.recognition.gallery import Gallery
from engine.recognition.recognize import EMBEDDING_DIM
from facebank.enrol import SAME_FACE_IOU, SAME_PERSON, EnrolError, Enroller, Enrolment, FaceMoved, file_sha256

log = logging.getLogger(__name__)

TABLE = "people"
SCHEMA = 1
MAX_NAME = 64
LOCK_TIMEOUT_S = 10.0


def same_face(sha_a: str, box_a: Iterable[float], sha_b: str, box_b: Iterable[float]) -> bool:
    """One face of one photo: the same file's bytes and the same place in it."""
    return sha_a == sha_b and box_iou(np.asarray(box_a, np.float32), np.asarray(box_b, np.float32)) >= SAME_FACE_IOU


def _new_faces(stored: list[dict], enrolments: list[Enrolment]) -> list[Enrolment]:
    """The enrolments that are not a face already stored or given before them (a photo given twice counts once)."""
    known = [(image["sha256"], image["box"]) for image in stored]
    new: list[Enrolment] = []
    for e in enrolments:
        if not any(same_face(sha, box, e.sha256, e.box) for sha, box in known):
            known.append((e.sha256, e.box))
            new.append(e)
    return new


class FacebankError(RuntimeError):
    """The facebank file cannot be used (damaged, or locked too long by another program)."""


def home_dir() -> Path:
    """The engine's state folder ($BLURCAST_HOME, else ~/.local/share/blurcast): one place decides it."""
    return default_paths().root


def default_path() -> Path:
    return default_paths().facebank


@cache
def model_tag() -> str:
    """Which network and recipe (landmarks, flip) made an embedding: embeddings made another way live in
    another space and are re-made by `refresh`, never mixed."""
    from engine.models.weights import load_manifest
    from engine.recognition.recognize import RECIPE, RECOGNIZER

    return f"{RECOGNIZER}:{load_manifest()[RECOGNIZER].sha256[:16]}:{RECIPE}"


# --- storage ---------------------------------------------------------------------------------------------------
class AtomicJSONStorage(Storage):
    """TinyDB storage that replaces the whole file atomically on every write (temp file + fsync + rename)."""

    def __init__(self, path: str | Path, **_: Any) -> None:
        self.path = Path(path)

    def read(self) -> dict | None:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except UnicodeDecodeError as exc:  # binary garbage: damaged like any other JSON error
            raise FacebankError(_damaged(self.path, "not text")) from exc
        except OSError as exc:
            raise FacebankError(f"cannot read the facebank file {self.path}: {exc.strerror or exc}") from exc
        if not text.strip():
            return None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise FacebankError(_damaged(self.path, f"{exc.msg}, line {exc.lineno} column {exc.colno}")) from exc
        if not _is_facebank(data):  # valid JSON of another shape: refused before any reader or writer trips on it
            raise FacebankError(f"the facebank file {self.path} is not a facebank")
        return data

    def write(self, data: dict) -> None:
        # A file made read-only on purpose is not replaced: the atomic rename needs only the folder's permission, and
        # left a 0400 facebank rewritten 0600 without a word (a review, stop 44)
        target = written_file(self.path)
        with suppress(FileNotFoundError):
            if not target.stat().st_mode & stat.S_IWUSR:
                raise FacebankError(f"the facebank file {target} is read-only, so nothing was changed; make it "
                                    f"writable to change who is on it (chmod 600 {target})")
        with _writable(target.parent):
            _ensure_private_dir(target.parent)
            fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:  # mkstemp creates it 0600
                    json.dump(data, f, separators=(",", ":"))
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, target)
            except BaseException:
                with suppress(FileNotFoundError):
                    os.unlink(tmp)
                raise
            _fsync_dir(target.parent)

    def close(self) -> None:
        pass


def _damaged(path: Path, why: str) -> str:
    return (f"the facebank file {path} is damaged ({why}); nobody is recognised until it is repaired, or removed and "
            "the people added again (`blurcast facebank add NAME PHOTO`)")


_PERSON_FIELDS = {"key": str, "name": str, "images": list}
_IMAGE_FIELDS = ("path", "sha256", "face_px", "sharpness", "score", "box", "image_size", "added", "model", "embedding")


def _is_facebank(data: object) -> bool:
    """The shape every reader and writer relies on: {"people": {"<id>": {key, name, images: [{path, ...}]}}}."""
    if not isinstance(data, dict):
        return False
    table = data.get(TABLE, {})
    return isinstance(table, dict) and all(str(doc_id).isdigit() and _is_person(doc)
                                           for doc_id, doc in table.items())


def _is_person(doc: object) -> bool:
    if not isinstance(doc, dict) or not all(isinstance(doc.get(k), kind) for k, kind in _PERSON_FIELDS.items()):
        return False
    return all(isinstance(image, dict) and all(f in image for f in _IMAGE_FIELDS) and _is_box(image["box"])
               for image in doc["images"])


def _is_box(box: object) -> bool:
    """x1, y1, x2, y2: refresh and `add` find a stored face by it (a hand-edited one crashed them, a review)."""
    return (isinstance(box, list) and len(box) == 4
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in box))


@contextmanager
def _writable(folder: Path) -> Iterator[None]:
    """An OS refusal (read-only or immutable folder, full disk) as one FacebankError naming the folder."""
    try:
        yield
    except OSError as exc:
        raise FacebankError(f"cannot write the facebank in {folder}: {exc.strerror or exc}") from exc


def written_file(path: Path) -> Path:
    """The file a write replaces: where `path` is a symbolic link (the facebank kept in a synced or encrypted folder),
    the file it points to. Replacing the link itself had left the linked file as it was and every later change out of
    it, without a word (a review, stop 54)."""
    return Path(os.path.realpath(path))


def _ensure_private_dir(folder: Path) -> None:
    if not folder.exists():
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, 0o700)


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (a power cut right after it could otherwise undo it)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- records -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ImageRecord:
    """One enrolled photo of a person."""

    path: str
    sha256: str
    face_px: float
    sharpness: float
    score: float
    box: tuple[float, float, float, float]
    image_size: tuple[int, int]
    added: str
    model: str
    choose: int | None
    embedding: np.ndarray = field(repr=False)

    @classmethod
    def from_enrolment(cls, e: Enrolment, choose: int | None) -> ImageRecord:
        return cls(e.path, e.sha256, round(e.face_px, 1), round(e.sharpness, 1), round(e.score, 4),
                   tuple(round(v, 1) for v in e.box), e.image_size, _now(), model_tag(), choose, e.embedding)

    @classmethod
    def from_doc(cls, doc: dict) -> ImageRecord:
        return cls(doc["path"], doc["sha256"], doc["face_px"], doc["sharpness"], doc["score"], tuple(doc["box"]),
                   tuple(doc["image_size"]), doc["added"], doc["model"], doc.get("choose"),
                   np.asarray(doc["embedding"], dtype=np.float32))

    def to_doc(self) -> dict:
        return {"path": self.path, "sha256": self.sha256, "face_px": self.face_px, "sharpness": self.sharpness,
                "score": self.score, "box": list(self.box), "image_size": list(self.image_size), "added": self.added,
                "model": self.model, "choose": self.choose,
                "embedding": [round(float(v), 7) for v in self.embedding]}


@dataclass(frozen=True)
class Person:
    name: str
    images: tuple[ImageRecord, ...]
    created: str

    @property
    def key(self) -> str:
        return name_key(self.name)

    def embeddings(self) -> np.ndarray:
        """Embeddings made by the current model (others are waiting for `refresh`)."""
        rows = [img.embedding for img in self.images if img.model == model_tag()]
        return np.stack(rows) if rows else np.zeros((0, EMBEDDING_DIM), np.float32)

    @classmethod
    def from_doc(cls, doc: dict) -> Person:
        return cls(doc["name"], tuple(ImageRecord.from_doc(d) for d in doc.get("images", [])), doc.get("created", ""))


@dataclass
class RefreshReport:
    re_embedded: list[str] = field(default_factory=list)  # changed photos (or older model), embedded again
    unchanged: int = 0
    missing: list[str] = field(default_factory=list)  # photo gone: its embedding is kept
    dropped: list[tuple[str, str]] = field(default_factory=list)  # changed and now refused: (path, reason)


def name_key(name: str) -> str:
    """Names are matched ignoring case and spacing, so "Alice  Smith" and "alice smith" are one person; and in one
    Unicode form, so "Zoë" typed as one character or as "e" and a combining mark is one person, not two that look
    alike (removing one left the other visible)."""
    return unicodedata.normalize("NFC", " ".join(name.split()).casefold())


def _check_one_person(name: str, stored: list[dict], enrolments: list[Enrolment], agreed: bool = False) -> None:
    """Refuses a new photo not linked to the person's stored photos by a chain of photos that each reach SAME_PERSON
    with the next: a photo of someone else, alone or with more of that someone, would keep them visible on stream.
    A new person's batch is linked to its best-linked photo. `agreed`: the caller checked the batch is one person
    (a live enrolment's frames, each alike the frames' medoid: facebank/live.py); one link to the stored photos
    then takes them all."""
    new = _new_faces(stored, enrolments)
    vectors = [np.asarray(image["embedding"], np.float32) for image in stored if image.get("model") == model_tag()]
    if stored and not vectors and new:
        raise EnrolError(new[0].path, f"{name}'s photos were embedded by another model, so a new photo cannot be "
                                      "checked against them: start the engine once (it embeds them again), then add it")
    first_new = len(vectors)
    vectors += [e.embedding for e in new]
    if len(vectors) < 2 or not new:
        return
    matrix = np.stack(vectors)
    alike = matrix @ matrix.T >= SAME_PERSON
    if agreed:
        alike[first_new:, first_new:] = True
    reached = np.zeros(len(vectors), bool)
    if first_new:
        reached[:first_new] = True
    else:  # the photo most others are alike, so that the odd one is the one named
        reached[int(np.argmax(alike.sum(axis=1) + (matrix @ matrix.T).sum(axis=1) / (2 * len(vectors))))] = True
    while (more := alike[reached].any(axis=0) & ~reached).any():
        reached |= more
    for k, enrolment in enumerate(new):
        if not reached[first_new + k]:
            best = float((matrix[reached] @ enrolment.embedding).max())
            raise EnrolError(enrolment.path, f"this face does not look like the other photos of {name} (cosine "
                                             f"{best:.2f} at best; photos of one person score {SAME_PERSON} or more). "
                                             f"Check that it is {name}; with a very different look, add it under a "
                                             "name of its own")


def _named(name: str) -> Any:
    """The query for a person's document. Keys are compared through `name_key` again: one stored before names were
    put in one Unicode form (NFC) may be in another, and must still be found (a review, stop 44)."""
    key = name_key(name)
    return Query().key.test(lambda stored: name_key(str(stored)) == key)


def clean_name(name: str) -> str:
    cleaned = unicodedata.normalize("NFC", " ".join(str(name).split()))
    if not cleaned:
        raise ValueError("a name is needed (it is shown in the UI next to the recognised face)")
    if len(cleaned) > MAX_NAME:
        raise ValueError(f"names are limited to {MAX_NAME} characters")
    if any(not ch.isprintable() for ch in cleaned):
        raise ValueError("names cannot contain control characters")
    return cleaned


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# --- the facebank ----------------------------------------------------------------------------------------------
class Facebank:
    """The enrolled people in one file. Cheap to construct; models load only when a photo is enrolled."""

    def __init__(self, path: Path | str | None = None, enroller: Enroller | None = None) -> None:
        self.path = Path(path).expanduser() if path is not None else default_path()
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self._enroller = enroller

    @property
    def enroller(self) -> Enroller:
        if self._enroller is None:
            self._enroller = Enroller()
        return self._enroller

    # --- reading: no lock needed, the file is only ever replaced whole ------------------------------------------
    def people(self) -> list[Person]:
        return sorted((Person.from_doc(doc) for doc in self._docs()), key=lambda p: p.key)

    def person(self, name: str) -> Person | None:
        key = name_key(name)
        return next((p for p in self.people() if p.key == key), None)

    def gallery(self) -> Gallery:
        """The engine's view: every person's current-model embeddings."""
        people = self.people()
        stale = sum(img.model != model_tag() for p in people for img in p.images)
        if stale:
            log.warning("%d facebank photo(s) were embedded by another model and are ignored until "
                        "they are re-enrolled (`e` on the UI's facebank screen)", stale)
        return Gallery.from_people({p.name: p.embeddings() for p in people})

    def version(self) -> tuple[int, int, int]:
        """Changes whenever the file is rewritten (new inode on every atomic replace): poll it to reload."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return (0, 0, 0)
        return (st.st_mtime_ns, st.st_ino, st.st_size)

    def mtime(self) -> float:
        try:
            return self.path.stat().st_mtime
        except FileNotFoundError:
            return 0.0

    def _docs(self) -> list[dict]:
        data = AtomicJSONStorage(self.path).read() or {}  # its shape checked there
        return list(data.get(TABLE, {}).values())

    # --- writing: each change is one read-modify-write under the lock ----------------------------------------------
    def add(self, name: str, paths: Iterable[Path | str] | Path | str, choose: int | None = None,
            agreed: bool = False) -> list[Enrolment]:
        """Enrol photos of `name` (new or existing). All or nothing: one refused photo and nothing is saved.
        Returns the enrolments stored: a face already enrolled (or given twice) is stored once and not returned.

        `choose` picks a face by its number, left to right, in every photo (for photos with several faces).
        Each new photo must look like the person's other photos (`_check_one_person`; `agreed`: the caller checked
        the photos given are one person).
        """
        name = clean_name(name)
        photos = [paths] if isinstance(paths, str | Path) else list(paths)
        if not photos:
            raise ValueError("give at least one photo")
        self._docs()  # a damaged facebank fails here, before the models load to enrol
        enrolments = self._enrol_all(photos, choose)
        with self._transaction() as table:
            self._check_not_elsewhere(table, name, enrolments)
            found = table.get(_named(name))
            _check_one_person(found["name"] if found else name, found["images"] if found else [], enrolments, agreed)
            images = list(found["images"]) if found else []  # stored as they are: no float round trips
            new = _new_faces(images, enrolments)
            images += [ImageRecord.from_enrolment(e, choose).to_doc() for e in new]
            if found:
                table.update({"images": images}, doc_ids=[found.doc_id])
            else:
                table.insert({"schema": SCHEMA, "key": name_key(name), "name": name, "created": _now(),
                              "images": images})
        log.info("enrolled %d new photo(s) of %s (%d given)", len(new), name, len(photos))
        return new

    def _enrol_all(self, photos: list[Path | str], choose: int | None) -> list[Enrolment]:
        """Every photo checked before anything is written (the slow part, outside the lock)."""
        done, refused = [], []
        for photo in photos:
            try:
                done.append(self.enroller.enrol(photo, choose, behind=len(photos) == 1))
            except EnrolError as exc:
                log.info("photo refused: %s", exc)
                refused.append(exc)
        if len(refused) == 1 and len(photos) == 1:
            raise refused[0]
        if refused:
            reasons = "; ".join(str(e) for e in refused)
            raise EnrolError(refused[0].path, f"{len(refused)} of {len(photos)} photos were refused, so none "
                                              f"was saved: {reasons}")
        return done

    @staticmethod
    def _check_not_elsewhere(table, name: str, enrolments: list[Enrolment]) -> None:
        """One face of a photo enrolled under two names would make it two people: refuse it. Another face of the
        same photo (`--face N`: the co-host beside the streamer) is someone else's enrolment."""
        for doc in table.all():
            if name_key(doc["key"]) == name_key(name):
                continue
            for image in doc.get("images", []):
                for e in enrolments:
                    if same_face(image["sha256"], image["box"], e.sha256, e.box):
                        raise EnrolError(e.path, f"this face of the photo is already enrolled as {doc['name']}; "
                                                 "remove it there first, or pick another face with --face N")

    def remove(self, name: str) -> str | None:
        """Forget a person (their embeddings are deleted from the file): the name as stored (`name` matches it
        ignoring case and spacing), or None if there was nobody by that name."""
        with self._transaction() as table:
            found = table.get(_named(name))
            if found is None:
                return None
            table.remove(doc_ids=[found.doc_id])
        log.info("removed %s from the facebank", found["name"])
        return found["name"]

    def rename(self, name: str, new_name: str,
               moved: Callable[[str], str] | None = None) -> tuple[str, str] | None:
        """Give a person another name (a typo, a nickname); their photos and embeddings stay. Returns (the name as
        stored, the new name), or None where nobody had `name`. `moved` maps each stored photo path to where the
        file now is (live crops sit in a folder named after the name). Another person's name is refused: two people
        under one name would be one person."""
        new_name = clean_name(new_name)
        with self._transaction() as table:
            found = table.get(_named(name))
            if found is None:
                return None
            other = table.get(_named(new_name))
            if other is not None and other.doc_id != found.doc_id:
                raise FacebankError(f"{other['name']} is already on the facebank: choose another name, or remove "
                                    "one of them first")
            images = [dict(image, path=moved(image["path"])) for image in found["images"]] if moved \
                else found["images"]
            table.update({"key": name_key(new_name), "name": new_name, "images": images}, doc_ids=[found.doc_id])
        log.info("renamed %s to %s on the facebank", found["name"], new_name)
        return found["name"], new_name

    def refresh(self) -> RefreshReport:
        """Re-embed photos whose file changed since enrolment (or that an older model embedded).

        A changed photo that is now refused is dropped from the facebank (fail closed: its old embedding no
        longer describes the file the streamer sees); a photo that is gone keeps its embedding. A changed file must
        still look like the person's photos, as `add` checks a new one (`_linked`).
        """
        report = RefreshReport()
        # (person key, path, old sha, box) -> new record or None: the box, as one person may hold two faces of a file
        updates: dict[tuple[str, str, str, tuple], ImageRecord | None] = {}
        people = self.people()
        owners = [(i.sha256, i.box, p.key) for p in people for i in p.images]
        for person in people:
            changed: list[tuple[ImageRecord, Enrolment]] = []
            for image in person.images:
                shared = any(key != person.key and sha == image.sha256 for sha, _box, key in owners)
                change = self._recheck(image, report, shared)
                if isinstance(change, tuple):
                    changed.append((image, change[1]))
                elif change is not False:
                    updates[_update_key(person.key, image)] = change
            for image, enrolment in changed:
                why = self._linked(person, enrolment, updates, owners)
                if why:
                    report.dropped.append((image.path, why))
                    updates[_update_key(person.key, image)] = None
                else:
                    report.re_embedded.append(image.path)
                    updates[_update_key(person.key, image)] = ImageRecord.from_enrolment(enrolment, None)
        _one_face_one_name(updates, report)
        if updates:
            with self._transaction() as table:
                for doc in table.all():
                    images = _apply_updates(doc, updates)
                    if images is not None:
                        table.update({"images": images}, doc_ids=[doc.doc_id])
        return report

    @staticmethod
    def _linked(person: Person, enrolment: Enrolment, updates: dict[tuple[str, str, str, tuple], ImageRecord | None],
                owners: list[tuple[str, tuple[float, float, float, float], str]]) -> str | None:
        """Why a changed file's new face is refused, or None. Anchors: what the person looked like when their
        photos passed `add`'s check, by today's model: the stored embeddings, and the unchanged files embedded again
        just now (after an upgrade, the only ones). With none left, the change cannot be checked: refused."""
        if any(key != person.key and same_face(sha, box, enrolment.sha256, enrolment.box)
               for sha, box, key in owners):
            return "it changed into a photo enrolled under another name; add it again if it is this person"
        anchors = [i.embedding for i in person.images if i.model == model_tag()]
        anchors += [r.embedding for (key, _path, sha, _box), r in updates.items()
                    if key == person.key and r is not None and r.sha256 == sha]
        if not anchors:
            return (f"it changed since it was added, and no unchanged photo of {person.name} is left to check it "
                    "against; add it again")
        best = max(float(v @ enrolment.embedding) for v in anchors)
        if best < SAME_PERSON:
            return (f"it changed since it was added and no longer looks like {person.name}'s photos (cosine "
                    f"{best:.2f} at best, one person scores {SAME_PERSON} or more); add it again if it is them")
        return None

    def _recheck(self, image: ImageRecord, report: RefreshReport,
                 shared: bool = False) -> ImageRecord | bool | tuple[bool, Enrolment] | None:
        """False: keep as is; None: drop; a record: replace; (True, enrolment): the file changed, its new face
        still to be checked against the person's other photos (`_linked`)."""
        path = Path(image.path)
        try:
            sha = file_sha256(path)
        except OSError:
            report.missing.append(image.path)
            return False
        if sha == image.sha256 and image.model == model_tag():
            report.unchanged += 1
            return False
        try:
            enrolment = self._face_again(path, image, changed=sha != image.sha256, shared=shared)
        except EnrolError as exc:
            report.dropped.append((image.path, exc.reason))
            return None
        if sha != image.sha256:
            return True, enrolment
        report.re_embedded.append(image.path)
        return ImageRecord.from_enrolment(enrolment, image.choose)

    def _face_again(self, path: Path, image: ImageRecord, changed: bool, shared: bool) -> Enrolment:
        """The face of a stored photo, embedded again: found where it was (numbers move with the detector, faces
        do not). A changed file (another photo under that name) whose face moved must show one face, unless other
        names hold faces of it too (cropped or resized, each would take the one face left: dropped); either way a
        changed file's face is checked against the person's photos after (`_linked`)."""
        try:
            return self.enroller.enrol(path, near=image.box)
        except FaceMoved:
            if not changed or shared:
                raise
        return self.enroller.enrol(path)

    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        """The people table, under the inter-process lock; each table write is one atomic file replace."""
        with self._locked():
            self._remove_stale_temp_files()
            db = TinyDB(self.path, storage=AtomicJSONStorage)
            try:
                yield db.table(TABLE, cache_size=0)  # no cache: another process may have written since
            finally:
                db.close()

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with _writable(self.lock_path.parent):
            _ensure_private_dir(self.lock_path.parent)
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            deadline = time.monotonic() + LOCK_TIMEOUT_S
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.EACCES) or time.monotonic() > deadline:
                        raise FacebankError(f"the facebank is locked by another program ({self.lock_path})") from exc
                    time.sleep(0.02)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _remove_stale_temp_files(self) -> None:
        """Temp files left by a writer killed mid-write (only ever removed under the lock: nobody is writing)."""
        target = written_file(self.path)
        for stale in target.parent.glob(f".{target.name}.*.tmp"):
            with suppress(OSError):  # one that cannot be removed (read-only folder) is harmless
                stale.unlink()


def _one_face_one_name(updates: dict[tuple[str, str, str, tuple], ImageRecord | None], report: RefreshReport) -> None:
    """A refresh that would leave one face of a file under two names drops both (an edited group photo whose faces
    now fall on one): the rule `add` keeps (`_check_not_elsewhere`)."""
    new = [(key, record) for key, record in updates.items() if record is not None]
    for i, (key, record) in enumerate(new):
        for other_key, other in new[i + 1:]:
            if key[0] != other_key[0] and same_face(record.sha256, record.box, other.sha256, other.box):
                for k, r in ((key, record), (other_key, other)):
                    if updates[k] is not None:
                        updates[k] = None
                        with suppress(ValueError):
                            report.re_embedded.remove(r.path)
                        report.dropped.append((r.path, "it changed, and its face is now another name's face too; "
                                                       "add it again under the right name"))


def _update_key(person_key: str, image: ImageRecord) -> tuple[str, str, str, tuple]:
    return person_key, image.path, image.sha256, tuple(image.box)


def _apply_updates(doc: dict, updates: dict[tuple[str, str, str], ImageRecord | None]) -> list[dict] | None:
    """The person's image list with the refresh applied; None when nothing of theirs changed.

    Matched on (person, path, old sha256, box): a photo changed by someone else meanwhile is left alone.
    """
    changed, images = False, []
    for image in doc.get("images", []):
        key = (name_key(doc["key"]), image["path"], image["sha256"], tuple(image["box"]))
        if key not in updates:
            images.append(image)
            continue
        changed = True
        if updates[key] is not None:
            images.append(updates[key].to_doc())
    return images if changed else None
