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
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any, Protocol

import cv2

from engine.client import EnginePaths, default_paths, save_launch, serve_args
from engine.config import Settings, load_settings, published_limits, save_settings
from engine.control import ControlServer
from engine.enrol_track import TrackEnrolment
from engine.media import is_image_path
from engine.runner import Engine
from engine.stages.sink import (
    FileSink,
    ImageSink,
    PreviewSink,
    Sink,
    VirtualCameraSink,
    check_output_path,
)
from engine.stages.source import VideoSource
from engine.stages.sources import open_source
from engine.stages.sources.audio import source_sound
from engine.stream_options import DEFAULT_TLS, Tls, published_stream_limits, srt_output_url

log = logging.getLogger(__name__)


PREVIEW_MAX_PIXELS = 640 * 400  # 768 KB of BGR, 1 MB as base64: within a reply's MAX_LINE (engine/protocol.py)


@dataclass
class ServeOptions:
    source: str = "0"
    loop: bool = False
    vcam: bool = False
    vcam_device: str | None = None
    record: str | None = None
    preview: bool = False
    outputs: list[str] = field(default_factory=list)  # srt:// or rtmp(s):// stream outputs
    bitrate_kbps: int = 4000
    keyframe_s: float = 2.0
    preset: str = "auto"  # x264: ultrafast on 4 cores or fewer, else veryfast (engine/stream_options.py)
    tls: Tls = DEFAULT_TLS  # how an https:// or rtmps:// far end's certificate is checked, sources and outputs alike
    # The engine's recordings go to a new file beside one that exists (`rec-1.mp4`); `blurcast run -o` overwrites,
    # as a one-off job's output does.
    keep_existing: bool = False
    # The frames go out at the source's pace (engine serve, `run --live`), dropped ones filled: a file's recording
    # then takes its sound placed frame by frame, not copied whole.
    live: bool = False


_SOURCE_SOUND: Any = object()  # open_sink's default: the source's own sound tap


def open_sink(kind: str, source: VideoSource, path: str | None = None, device: str | None = None,
              bitrate_kbps: int = 4000, keyframe_s: float = 2.0, preset: str = "auto",
              keep_existing: bool = False, live: bool = False, sound: Any = _SOURCE_SOUND,
              fps: Fraction | None = None, tls: Tls = DEFAULT_TLS) -> Sink:
    """A sink of `kind` for `source`'s frames. `live`: the engine paces the frames (a file played live), so a
    file's recording takes the sound from the source's tap, placed on the frames it gets. `sound` and `fps`: the tap
    and rate instead of the source's (a running engine's `output_sound()` and outputs' rate, the same across source
    switches)."""
    info = source.info
    rate = fps if fps is not None else source.fps_fraction

    def _sound_of(source: VideoSource):
        return source_sound(source) if sound is _SOURCE_SOUND else sound
    if kind == "stream":  # path is the URL; the source's sound goes along, in sync (engine/stages/sinks/stream.py)
        from engine.stages.sinks import StreamSink, redact

        if not path:
            raise ValueError("a stream output needs a URL (srt://... or rtmp://...)")
        audio = _sound_of(source)
        if audio is None:
            why = ("OpenCV reads it, picture only" if source.kind in ("camera", "url") else "the source has none")
            log.warning("stream output %s goes out without sound: %s", redact(path), why)
        return StreamSink(path, info.width, info.height, rate, audio=audio,
                          bitrate_kbps=bitrate_kbps, keyframe_s=keyframe_s, preset=preset, tls=tls)
    if kind == "vcam":
        return VirtualCameraSink(info.width, info.height, info.fps, device=device)
    if kind == "file":
        if not path:
            raise ValueError("a file sink needs a path")
        if is_image_path(path):  # a photo in, a photo out
            check_output_path(Path(path), source.spec)  # a video source is refused, naming the fix
            return ImageSink(path, alpha=getattr(source, "alpha", None))
        # A file's sound is copied from it in file mode (every frame, retimed to the file's own times afterwards).
        # Played live (frames dropped and filled, loop after loop) and from a network source it comes from the
        # source's tap, placed by frame number: copied whole, it ran at a constant rate from the file's start, out
        # of sync where the video starts after its sound or the frame rate varies.
        audio_from = source.spec if source.kind == "file" and not live and not getattr(source, "loop", False) else None
        return FileSink(path, info.width, info.height, rate, audio_from=audio_from,
                        keep_existing=keep_existing, audio=None if audio_from else _sound_of(source))
    if kind == "preview":
        return PreviewSink()
    raise ValueError(f"unknown sink {kind!r} (vcam, file, preview or stream)")


