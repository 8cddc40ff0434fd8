"""The engine's side of the facebank: a gallery that follows the file, and the identifier built on it."""

from __future__ import annotations

import logging
import threading
import time

from engine.config import Settings
from engine.gallery import Gallery
from engine.identify_facebank import FacebankIdentifier, Policy
from engine.recognize import create_embedder
from facebank.store import Facebank

log = logging.getLogger(__name__)


class LiveGallery:
    """Zero-argument callable returning the current Gallery; cheap enough to call every frame.

    It stats the file at most every `poll_s` seconds and reloads when the file was replaced, so a person
    added or removed in the UI takes effect within `poll_s` plus one read (a few ms). A facebank that cannot
    be read gives the empty gallery: nobody is recognised, everybody is blurred (fail closed).
    """

    def __init__(self, facebank: Facebank, poll_s: float = 0.5) -> None:
        self.facebank = facebank
        self.poll_s = poll_s
        self._gallery = Gallery.empty()
        self._version: tuple[int, int, int] | None = None
        self._checked = float("-inf")
        self._lock = threading.Lock()  # the control thread may call reload() while the frame loop reads
        self.reload()

    def __call__(self) -> Gallery:
        now = time.monotonic()
        if now - self._checked >= self.poll_s:
            self._checked = now
            if self.facebank.version() != self._version:
                self.reload()
        return self._gallery

    def reload(self) -> Gallery:
        with self._lock:
            version = self.facebank.version()
            try:
                gallery = self.facebank.gallery()
            except Exception as exc:  # any damage (even a wrong structure): nobody is recognised, never the old list
                log.error("facebank unreadable, everybody is blurred until it is fixed: %s", exc)
                gallery = Gallery.empty()
            self._gallery, self._version, self._checked = gallery, version, time.monotonic()
            log.info("facebank loaded: %d person(s), %d photo(s)", len(gallery), len(gallery.embeddings))
            return gallery


def create_identifier(settings: Settings, facebank: Facebank | None = None,
                      policy: Policy | None = None) -> tuple[FacebankIdentifier, LiveGallery]:
    """The facebank identifier for the engine, and its gallery (call `.reload()` on a reload command)."""
    gallery = LiveGallery(facebank or Facebank())
    return FacebankIdentifier(create_embedder(settings), gallery, policy), gallery
