"""The facebank as the engine sees it: an immutable matrix of enrolled embeddings and who each row is.

Immutable on purpose: the engine swaps in a new `Gallery` when the facebank changes, and a frame is always
matched against one consistent snapshot, never a half-updated one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from engine.recognition.recognize import EMBEDDING_DIM, l2_normalise


class Match(NamedTuple):
    """Best enrolled person for one face, and the cosine similarity to their closest image.

    `name` is None only when the gallery is empty; it is the best candidate even when `similarity` is far
    below the threshold, so the UI can show why a face stays blurred. Unpacks as `(name, similarity)`.
    """

    name: str | None
    similarity: float

    def accepted(self, threshold: float) -> bool:
        return self.name is not None and self.similarity >= threshold


NO_MATCH = Match(None, -1.0)


@dataclass(frozen=True, eq=False)
class Gallery:
    """names: the enrolled people; embeddings: (m, 128) L2-normalised rows; owners: (m,) index into names.

    Rows are kept grouped by owner so that the per-person maximum is one `np.maximum.reduceat`.
    """

    names: tuple[str, ...]
    embeddings: np.ndarray
    owners: np.ndarray

    def __post_init__(self) -> None:
        m = len(self.embeddings)
        if self.embeddings.shape != (m, EMBEDDING_DIM) or self.owners.shape != (m,):
            raise ValueError(f"gallery shapes disagree: embeddings {self.embeddings.shape}, owners {self.owners.shape}")
        if m and (self.owners.min() < 0 or self.owners.max() >= len(self.names)):
            raise ValueError("gallery row belongs to no name")
        if m and np.any(np.diff(self.owners) < 0):
            raise ValueError("gallery rows must be grouped by owner (use Gallery.from_people)")
        if not np.isfinite(self.embeddings).all():
            raise ValueError("gallery has non-finite embeddings")
        if len(set(self.owners.tolist())) != len(self.names):
            raise ValueError("every gallery name needs at least one embedding")

    @classmethod
    def empty(cls) -> Gallery:
        return cls((), np.zeros((0, EMBEDDING_DIM), np.float32), np.zeros((0,), np.int64))

    @classmethod
    def from_people(cls, people: Mapping[str, np.ndarray]) -> Gallery:
        """{name: (k, 128) embeddings}; names with no embedding are left out (they could never match)."""
        names, rows, owners = [], [], []
        for name, vectors in people.items():
            vectors = np.asarray(vectors, dtype=np.float32).reshape(-1, EMBEDDING_DIM)
            if not len(vectors):
                continue
            owners += [len(names)] * len(vectors)
            names.append(name)
            rows.append(vectors)
        if not names:
            return cls.empty()
        return cls(tuple(names), l2_normalise(np.concatenate(rows)), np.asarray(owners, dtype=np.int64))

    def __len__(self) -> int:
        """Number of enrolled people."""
        return len(self.names)

    @property
    def is_empty(self) -> bool:
        return not self.names

    def similarities(self, embeddings: np.ndarray) -> np.ndarray:
        """(n, 128) L2-normalised -> (n, people): each person's best cosine over their images.

        The maximum, not the mean, over a person's images: the streamer enrols photos in different light or
        with and without glasses, and a live face needs to resemble only one of them.
        """
        embeddings = np.asarray(embeddings, dtype=np.float32).reshape(-1, EMBEDDING_DIM)
        if self.is_empty or not len(embeddings):
            return np.zeros((len(embeddings), len(self.names)), np.float32)
        cosine = embeddings @ self.embeddings.T
        starts = np.flatnonzero(np.r_[True, np.diff(self.owners) != 0])
        return np.maximum.reduceat(cosine, starts, axis=1)

    def match(self, embeddings: np.ndarray) -> list[Match]:
        """Per row: the best person and that similarity (`NO_MATCH` when the gallery is empty)."""
        embeddings = np.asarray(embeddings, dtype=np.float32).reshape(-1, EMBEDDING_DIM)
        if self.is_empty:
            return [NO_MATCH] * len(embeddings)
        per_person = self.similarities(embeddings)
        best = per_person.argmax(axis=1)
        return [Match(self.names[j], float(per_person[i, j])) for i, j in enumerate(best)]
