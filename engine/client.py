"""The client side of the engine: where its files live, whether it runs, start and stop it, talk to it.

Imports only the wire protocol (engine/protocol.py) and the standard library, so the UI and the CLI can
steer an engine without loading a model, OpenCV or any engine internals.

The engine process owns the camera and the virtual camera and outlives whoever started it (an SSH session
that drops, a UI that quits). Its files live in the state folder ($BLURCAST_HOME, default
~/.local/share/blurcast): `engine.sock` (control API), `engine.pid`, `engine.log`, `settings.json`
(settings persist across restarts), `facebank.json` (the facebank).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.protocol import MAX_LINE, ControlError, decode_preview
from engine.protocol import encode as _encode

log = logging.getLogger(__name__)

__all__ = ["ControlClient", "ControlError", "EnginePaths", "decode_preview", "default_paths", "engine_running",
           "start_background", "stop_background"]


def state_dir() -> Path:
    return Path(os.environ.get("BLURCAST_HOME") or Path.home() / ".local" / "share" / "blurcast")


@dataclass(frozen=True)
class EnginePaths:
    root: Path

    @property
    def socket(self) -> Path:
        return self.root / "engine.sock"

    @property
    def pid(self) -> Path:
        return self.root / "engine.pid"

    @property
    def log(self) -> Path:
        return self.root / "engine.log"

    @property
    def settings(self) -> Path:
        return self.root / "settings.json"

    @property
    def facebank(self) -> Path:
        return self.root / "facebank.json"


def default_paths() -> EnginePaths:
    return EnginePaths(state_dir())


# --- client -------------------------------------------------------------------------------------------------
class ControlClient:
    """Blocking client: `request("set", settings={...})`, `subscribe(hz)` yields telemetry dicts."""

    def __init__(self, socket_path: Path, timeout: float = 5.0) -> None:
        self.socket_path = Path(socket_path)
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._file = None
        self._lock = threading.Lock()

    def _connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(self.socket_path))
        except OSError as exc:
            sock.close()
            raise ControlError(f"no engine running on {self.socket_path} ({exc.strerror or exc})") from exc
        self._sock, self._file = sock, sock.makefile("rwb")

    def request(self, cmd: str, **args: Any) -> Any:
        with self._lock:
            if self._sock is None:
                self._connect()
            try:
                self._file.write(_encode({"cmd": cmd, **args}))
                self._file.flush()
                line = self._file.readline(MAX_LINE)
            except OSError as exc:
                self.close()
                raise ControlError(f"lost the engine while sending {cmd!r}: {exc}") from exc
            if not line:
                self.close()
                raise ControlError(f"the engine closed the connection during {cmd!r}")
        try:
            reply = json.loads(line)
        except ValueError as exc:
            raise ControlError(f"unreadable reply to {cmd!r}: {exc}") from exc
        if not reply.get("ok"):
            raise ControlError(reply.get("error", "unknown error"))
        return reply.get("result")

    def subscribe(self, hz: float = 10.0) -> Iterator[dict]:
        """Telemetry events until the engine stops (then ControlError) or the caller stops iterating."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(max(5.0, 3.0 / hz))
        try:
            sock.connect(str(self.socket_path))
            stream = sock.makefile("rwb")
            stream.write(_encode({"cmd": "subscribe", "hz": hz}))
            stream.flush()
            while line := stream.readline(MAX_LINE):
                yield json.loads(line)
        except (OSError, ValueError) as exc:  # ValueError: an unreadable line
            raise ControlError(f"telemetry stream lost: {exc}") from exc
        finally:
            sock.close()
        raise ControlError("the engine closed the telemetry stream")

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock, self._file = None, None

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- the engine process ---------------------------------------------------------------------------------------
def engine_running(paths: EnginePaths | None = None) -> bool:
    paths = paths or default_paths()
    try:
        with ControlClient(paths.socket, timeout=2.0) as client:
            client.request("ping")
        return True
    except ControlError:
        return False


def start_background(args: list[str], paths: EnginePaths | None = None, wait_s: float = 90.0) -> int:
    """Spawn `blurcast engine serve ARGS` detached from this terminal; return its pid once it answers."""
    paths = paths or default_paths()
    if engine_running(paths):
        raise ControlError(f"an engine is already running ({paths.socket}); `blurcast engine stop` first")
    paths.root.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "blurcast", "engine", "serve", *args]
    env = {**os.environ, "BLURCAST_HOME": str(paths.root)}
    with open(paths.log, "ab") as log_file:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file,
                                start_new_session=True, env=env)  # own session: survives the SSH hangup
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ControlError(f"the engine exited at start (code {proc.returncode}); see {paths.log}:\n"
                               + _tail(paths.log))
        if engine_running(paths):
            return proc.pid
        time.sleep(0.2)
    proc.terminate()
    raise ControlError(f"the engine did not answer within {wait_s:.0f} s; see {paths.log}")


def stop_background(paths: EnginePaths | None = None, wait_s: float = 10.0) -> bool:
    """Ask the engine to stop; SIGTERM it by pid if it does not answer. False if none was running."""
    paths = paths or default_paths()
    pid = _read_pid(paths)
    try:
        with ControlClient(paths.socket) as client:
            client.request("shutdown")
    except ControlError:
        if pid is None or not _is_engine(pid):  # a stale pid file: that number may be another program now
            paths.pid.unlink(missing_ok=True)
            return False
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            paths.pid.unlink(missing_ok=True)
            return False
        except PermissionError as exc:
            raise ControlError(f"the engine (pid {pid}) belongs to another user: {exc}") from exc
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and (engine_running(paths) or (pid and _pid_alive(pid))):
        time.sleep(0.1)
    if engine_running(paths):
        raise ControlError(f"the engine is still running {wait_s:.0f} s after it was asked to stop")
    return True


def _is_engine(pid: int) -> bool:
    """Whether `pid` runs `blurcast engine serve` (where /proc exists; elsewhere, assume so)."""
    cmdline = Path(f"/proc/{pid}/cmdline")
    try:
        return b"blurcast" in cmdline.read_bytes() and b"serve" in cmdline.read_bytes()
    except FileNotFoundError:
        return not Path("/proc/self").exists() and _pid_alive(pid)
    except OSError:
        return False


def _read_pid(paths: EnginePaths) -> int | None:
    try:
        return int(paths.pid.read_text().strip())
    except (OSError, ValueError):
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child still "exists"; treat it as gone
        return "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()
    except OSError:
        return True


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


