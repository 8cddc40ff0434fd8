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
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from engine.protocol import MAX_LINE, ControlError, NoAnswer, decode_preview, soft_warning
from engine.protocol import encode as _encode

try:
    import fcntl
except ImportError:  # Windows: no flock; two engines there are still caught by the socket check
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

__all__ = ["EXIT_ALREADY_RUNNING", "ControlClient", "ControlError", "EngineAlreadyRunning", "EnginePaths", "NoAnswer",
           "decode_preview", "default_paths", "engine_running", "facebank_timeout", "hold_engine_lock", "soft_warning",
           "start_background", "stop_background", "unanswering_engine"]


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

    @property
    def launch(self) -> Path:
        return self.root / "engine.launch.json"


def default_paths() -> EnginePaths:
    return EnginePaths(state_dir())


# A facebank change waits for the engine's enrolment lock: its own photos (a 40 MP photo takes seconds on a busy 2-core
# machine), or a remove or rename queued behind an enrolment. The UI's fixed 5 s had reported such a change as failed
# while the engine went on to save it (a review, stop 54: five 8000x4500 photos, "timed out", saved 10 s later).
FACEBANK_TIMEOUT_S = 120.0
FACEBANK_TIMEOUT_PER_PHOTO_S = 30.0


def facebank_timeout(photos: int = 0) -> float:
    """Seconds to wait for the engine's answer to a facebank change that enrols `photos` photos."""
    return FACEBANK_TIMEOUT_S + FACEBANK_TIMEOUT_PER_PHOTO_S * photos


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
                raise NoAnswer(f"lost the engine while sending {cmd!r}: {exc}") from exc
            if not line:
                self.close()
                raise NoAnswer(f"the engine closed the connection during {cmd!r}")
            if not line.endswith(b"\n"):  # cut at MAX_LINE: the rest would be read as the next request's reply
                self.close()
                if len(line) < MAX_LINE:  # the end of the data mid-line: it went away while answering
                    raise NoAnswer(f"the engine closed the connection during {cmd!r}")
                raise ControlError(f"the reply to {cmd!r} is longer than {MAX_LINE} bytes")
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


def unanswering_engine(paths: EnginePaths | None = None) -> int | None:
    """The pid of an engine process that runs but does not answer (hung, or suspended); None when none runs."""
    pid = _read_pid(paths or default_paths())
    return pid if pid is not None and _pid_alive(pid) and _is_engine(pid) else None


EXIT_ALREADY_RUNNING = 3  # `blurcast engine start|serve` when another engine already runs on this state folder


class EngineAlreadyRunning(ControlError):
    """Another engine already runs on this state folder."""

    def __init__(self, paths: EnginePaths, pid: int | None) -> None:
        self.pid = pid
        which = f" (pid {pid})" if pid else ""
        super().__init__(f"an engine is already running{which} on {paths.socket}; `blurcast engine stop` first")


def private_dir(root: Path) -> None:
    """Create the state folder owner-only (0700): its log and socket tell what the camera sees."""
    if not root.exists():
        root.mkdir(parents=True, mode=0o700, exist_ok=True)
        os.chmod(root, 0o700)  # mkdir's mode passes through the umask


def _open_private(path: Path, flags: int) -> int:
    fd = os.open(path, flags | os.O_CREAT, 0o600)
    os.fchmod(fd, 0o600)  # also tightens a file an older version left 0644
    return fd


def serve_args(source: str, *, loop: bool = False, vcam: bool = False, vcam_device: str | None = None,
               record: str | None = None, use_facebank: bool = True, outputs: Sequence[str] = (),
               bitrate_kbps: int = 4000, keyframe_s: float = 2.0, preset: str = "auto",
               tls_args: Sequence[str] = ()) -> list[str]:
    """`blurcast engine serve` arguments for this source and these outputs; `tls_args`: `Tls.cli_args()`."""
    if Path(source).is_file():  # a restart may run in another folder than this start
        source = str(Path(source).resolve())
    out = ["--source", source, *(["--loop"] if loop else []), *(["--vcam"] if vcam else [])]
    out += ["--vcam-device", vcam_device] if vcam_device else []
    out += ["--record", str(Path(record).resolve())] if record else []
    out += [] if use_facebank else ["--no-facebank"]
    for url in outputs:
        out += ["--out", url]
    return [*out, "--bitrate", str(int(bitrate_kbps)), "--keyframe", str(float(keyframe_s)), "--preset", preset,
            *tls_args]


