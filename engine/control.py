"""The engine's side of the control API: a local Unix socket speaking the JSON lines of engine/protocol.py.

A bad request gets an error reply, never a crash; the engine never depends on a client being there (an SSH
session that drops changes nothing). Clients use engine/client.py; the engine never imports the UI.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import socketserver
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.protocol import MAX_LINE, ControlError
from engine.protocol import encode as _encode

log = logging.getLogger(__name__)

# --- server -------------------------------------------------------------------------------------------------
Handler = Callable[[dict[str, Any]], Any]


class _UnixServer(socketserver.ThreadingUnixStreamServer):
    # The default backlog of 5 refused most of a burst of connects (a UI reconnecting, scripts polling
    # status) with EAGAIN; let the kernel queue as many as it allows.
    request_queue_size = socket.SOMAXCONN


DRAIN_PIECES = 64  # MAX_LINE pieces of an over-long line read and dropped, at most, before its connection is closed


def _drain_line(rfile) -> None:
    """Read the rest of an over-long line before closing: a socket closed with unread data resets the connection,
    and the client could lose the answer already sent to it (a flaky CI run: ConnectionResetError on reading it)."""
    for _ in range(DRAIN_PIECES):
        piece = rfile.readline(MAX_LINE)
        if not piece or piece.endswith(b"\n"):
            return


class ControlServer:
    """Serves `handlers[cmd](request) -> result` on a Unix socket, each client on its own thread."""

    def __init__(self, socket_path: Path, handlers: dict[str, Handler], telemetry: Callable[[], dict]) -> None:
        self.socket_path = Path(socket_path)
        self.handlers = handlers
        self.telemetry = telemetry
        self.stopping = threading.Event()
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        if self.socket_path.exists():
            if _alive(self.socket_path):
                raise ControlError(f"an engine is already running on {self.socket_path}")
            self.socket_path.unlink()  # stale socket of an engine that died
        server = self

        class _Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                server._serve_client(self.rfile, self.wfile)

        try:
            self._server = _UnixServer(str(self.socket_path), _Handler)
        except OSError as exc:  # "AF_UNIX path too long": a socket's path holds 107 bytes at most
            raise ControlError(f"cannot open the control socket {self.socket_path} ({exc.strerror or exc}); set "
                               "BLURCAST_HOME to a shorter folder") from exc
        self._server.daemon_threads = True
        os.chmod(self.socket_path, 0o600)  # only the streamer's own user may steer the engine
        self._thread = threading.Thread(target=self._server.serve_forever, name="control", daemon=True)

    def start(self) -> None:
        self._thread.start()
        log.info("control API listening on %s", self.socket_path)

    def close(self) -> None:
        self.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self.socket_path.unlink(missing_ok=True)

    def _serve_client(self, rfile, wfile) -> None:
        try:
            while not self.stopping.is_set():
                line = rfile.readline(MAX_LINE)
                if not line:
                    return
                if not line.endswith(b"\n"):  # over MAX_LINE (or cut off): one answer, not one per piece
                    wfile.write(_encode({"ok": False, "error": f"a request is one line of at most {MAX_LINE} bytes"}))
                    wfile.flush()
                    _drain_line(rfile)
                    return
                request, reply = self._parse(line)
                if request is not None and request.get("cmd") == "subscribe":
                    self._stream(wfile, request)
                    return
                wfile.write(_encode(reply if reply is not None else self._dispatch(request)))
                wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            return  # the client went away; the engine carries on

    def _parse(self, line: bytes) -> tuple[dict | None, dict | None]:
        try:
            request = json.loads(line)
        except (ValueError, RecursionError) as exc:  # bad JSON or text, absurd numbers, absurd nesting
            return None, {"ok": False, "error": f"not JSON: {exc}"}
        if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
            return None, {"ok": False, "error": 'a request is a JSON object with a "cmd" string'}
        return request, None

    def _dispatch(self, request: dict) -> dict:
        cmd = request["cmd"]
        handler = self.handlers.get(cmd)
        if handler is None:
            return {"ok": False, "error": f"unknown command {cmd!r}; known: {', '.join(sorted(self.handlers))}"}
        try:
            return {"ok": True, "result": handler(request)}
        except KeyError as exc:
            if exc.args and isinstance(exc.args[0], str) and exc.args[0] not in request:  # a missing argument
                return {"ok": False, "error": f"{cmd} needs {exc.args[0]!r}"}
            log.exception("control command %s failed", cmd)
            return {"ok": False, "error": f"internal error: missing {exc}"}
        except (ValueError, TypeError, RuntimeError, OSError) as exc:
            return {"ok": False, "error": str(exc) or type(exc).__name__}
        except Exception as exc:  # a handler bug must not take the engine down
            log.exception("control command %s failed", cmd)
            return {"ok": False, "error": f"internal error: {exc}"}

    def _stream(self, wfile, request: dict) -> None:
        try:
            hz = min(30.0, max(0.5, float(request.get("hz", 10))))
        except (TypeError, ValueError):
            hz = 10.0
        period = 1.0 / hz
        while not self.stopping.is_set():
            started = time.monotonic()
            wfile.write(_encode({"event": "telemetry", "time": time.time(), **self.telemetry()}))
            wfile.flush()
            self.stopping.wait(max(0.0, period - (time.monotonic() - started)))


def _alive(path: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(0.5)
            s.connect(str(path))
        return True
    except (ConnectionRefusedError, FileNotFoundError):
        return False  # nobody listens: a stale socket file
    except OSError:
        return True  # a listener that is busy or hung (full backlog, timeout): never take its place
