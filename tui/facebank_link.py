"""The facebank as the UI sees it: the engine's facebank commands over the control API (the engine has the
models loaded and does the face work; the UI never loads one). Blocking: call from thread workers."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tui.link import ControlError, EngineLink, facebank_timeout, soft_warning

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


@dataclass(frozen=True)
class ImageView:
    """One enrolled photo: its quality figures and the engine's grade of them."""

    path: str
    face_px: float | None = None
    sharpness: float | None = None
    score: float | None = None
    grade: str = "?"

    @property
    def figures(self) -> str:
        parts = []
        if self.face_px is not None:
            parts.append(f"{self.face_px:.0f}px")
        if self.sharpness is not None:
            parts.append(f"sharp {self.sharpness:.0f}")
        if self.score is not None:
            parts.append(f"det {self.score:.2f}")
        return " · ".join(parts) or "—"


@dataclass(frozen=True)
class PersonView:
    name: str
    images: tuple[ImageView, ...]

    @property
    def grades(self) -> str:
        """e.g. 'good ×2, weak ×1'."""
        counts: dict[str, int] = {}
        for image in self.images:
            counts[image.grade] = counts.get(image.grade, 0) + 1
        order = ("good", "ok", "weak", "old model", "?")
        return ", ".join(f"{g} ×{counts[g]}" for g in order if g in counts) or "no photos"


def people_views(people: Iterable[dict[str, Any]]) -> list[PersonView]:
    """The engine's `facebank_list` people as views, sorted by name."""
    views = [PersonView(str(p.get("name", "?")), tuple(_image(i) for i in p.get("images") or [])) for p in people]
    return sorted(views, key=lambda p: p.name.casefold())


def _image(raw: dict[str, Any]) -> ImageView:
    number = lambda key: None if raw.get(key) is None else float(raw[key])  # noqa: E731
    return ImageView(str(raw.get("path", "?")), number("face_px"), number("sharpness"), number("score"),
                     str(raw.get("grade", "?")))


def saved_people(path: Path) -> list[PersonView]:
    """The people in the facebank file itself, read-only, for when no engine answers (as `blurcast facebank list`
    reads it). Plain JSON on purpose: `facebank.store` would load the models' code into the UI. The file is
    TinyDB's: {"people": {id: {"name", "images": [{"path", "face_px", "sharpness", "score", ...}]}}}; a missing
    file is an empty facebank. Grades need the engine's bars: '?'. Raises OSError or ValueError (damaged)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    data = json.loads(text) if text.strip() else {}  # json.JSONDecodeError is a ValueError
    table = data.get("people") if isinstance(data, dict) else None
    if not isinstance(table, dict):
        raise ValueError(f"{path} is not a facebank")
    people = [doc for doc in table.values() if isinstance(doc, dict)]
    return people_views({"name": p.get("name", "?"), "images": [_saved_image(i) for i in p.get("images") or []
                                                                if isinstance(i, dict)]} for p in people)


def _saved_image(doc: dict[str, Any]) -> dict[str, Any]:
    """An image document without its embedding (biometric data the UI has no use for)."""
    return {key: doc.get(key) for key in ("path", "face_px", "sharpness", "score")}


class FacebankLink:
    """The facebank commands of the running engine; every failure is a ControlError with the reason."""

    def __init__(self, link: EngineLink) -> None:
        self.link = link

    def people(self) -> list[PersonView]:
        return people_views(self.link.request("facebank_list")["people"])

    def engine_running(self) -> bool:
        return self.link.running()

    def saved(self) -> list[PersonView]:
        """The facebank file's people, read-only (no engine needed); see `saved_people`."""
        return saved_people(self.link.paths.facebank)

    def add(self, name: str, paths: list[str], choose: int | None = None) -> tuple[int, str | None]:
        """Enrol `paths` as `name`: the number of new photos (one already enrolled is not counted again), and the
        warning for those taken though soft, if any."""
        reply = self.link.request("facebank_add", wait=facebank_timeout(len(paths)), name=name, paths=paths,
                                  face=choose)
        added = reply.get("added") if isinstance(reply, dict) else None
        soft = reply.get("soft") if isinstance(reply, dict) else None
        return added if isinstance(added, int) else len(paths), soft_warning(soft if isinstance(soft, list) else [])

    def remove(self, name: str) -> str | None:
        """The name as the facebank stored it, or None where nobody had it."""
        try:
            reply = self.link.request("facebank_remove", wait=facebank_timeout(), name=name)
        except ControlError as exc:
            if "not on the facebank" in str(exc):
                return None
            raise
        return str(reply.get("removed", name)) if isinstance(reply, dict) else name

    def rename(self, name: str, new_name: str) -> tuple[str, str] | None:
        """(the name as stored, the new name), or None where nobody had `name`."""
        try:
            reply = self.link.request("facebank_rename", wait=facebank_timeout(), name=name, new_name=new_name)
        except ControlError as exc:
            if "not on the facebank" in str(exc):
                return None
            raise
        return str(reply.get("renamed", name)), str(reply.get("name", new_name))

    def reenrol(self) -> str:
        """Every photo embedded again by the engine (the facebank file's count: each given its time)."""
        try:
            photos = sum(len(person.images) for person in self.saved())
        except (OSError, ValueError):
            photos = 0
        return str(self.link.request("facebank_refresh", wait=facebank_timeout(photos))["message"])