class FacebankCommands(Protocol):
    """The facebank as the engine runs it for its clients (facebank/live.py: LiveFacebank)."""

    def list(self) -> list[dict]: ...

    def add(self, name: str, paths: Sequence[str], face: int | None = None) -> tuple[int, list[tuple[str, float]]]:
        """Photos stored, and (path, sharpness) of those taken though soft."""

    def remove(self, name: str) -> str | None: ...

    def stored_name(self, name: str) -> str | None:
        """`name` as the facebank holds it ("lin" is "Lin"), or None where nobody has it."""

    def rename(self, name: str, new_name: str) -> tuple[str, str] | None: ...

    def enrol_crops(self, name: str, crops: list, order: list[int] | None = None) -> int: ...

    def refresh(self) -> str: ...

    def warm_up(self) -> None: ...


class EngineService:
    """An assembled Engine plus its control handlers; `serve()` blocks until shutdown."""

    def __init__(self, engine: Engine, paths: EnginePaths | None = None,
                 facebank: FacebankCommands | None = None, launch: ServeOptions | None = None,
                 use_facebank: bool = True, tls: Tls | None = None) -> None:
        self.paths = paths or default_paths()
        self.engine = engine
        self.facebank = facebank
        # What it runs now, kept as it changes and saved for a restart after a crash (`save_launch`)
        self.launch = replace(launch, outputs=list(launch.outputs)) if launch is not None else None
        self.use_facebank = use_facebank
        # the sources and outputs the UI adds are checked as the engine's own (`tls`: an engine with no launch options)
        self._tls = tls or (launch.tls if launch is not None else DEFAULT_TLS)
        self._launch_lock = threading.RLock()
        self.enrolment: TrackEnrolment | None = None
        self._settings_lock = threading.Lock()  # clients set at once: the file must end with the last change
        self.server = ControlServer(self.paths.socket, self._handlers(), self.telemetry)

    def _handlers(self) -> dict[str, Callable[[dict], Any]]:
        return {
            "ping": lambda r: {"pid": os.getpid(), "source": self.engine.source.spec},
            "status": lambda r: self.telemetry(),
            "settings": lambda r: self.engine.settings.as_dict(),
            "limits": lambda r: published_limits(),
            "stream_limits": lambda r: published_stream_limits(),
            "set": self._set,
            "panic": lambda r: self._set({"settings": {"panic": r.get("on", True)}}),
            "pause": lambda r: self._set({"settings": {"paused": r.get("on", True)}}),
            "preview": self._preview,
            "source": self._source,
            "sink_start": self._sink_start,
            "sink_stop": self._sink_stop,
            "facebank_list": lambda r: {"people": self._facebank().list()},
            "facebank_add": self._facebank_add,
            "facebank_remove": self._facebank_remove,
            "facebank_rename": self._facebank_rename,
            "facebank_refresh": lambda r: {"message": self._facebank().refresh()},
            "enrol_track": self._enrol_track,
            "facebank_reload": self._facebank_reload,
            "shutdown": self._shutdown,
        }

    def telemetry(self) -> dict:
        outputs = [_output(s) for s in self.engine.sinks]
        enrolment = self.enrolment.status() if self.enrolment is not None else None
        return {**self.engine.telemetry(), "pid": os.getpid(), "outputs": outputs, "enrolment": enrolment}

    def _set(self, request: dict) -> dict:
        changes = request.get("settings")
        if not isinstance(changes, dict):
            raise ValueError('set needs "settings": {name: value, ...}')
        with self._settings_lock:
            new = self.engine.update_settings(changes)
            save_settings(new, self.paths.settings)
        return new.as_dict()

    def _preview(self, request: dict) -> dict:
        image = self.engine.wanted_preview()  # already anonymized: the raw frame never leaves the engine
        if image is None:
            raise RuntimeError("no frame yet")
        width = _int_arg(request, "max_width", 96, 16, image.shape[1], clamp=True)
        # Also within PREVIEW_MAX_PIXELS: a portrait (phone) frame 640 wide is 2.9 MB of base64, over a reply's
        # MAX_LINE, and the UI's picture preview never showed one (a review, stop 44)
        width = min(width, max(16, int((PREVIEW_MAX_PIXELS * image.shape[1] / image.shape[0]) ** 0.5)))
        if width < image.shape[1]:
            height = max(1, round(width * image.shape[0] / image.shape[1]))
            image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
        h, w = image.shape[:2]
        return {"width": w, "height": h, "bgr": base64.b64encode(image.tobytes()).decode()}

    def _source(self, request: dict) -> dict:
        new = open_source(str(request["spec"]), loop=bool(request.get("loop", False)), tls=self._tls)
        self.engine.replace_source(new)
        # As asked, not `new.spec`: that one is masked (an SRT passphrase), and a restart must connect
        self._relaunch_with(source=str(request["spec"]), loop=bool(request.get("loop", False)))
        return {"source": new.spec, "width": new.info.width, "height": new.info.height, "fps": new.info.fps}

    def _sink_start(self, request: dict) -> dict:
        kind = str(request.get("kind", ""))
        path = request.get("path")
        if unknown := set(request) - _SINK_START_KEYS:  # an option ignored could be a passphrase not applied
            raise ValueError(f"sink_start does not take {', '.join(sorted(unknown))}")
        if kind == "stream" and isinstance(path, str):  # SRT latency/passphrase go in the URL, checked first
            path = srt_output_url(path, request.get("srt_latency_ms"), request.get("srt_passphrase"))
        if kind in self.engine.sink_names() or (kind == "stream" and _stream_name(path) in self.engine.sink_names()):
            raise ValueError(f"the {kind} sink is already running")
        options = {k: request[k] for k in ("bitrate_kbps", "keyframe_s", "preset") if k in request}
        # a vcam, a preview or a picture has no sound; the others take the engine's, at the outputs' rate
        takes_sound = kind == "stream" or (kind == "file" and isinstance(path, str) and not is_image_path(path))
        sink = open_sink(kind, self.engine.source, path, request.get("device"), keep_existing=True, live=True,
                         sound=self.engine.output_sound() if takes_sound else None, fps=self.engine.sound.fps_fraction,
                         tls=self._tls, **options)
        self.engine.add_sink(sink)
        self._launch_sink(kind, path, request.get("device"), started=True)
        written = getattr(sink, "path", None)
        return {"started": kind, **({"path": str(written)} if kind == "file" and written else {})}

    def _sink_stop(self, request: dict) -> dict:
        name = str(request["name"])
        running = self.engine.sink_names()
        if name not in running:
            raise ValueError(f"no {name!r} sink is running (running: {', '.join(running) or 'none'})")
        self.engine.remove_sink(name)
        self._launch_sink(name.split(" ")[0], None, None, started=False, name=name)
        return {"stopped": name}

    # --- what a restart brings back ------------------------------------------------------------------------------
    def _relaunch_with(self, **changes: Any) -> None:
        with self._launch_lock:  # control commands run on several threads: each change lands, the file is the last
            if self.launch is not None:
                self.launch = replace(self.launch, **changes)
                self._save_launch()

    def _launch_sink(self, kind: str, path: str | None, device: str | None, *, started: bool, name: str = "") -> None:
        """A sink started or stopped: the launch arguments follow (a file's path as asked, so that a restart's
        recording goes beside it, never over it)."""
        with self._launch_lock:
            if self.launch is None:
                return
            if kind == "file":
                self._relaunch_with(record=path if started else None)
            elif kind == "vcam":
                self._relaunch_with(vcam=started, vcam_device=device if started else None)
            elif kind == "stream" and started:
                # Its own bitrate, keyframe and preset are not kept: `engine serve` takes one set for all its
                # streams, and this one's would change the others'. A restart brings it back on the engine's.
                self._relaunch_with(outputs=[*self.launch.outputs, str(path)])
            elif kind == "stream":
                self._relaunch_with(outputs=[u for u in self.launch.outputs if name not in _stream_names(u)])

    def _save_launch(self) -> None:
        if self.launch is None:
            return
        o = self.launch
        try:
            save_launch(self.paths, serve_args(o.source, loop=o.loop, vcam=o.vcam, vcam_device=o.vcam_device,
                                               record=o.record, use_facebank=self.use_facebank, outputs=o.outputs,
                                               bitrate_kbps=o.bitrate_kbps, keyframe_s=o.keyframe_s, preset=o.preset,
                                               tls_args=o.tls.cli_args()))
        except OSError as exc:  # a restart then starts as the UI was started; the engine itself goes on
            log.warning("cannot save what the engine runs for a restart (%s): %s", self.paths.launch, exc)

    def _facebank(self) -> FacebankCommands:
        if self.facebank is None:
            raise RuntimeError("this engine runs without a facebank (started with --no-facebank)")
        return self.facebank

    def _facebank_add(self, request: dict) -> dict:
        name, paths = _str_arg(request, "name"), request.get("paths")
        if not isinstance(paths, list) or not paths or not all(isinstance(p, str) for p in paths):
            raise ValueError('facebank_add needs "paths": a list of image paths')
        face = request.get("face")
        if face is not None and (isinstance(face, bool) or not isinstance(face, int)):
            raise ValueError('"face" is the number of the face in the photo (0, 1, ...), or null')
        bank = self._facebank()
        added, soft = bank.add(name, paths, face)
        stored = bank.stored_name(name) or name  # "lin" adds to "Lin": the name as stored
        return {"name": stored, "added": added, "soft": [list(photo) for photo in soft]}

    def _facebank_remove(self, request: dict) -> dict:
        name = _str_arg(request, "name")
        removed = self._facebank().remove(name)
        if removed is None:
            raise ValueError(f"{name!r} is not on the facebank")
        self.engine.hide_kept()  # frames a lookahead holds must not show them either
        return {"removed": removed}

    def _facebank_rename(self, request: dict) -> dict:
        name, new_name = _str_arg(request, "name"), _str_arg(request, "new_name")
        renamed = self._facebank().rename(name, new_name)
        if renamed is None:
            raise ValueError(f"{name!r} is not on the facebank")
        return {"renamed": renamed[0], "name": renamed[1]}

    def _enrol_track(self, request: dict) -> dict:
        """Start gathering a live face's frames; progress and the outcome come in telemetry's `enrolment`."""
        bank = self._facebank()
        name, track_id = _str_arg(request, "name"), _int_arg(request, "track_id", None, 0, 1 << 31)
        seconds = float(request.get("seconds", 3.0))
        if not 0.5 <= seconds <= 30:
            raise ValueError("seconds must be in [0.5, 30]")
        if self.enrolment is not None and (self.enrolment.active or self.enrolment.state == "saving"):
            raise RuntimeError(f"already enrolling face {self.enrolment.track_id} as {self.enrolment.name}")
        report = self.engine.stats.last_report
        if report is None or not any(f.track_id == track_id and f.lost_frames == 0 for f in report.faces):
            raise ValueError(f"face {track_id} is not in the picture now")
        self.enrolment = TrackEnrolment(name, track_id, seconds, bank.enrol_crops)
        self.engine.watcher = self.enrolment
        # The models load while the face is gathered, not after: the person is visible sooner.
        threading.Thread(target=bank.warm_up, name="enrol-warm-up", daemon=True).start()
        return {"started": True, "name": name, "track_id": track_id, "seconds": seconds}

    def _facebank_reload(self, request: dict) -> dict:
        self._facebank()
        gallery = getattr(self.facebank, "gallery", None)
        if gallery is not None:
            gallery.reload()
        return {"reloaded": True}

    def _shutdown(self, request: dict) -> dict:
        threading.Timer(0.05, self.engine.stop_event.set).start()  # reply first, then stop
        return {"stopping": True}

    def serve(self) -> None:
        self.paths.root.mkdir(parents=True, exist_ok=True)
        self.paths.pid.write_text(str(os.getpid()))
        self._save_launch()
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


