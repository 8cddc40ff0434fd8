"""The sink the benchmarks give the engine: it takes every frame as an output would and keeps none, so a
figure is the engine's own cost (no encoder, no virtual camera)."""

from __future__ import annotations

from engine.stages.anonymize import SafeFrame


class DiscardSink:
    """Counts the frames it is given and drops them. Only a SafeFrame may reach a sink; this one checks it."""

    def __init__(self, name: str = "discard") -> None:
        self.name = name
        self.frames = 0

    def write(self, frame: SafeFrame) -> None:
        if not isinstance(frame, SafeFrame):
            raise TypeError(f"a sink takes only SafeFrame, got {type(frame).__name__}")
        self.frames += 1

    def close(self) -> None:
        pass
