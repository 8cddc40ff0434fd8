"""The engine as a background process: start it detached, find it, steer it, stop it.

The process owns the camera and the virtual camera and outlives whoever started it (an SSH session that
drops, a UI that quits). Its files live in the state folder ($BLURCAST_HOME, default
~/.local/share/blurcast): `engine.sock` (control API), `engine.pid`, `engine.log`, `settings.json`
(settings persist across restarts).
"""

from __future__ import annotations

import base64
import logging
import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from engine.client import EnginePaths, default_paths
from engine.config import Settings, load_settings, save_settings
from engine.control import ControlServer
from engine.identify import Identifier
from engine.runner import Engine
from engine.sink import FileSink, PreviewSink, Sink, VirtualCameraSink
from engine.source import VideoSource

log = logging.getLogger(__name__)


@dataclass
class ServeOptions:
    source: str = "0"
    loop: bool = False
    vcam: bool = False
    vcam_device: str | None = None
    record: str | None = None
    preview: bool = False


def open_sink(kind: str, source: VideoSource, path: str | None = None, device: str | None = None) -> Sink:
    info = source.info
    if kind == "vcam":
        return VirtualCameraSink(info.width, info.height, info.fps, device=device)
    if kind == "file":
        if not path:
            raise ValueError("a file sink needs a path")
        audio = source.spec if source.kind == "file" else None
        return FileSink(path, info.width, info.height, source.fps_fraction, audio_from=audio)
    if kind == "preview":
        return PreviewSink()
    raise ValueError(f"unknown sink {kind!r} (vcam, file or preview)")


class EngineService:
    """An Engine plus its control handlers; `serve()` blocks until shutdown."""

    def __init__(self, options: ServeOptions, paths: EnginePaths | None = None,
                 identifier_factory: Callable[[], Identifier] | None = None,
                 on_facebank_reload: Callable[[], None] | None = None) -> None:
        self.paths = paths or default_paths()
        self.options = options
        settings = load_settings(self.paths.settings)
        source = VideoSource(options.source, loop=options.loop)
        identifier = identifier_factory() if identifier_factory else None
        self.engine = Engine(settings, source, identifier=identifier)
        self.on_facebank_reload = on_facebank_reload
        self._settings_lock = threading.Lock()  # clients set at once: the file must end with the last change
        for kind, wanted in (("vcam", options.vcam), ("file", options.record), ("preview", options.preview)):
            if wanted:
                self.engine.sinks.append(open_sink(kind, source, options.record, options.vcam_device))
        self.server = ControlServer(self.paths.socket, self._handlers(), self.engine.telemetry)

    def _handlers(self) -> dict[str, Callable[[dict], Any]]:
        return {
            "ping": lambda r: {"pid": os.getpid(), "source": self.engine.source.spec},
            "status": lambda r: self.engine.telemetry(),
            "settings": lambda r: self.engine.settings.as_dict(),
            "set": self._set,
            "panic": lambda r: self._set({"settings": {"panic": r.get("on", True)}}),
            "pause": lambda r: self._set({"settings": {"paused": r.get("on", True)}}),
            "preview": self._preview,
            "source": self._source,
            "sink_start": self._sink_start,
            "sink_stop": lambda r: self.engine.remove_sink(str(r["name"])) or {"stopped": r["name"]},
            "facebank_reload": self._facebank_reload,
            "shutdown": self._shutdown,
        }

    def _set(self, request: dict) -> dict:
        changes = request.get("settings")
        if not isinstance(changes, dict):
            raise ValueError('set needs "settings": {name: value, ...}')
        with self._settings_lock:
            new = self.engine.update_settings(changes)
            save_settings(new, self.paths.settings)
        return new.as_dict()

    def _preview(self, request: dict) -> dict:
        image = self.engine.preview  # already anonymized: the raw frame never leaves the engine
        if image is None:
            raise RuntimeError("no frame yet")
        h, w = image.shape[:2]
        return {"width": w, "height": h, "bgr": base64.b64encode(image.tobytes()).decode()}

    def _source(self, request: dict) -> dict:
        new = VideoSource(str(request["spec"]), loop=bool(request.get("loop", False)))
        self.engine.replace_source(new)
        return {"source": new.spec, "width": new.info.width, "height": new.info.height, "fps": new.info.fps}

    def _sink_start(self, request: dict) -> dict:
        kind = str(request.get("kind", ""))
        if any(s.name == kind for s in self.engine.sinks):
            raise ValueError(f"the {kind} sink is already running")
        sink = open_sink(kind, self.engine.source, request.get("path"), request.get("device"))
        self.engine.add_sink(sink)
        return {"started": kind}

    def _facebank_reload(self, request: dict) -> dict:
        if self.on_facebank_reload is None:
            raise RuntimeError("this engine runs without a facebank")
        self.on_facebank_reload()
        return {"reloaded": True}

    def _shutdown(self, request: dict) -> dict:
        threading.Timer(0.05, self.engine.stop_event.set).start()  # reply first, then stop
        return {"stopping": True}

    def serve(self) -> None:
        self.paths.root.mkdir(parents=True, exist_ok=True)
        self.paths.pid.write_text(str(os.getpid()))
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, lambda *_: self.engine.stop_event.set())
        self.server.start()
        try:
            self.engine.run_live()
        finally:
            self.server.close()
            self.engine.close()
            self.paths.pid.unlink(missing_ok=True)
            log.info("engine stopped")


def default_settings() -> Settings:
    return load_settings(default_paths().settings)
