"""The facebank as the UI sees it: the engine's facebank commands over the control API (the engine has the
models loaded and does the face work; the UI never loads one). Blocking: call from thread workers."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from tui.link import ControlError, EngineLink

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


class FacebankLink:
    """The facebank commands of the running engine; every failure is a ControlError with the reason."""

    def __init__(self, link: EngineLink) -> None:
        self.link = link

    def people(self) -> list[PersonView]:
        return people_views(self.link.request("facebank_list")["people"])

    def add(self, name: str, paths: list[str], choose: int | None = None) -> None:
        self.link.request("facebank_add", name=name, paths=paths, face=choose)

    def remove(self, name: str) -> bool:
        try:
            self.link.request("facebank_remove", name=name)
        except ControlError as exc:
            if "not on the facebank" in str(exc):
                return False
            raise
        return True

    def reenrol(self) -> str:
        return str(self.link.request("facebank_refresh")["message"])
