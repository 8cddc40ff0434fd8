"""The facebank as the UI sees it: a thin, blocking wrapper (run it in thread workers) over the `facebank`
package, imported lazily so the rest of the UI works without it."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
FACEBANK_FILE = "facebank.json"
# The facebank refuses photos below these (facebank.enrol); the UI grades accepted ones against them.
BARS = {"face_px": 40.0, "sharpness": 50.0, "score": 0.7}


class FacebankUnavailable(RuntimeError):
    """The facebank package cannot be used (not installed, or not built yet)."""


def facebank_api() -> SimpleNamespace:
    """Facebank, EnrolError, FacebankError, default_path and model_tag (None if absent) from the package.

    Falls back to its submodules: an editable install made before `facebank/__init__.py` existed imports the
    package as an empty namespace outside the repository (`pip install -e .` again fixes that).
    """
    try:
        package: Any = importlib.import_module("facebank")
        if not hasattr(package, "Facebank"):
            package = SimpleNamespace(**{**vars(importlib.import_module("facebank.enrol")),
                                         **vars(importlib.import_module("facebank.store"))})
    except ImportError as exc:
        raise FacebankUnavailable(f"The facebank is not available in this install ({exc}).") from exc
    if not hasattr(package, "Facebank"):
        raise FacebankUnavailable("The facebank is not available in this install yet: every face stays blurred.")
    store, enrol = _optional("facebank.store"), _optional("facebank.enrol")
    for name, constant in (("face_px", "MIN_FACE_PX"), ("sharpness", "MIN_SHARPNESS"), ("score", "MIN_SCORE")):
        BARS[name] = float(getattr(enrol, constant, BARS[name]))
    return SimpleNamespace(Facebank=package.Facebank, EnrolError=package.EnrolError,
                           FacebankError=getattr(package, "FacebankError", RuntimeError),
                           default_path=package.default_path, model_tag=getattr(store, "model_tag", None))


def _optional(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


@dataclass(frozen=True)
class ImageView:
    """One enrolled photo and its quality figures (face width in px, sharpness, detection score)."""

    path: str
    face_px: float | None = None
    sharpness: float | None = None
    score: float | None = None
    current_model: bool = True

    @property
    def grade(self) -> str:
        """good / ok / weak against the facebank's own bars; 'old model' needs a re-enrol to count."""
        if not self.current_model:
            return "old model"
        if self.face_px is None or self.sharpness is None:
            return "?"
        if self.face_px < 2 * BARS["face_px"] or self.sharpness < 2 * BARS["sharpness"]:
            return "weak"
        if self.face_px >= 3 * BARS["face_px"] and self.sharpness >= 4 * BARS["sharpness"]:
            return "good"
        return "ok"

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


def _field(obj: Any, name: str, default: Any = None) -> Any:
    return obj.get(name, default) if isinstance(obj, Mapping) else getattr(obj, name, default)


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


def _image(raw: Any, model: str | None) -> ImageView:
    if isinstance(raw, str | Path):
        return ImageView(str(raw))
    made_by = _field(raw, "model")
    return ImageView(str(_field(raw, "path", "?")), _number(_field(raw, "face_px")),
                     _number(_field(raw, "sharpness")), _number(_field(raw, "score")),
                     model is None or made_by is None or made_by == model)


def people_views(raw: Any, model: str | None = None) -> list[PersonView]:
    """What `Facebank.people()` returns (Person objects, dicts, (name, images) pairs or {name: images}) as
    plain views; `model` is the current embedding model, to flag photos a re-enrol must embed again."""
    pairs: Iterable[tuple[str, Any]]
    if isinstance(raw, Mapping):
        pairs = raw.items()
    else:
        pairs = ((p[0], p[1]) if isinstance(p, tuple | list) else (_field(p, "name"), _field(p, "images", []))
                 for p in raw)
    return sorted((PersonView(str(name), tuple(_image(i, model) for i in images or [])) for name, images in pairs),
                  key=lambda p: p.name.casefold())


def default_facebank_path(state_dir: Path) -> Path:
    """The facebank an engine whose state folder is `state_dir` reads (it lives beside its settings)."""
    try:
        name = Path(facebank_api().default_path()).name
    except (FacebankUnavailable, AttributeError, TypeError):
        name = FACEBANK_FILE
    return state_dir / name


class FacebankLink:
    """Opens the store for each operation (it is cheap; models load only to enrol), never a stale copy."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _bank(self) -> tuple[Any, SimpleNamespace]:
        api = facebank_api()
        return api.Facebank(self.path), api

    @staticmethod
    def enrol_errors() -> tuple[type[BaseException], ...]:
        """Failures whose message is meant for the streamer as is."""
        try:
            api = facebank_api()
        except FacebankUnavailable:
            return (FacebankUnavailable,)
        return (api.EnrolError, api.FacebankError, FacebankUnavailable, ValueError)

    def people(self) -> list[PersonView]:
        bank, api = self._bank()
        model = api.model_tag() if api.model_tag else None
        return people_views(bank.people(), model)

    def add(self, name: str, paths: list[str], choose: int | None = None) -> None:
        self._bank()[0].add(name, paths, choose=choose)

    def remove(self, name: str) -> bool:
        return bool(self._bank()[0].remove(name))

    def reenrol(self) -> str:
        """Embed again the photos that changed on disk or were embedded by an older model; says what it did."""
        bank = self._bank()[0]
        report = bank.refresh()
        parts = [f"{len(report.re_embedded)} photo(s) embedded again", f"{report.unchanged} unchanged"]
        if report.missing:
            parts.append(f"{len(report.missing)} missing on disk (kept)")
        parts += [f"dropped {Path(path).name}: {why}" for path, why in report.dropped]
        return "Re-enrolled: " + ", ".join(parts) + "."