def _output(sink: Sink) -> dict:
    """A running sink as telemetry `outputs` lists it: name, path, and a stream's state and counts."""
    status = getattr(sink, "status", None)
    return {"name": sink.name, "path": str(getattr(sink, "path", "") or "") or None,
            **(status() if callable(status) else {"state": "running"})}


_SINK_START_KEYS = {"cmd", "id", "kind", "path", "device", "bitrate_kbps", "keyframe_s", "preset",
                    "srt_latency_ms", "srt_passphrase"}


def _stream_name(url: object) -> str:
    from engine.stages.sinks import redact

    return f"stream {redact(str(url))}"


def _stream_names(url: str) -> set[str]:
    """The sink name of a stream output as given (a start's URL, already completed) and as the engine completes it."""
    names = {_stream_name(url)}
    with suppress(ValueError):
        names.add(_stream_name(srt_output_url(url)))
    return names


def _str_arg(request: dict, name: str) -> str:
    value = request.get(name)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{request.get('cmd')} needs {name!r}: a non-empty string")
    return value


def _int_arg(request: dict, name: str, default: int | None, low: int, high: int, clamp: bool = False) -> int:
    value = request.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{request.get('cmd')} needs {name!r}: a whole number")
    if clamp:
        return min(high, max(low, value))
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}]")
    return value
