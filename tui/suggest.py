"""Path completion for `Input(suggester=...)`: the suggestion completes the last path typed (→ accepts it)."""

from __future__ import annotations

import os

from textual.suggester import Suggester

MAX_ENTRIES = 2000  # a huge folder must not stall the UI


class PathSuggester(Suggester):
    """Completes the path after the last `separator` (if any) to the first matching entry; folders get a
    trailing slash so completion can go on. `suffixes` limits files (folders always match)."""

    def __init__(self, separator: str | None = None, suffixes: tuple[str, ...] | None = None) -> None:
        super().__init__(use_cache=False, case_sensitive=True)  # no cache: the disk changes
        self.separator = separator
        self.suffixes = tuple(s.lower() for s in suffixes) if suffixes else None

    async def get_suggestion(self, value: str) -> str | None:
        last = value.rpartition(self.separator)[2] if self.separator else value
        stem = last.lstrip()
        if not stem:
            return None
        directory, partial = os.path.split(os.path.expanduser(stem))
        completion = self._first_match(directory or ".", partial)
        return value + completion[len(partial):] if completion else None

    def _first_match(self, directory: str, partial: str) -> str | None:
        try:
            with os.scandir(directory) as entries:
                names = []
                for i, entry in enumerate(entries):
                    if i >= MAX_ENTRIES:
                        break
                    if entry.name.startswith(partial) and self._wanted(entry, partial):
                        names.append(entry.name + ("/" if entry.is_dir() else ""))
        except OSError:
            return None
        return min(names, default=None)

    def _wanted(self, entry: os.DirEntry, partial: str) -> bool:
        if entry.name == partial and not entry.is_dir():
            return False  # already complete
        if entry.name.startswith(".") and not partial.startswith("."):
            return False
        if entry.is_dir() or self.suffixes is None:
            return True
        return entry.name.lower().endswith(self.suffixes)
