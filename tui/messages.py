"""Data-only messages from the engine workers to the UI. Per-frame ones may replace a queued older one, so a
busy event loop drops stale figures instead of queueing them."""

from __future__ import annotations

import time
from typing import Any

from textual.message import Message


class EngineStats(Message):
    """One telemetry event (the engine's `telemetry()` dict)."""

    def __init__(self, telemetry: dict[str, Any]) -> None:
        super().__init__()
        self.telemetry = telemetry
        self.received = time.monotonic()

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, EngineStats)


class EngineLost(Message):
    """The telemetry stream broke or no engine answers."""

    def __init__(self, reason: str) -> None:
        super().__init__()
        self.reason = reason

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, EngineLost)


class EngineStarting(Message):
    """No engine was running; one is being started (loading models takes seconds)."""


class EngineStarted(Message):
    def __init__(self, pid: int | None) -> None:
        super().__init__()
        self.pid = pid


class EngineStartFailed(Message):
    def __init__(self, reason: str) -> None:
        super().__init__()
        self.reason = reason


class CommandFailed(Message):
    """A control command got an error reply; `error` is the engine's own message."""

    def __init__(self, cmd: str, error: str) -> None:
        super().__init__()
        self.cmd = cmd
        self.error = error


class PreviewFrame(Message):
    """A small, already-anonymized BGR frame from the engine's `preview` command."""

    def __init__(self, width: int, height: int, bgr: bytes) -> None:
        super().__init__()
        self.width = width
        self.height = height
        self.bgr = bgr

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, PreviewFrame)
