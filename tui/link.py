"""The UI's only door to the engine: `engine.client` (the control API's client side and the process
lifecycle; standard library only, so the UI loads no model). Every call here blocks, so it runs in thread
workers, never on the event loop."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.client import (
    ControlClient,
    ControlError,
    EnginePaths,
    NoAnswer,
    decode_preview,
    default_paths,
    engine_running,
    facebank_timeout,
    launch_of,
    private_dir,
    redact,
    soft_warning,
    start_background,
)

log = logging.getLogger(__name__)

__all__ = ["ControlError", "EngineLink", "EnginePaths", "NoAnswer", "decode_preview", "default_engine_args",
           "default_paths", "facebank_timeout", "private_dir", "soft_warning"]


def default_engine_args(source: str) -> list[str]:
    """`engine serve` arguments for a source; a video file loops, so a test rig behaves like a camera."""
    args = ["--source", source]
    if Path(source).expanduser().is_file():
        args.append("--loop")
    return args


@dataclass
class EngineLink:
    """Where the engine lives and how to start it. A fresh connection per command keeps a restarted engine
    usable at once (a kept-open socket would fail once after every restart)."""

    paths: EnginePaths = field(default_factory=default_paths)
    engine_args: list[str] = field(default_factory=lambda: default_engine_args("0"))
    timeout: float = 5.0
    # Options the UI was given for the engines it starts (TLS), kept for a start on another source (`with_source`)
    engine_options: list[str] = field(default_factory=list)

    def with_source(self, spec: str, loop: bool = False) -> list[str]:
        """`engine serve` arguments for a new engine on `spec`, with the UI's engine options."""
        return ["--source", spec, *(["--loop"] if loop else []), *self.engine_options]

    def request(self, cmd: str, wait: float | None = None, **args: Any) -> Any:
        """`cmd` with `args`; `wait`: seconds for its answer, when more than `timeout` (a facebank change)."""
        with ControlClient(self.paths.socket, timeout=max(self.timeout, wait or 0.0)) as client:
            return client.request(cmd, **args)

    def telemetry(self, hz: float) -> Iterator[dict]:
        return ControlClient(self.paths.socket, timeout=self.timeout).subscribe(hz)

    def running(self) -> bool:
        return engine_running(self.paths)

    def take_launch_of(self, pid: int | None) -> bool:
        """Start as engine `pid` last ran (its source and outputs, saved by it), not as this UI was started: after a
        crash, `r` must not go live on another input with the virtual camera, streams and recording gone."""
        args = launch_of(self.paths, pid)
        if args is not None:
            self.engine_args = args
        return args is not None

    def start(self) -> int:
        """Start the engine in the background (loads the models: seconds). Returns its pid."""
        log.info("starting the engine: %s", " ".join(redact(a) for a in self.engine_args))  # no passphrase in ui.log
        return start_background(list(self.engine_args), self.paths)