def save_launch(paths: EnginePaths, args: list[str]) -> None:
    """What this engine runs now (source and outputs, as `engine serve` arguments), for a restart after it dies:
    the UI's `r` then brings back the same source and outputs, not its own start's. Owner-only: a stream URL may
    carry its passphrase."""
    staged = paths.launch.with_name(f".{paths.launch.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = _open_private(staged, os.O_WRONLY | os.O_TRUNC)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump({"pid": os.getpid(), "args": args}, f)
    os.replace(staged, paths.launch)


def redact(url: str) -> str:
    """The URL without secrets (SRT passphrase, RTMP stream key), for names, logs and telemetry."""
    url = re.sub(r"(passphrase|streamid)=[^&]*", r"\1=***", url, flags=re.IGNORECASE)
    parts = urlsplit(url)
    if parts.scheme.lower().startswith("rtmp") and parts.path.count("/") >= 2:
        url = url.replace(parts.path, parts.path.rsplit("/", 1)[0] + "/***", 1)
    return url


def launch_of(paths: EnginePaths, pid: int | None) -> list[str] | None:
    """The `engine serve` arguments engine `pid` last ran with; None when it saved none (an older or another
    engine's file is never taken for it)."""
    try:
        saved = json.loads(paths.launch.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(saved, dict) or pid is None or saved.get("pid") != pid:
        return None
    args = saved.get("args")
    if not isinstance(args, list):
        return None
    if not all(isinstance(a, str) for a in args):
        return None
    return args


def hold_engine_lock(paths: EnginePaths) -> int:
    """Take the state folder's engine lock (an flock on engine.pid, 0600, which then holds this pid) for the
    life of this process; the kernel drops it however the process dies. EngineAlreadyRunning if taken."""
    private_dir(paths.root)
    for _ in range(5):
        fd = _open_private(paths.pid, os.O_RDWR)
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise EngineAlreadyRunning(paths, _read_pid(paths)) from None
        try:
            same = os.stat(paths.pid).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:  # not a file a stopping engine unlinked after we opened it
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
            return fd
        os.close(fd)
    raise ControlError(f"could not take the engine lock {paths.pid}; another engine is starting or stopping")


def _ping(paths: EnginePaths) -> dict | None:
    try:
        with ControlClient(paths.socket, timeout=2.0) as client:
            answer = client.request("ping")
        return answer if isinstance(answer, dict) else {}
    except ControlError:
        return None


def start_background(args: list[str], paths: EnginePaths | None = None, wait_s: float = 90.0) -> int:
    """Spawn `blurcast engine serve ARGS` detached from this terminal; return its pid once it answers.

    EngineAlreadyRunning when another engine runs, or wins a race of two starts: only the engine that
    answers with our child's pid counts as started."""
    paths = paths or default_paths()
    if (running := _ping(paths)) is not None:
        raise EngineAlreadyRunning(paths, running.get("pid"))
    private_dir(paths.root)
    log_fd = _open_private(paths.log, os.O_WRONLY | os.O_APPEND)
    since = os.fstat(log_fd).st_size  # an error shows this start's lines, not an earlier engine's
    cmd = [sys.executable, "-m", "blurcast", "engine", "serve", *args]
    env = {**os.environ, "BLURCAST_HOME": str(paths.root)}
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log_fd, stderr=log_fd,
                                start_new_session=True, env=env)  # own session: survives the SSH hangup
    finally:
        os.close(log_fd)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        answer = _ping(paths)
        if answer is not None and answer.get("pid") == proc.pid:
            # Reaped when it ends (a crash, `engine stop`), so no zombie lingers under a long-lived UI
            threading.Thread(target=proc.wait, name="engine-reaper", daemon=True).start()
            return proc.pid
        if answer is not None:  # another start won the race; ours must not linger
            _end(proc)
            raise EngineAlreadyRunning(paths, answer.get("pid"))
        if proc.poll() is not None:
            if proc.returncode == EXIT_ALREADY_RUNNING:
                raise EngineAlreadyRunning(paths, _read_pid(paths))
            raise ControlError(f"the engine exited at start (code {proc.returncode}); see {paths.log}:\n"
                               + _tail(paths.log, since=since))
        time.sleep(0.2)
    _end(proc)
    raise ControlError(f"the engine did not answer within {wait_s:.0f} s; see {paths.log}")


def _end(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def stop_background(paths: EnginePaths | None = None, wait_s: float = 30.0) -> bool:
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
    if pid and _pid_alive(pid) and _is_engine(pid):  # hung or suspended (SIGSTOP): "stopped" was said of it
        log.warning("the engine (pid %d) did not stop within %.0f s of being asked: killed it (a recording may "
                    "lack its last seconds)", pid, wait_s)
        with suppress(ProcessLookupError, PermissionError):
            # Its process group: its stream receivers and encoders with it (start_background gives it a session of
            # its own), or they would hold their ports, orphaned (a review, stop 44)
            os.killpg(pid, signal.SIGKILL) if os.getpgid(pid) == pid else os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and _pid_alive(pid):
            time.sleep(0.05)
    if engine_running(paths) or (pid and _pid_alive(pid) and _is_engine(pid)):
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


def _tail(path: Path, lines: int = 15, since: int = 0) -> str:
    """The last `lines` lines of `path` written after byte `since`."""
    try:
        with open(path, "rb") as log_file:
            log_file.seek(since)
            text = log_file.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
