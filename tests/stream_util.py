"""Loopback streaming helpers for tests and bench/bench_stream.py: FFmpeg as the far end, and an A/V sync
measure that needs no trust in container timestamps alone.

Sync is measured on content: the sender's picture flashes white for 0.1 s at every whole second while its
sound beeps (1 kHz) over exactly the same 0.1 s. In the recording, each flash's first frame time (mean
luma jump, `signalstats`) is paired with the nearest beep onset (RMS over 1 ms windows, `astats`); their
difference is the A/V offset. Both times come from the same file's decoded timestamps.
"""

from __future__ import annotations

import select
import shutil
import socket
import ssl
import subprocess
import threading
from pathlib import Path

FFMPEG = shutil.which("ffmpeg")
FFPROBE = shutil.which("ffprobe")


def free_port() -> int:
    """A free UDP+TCP port on loopback (SRT is UDP, RTMP is TCP)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, socket.socket() as t:
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
            try:
                t.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A key and a self-signed certificate for 127.0.0.1 (in subjectAltName too: FFmpeg checks the host there), as a
    streamer's own relay has."""
    key, cert = folder / "key.pem", folder / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    return key, cert


class TlsFront:
    """TLS in front of a plain TCP server on loopback, as an ingest's TLS terminator (FFmpeg cannot listen for
    rtmps). The server behind is called only once a client sends something over TLS: one that drops the connection
    after the handshake (its certificate check failed) never reaches it."""

    def __init__(self, cert: Path, key: Path, backend_port: int) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self.backend_port = backend_port
        self.handshakes = self.relayed = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, name="tls-front", daemon=True).start()

    def close(self) -> None:
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        try:
            secure = self.context.wrap_socket(client, server_side=True)
            self.handshakes += 1
            first = secure.recv(65536)
        except (OSError, ssl.SSLError):
            client.close()
            return
        if not first:
            secure.close()
            return
        self.relayed += 1
        with secure, socket.create_connection(("127.0.0.1", self.backend_port)) as backend:
            backend.sendall(first)
            try:
                while _pass_on(secure, backend):
                    pass
            except (OSError, ssl.SSLError):  # either end hung up
                return


def _pass_on(secure: ssl.SSLSocket, backend: socket.socket) -> bool:
    """Copy what either end sent to the other; False once one of them closed."""
    ready, _, _ = select.select([secure, backend], [], [], 1.0)
    if secure in ready or secure.pending():
        data = secure.recv(65536)
        if not data:
            return False
        backend.sendall(data)
    if backend in ready:
        data = backend.recv(65536)
        if not data:
            return False
        secure.sendall(data)
    return True


def sync_inputs(width: int, height: int, fps: int, seconds: float) -> list[str]:
    """FFmpeg input args: a test picture that flashes white, and a beep, for 0.1 s at every whole second."""
    video = (f"testsrc2=s={width}x{height}:r={fps},"
             "drawbox=c=white:t=fill:enable='lt(mod(t,1),0.1)'")
    audio = "aevalsrc='if(lt(mod(t,1),0.1),0.5*sin(2*PI*1000*t),0)':s=48000:c=stereo"
    length = ["-t", str(seconds)]
    return ["-re", "-f", "lavfi", *length, "-i", video, "-re", "-f", "lavfi", *length, "-i", audio]


def send(inputs: list[str], url: str, fmt: str = "mpegts", extra: list[str] | None = None) -> subprocess.Popen:
    """A sender like a phone: H.264 (1 s GOP, as IRL apps use) + AAC to `url`."""
    assert FFMPEG
    cmd = [FFMPEG, "-hide_banner", "-nostdin", "-loglevel", "error", *inputs, "-c:v", "libx264",
           "-preset", "ultrafast", "-tune", "zerolatency", "-g", "30", "-pix_fmt", "yuv420p", "-c:a", "aac",
           *(extra or []), "-f", fmt, url]
    return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)


def record(url: str, path: Path, listen_args: list[str] | None = None) -> subprocess.Popen:
    """The far end that receives the anonymized stream and keeps it as it came (no re-encode)."""
    assert FFMPEG
    cmd = [FFMPEG, "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *(listen_args or []), "-i", url,
           "-map", "0", "-c", "copy", "-f", "mpegts", str(path)]
    return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _probe_lavfi(graph: str, tag: str) -> list[tuple[float, float]]:
    assert FFPROBE
    out = subprocess.run([FFPROBE, "-v", "error", "-f", "lavfi", "-i", graph, "-show_entries",
                          f"frame=pts_time:frame_tags={tag}", "-of", "csv=p=0"],
                         capture_output=True, text=True, check=True).stdout
    rows = []
    for line in out.splitlines():
        parts = line.split(",")
        if len(parts) == 2 and parts[0] not in ("", "N/A"):
            value = float("-inf") if parts[1] in ("-inf", "") else float(parts[1])
            rows.append((float(parts[0]), value))
    return rows


def flash_times(path: Path, threshold: float = 200.0) -> list[float]:
    """Times of frames where the picture turns white (mean luma crosses `threshold` upwards)."""
    rows = _probe_lavfi(f"movie={path},signalstats", "lavfi.signalstats.YAVG")
    return [t for (t, y), (_, prev) in zip(rows[1:], rows[:-1], strict=True) if y >= threshold > prev] + \
        ([rows[0][0]] if rows and rows[0][1] >= threshold else [])


def beep_times(path: Path, threshold_db: float = -30.0) -> list[float]:
    """Onsets (1 ms resolution) of the beeps: RMS over 48 samples crosses `threshold_db` after silence."""
    graph = (f"amovie={path},asetnsamples=n=48,"
             "astats=metadata=1:reset=1:measure_overall=RMS_level:measure_perchannel=none")
    rows = _probe_lavfi(graph, "lavfi.astats.Overall.RMS_level")
    onsets: list[float] = []
    last_loud, was_loud = float("-inf"), False
    for t, level in rows:
        loud = level >= threshold_db
        if loud and not was_loud and t - last_loud >= 0.3:
            onsets.append(t)
        last_loud = t if loud else last_loud
        was_loud = loud
    return onsets


def av_offsets_ms(path: Path) -> list[float]:
    """Audio minus video, per flash that has a beep within 0.5 s (positive: the sound is late)."""
    flashes, beeps = sorted(flash_times(path)), sorted(beep_times(path))
    offsets = []
    for f in flashes:
        nearest = min(beeps, key=lambda b: abs(b - f), default=None)
        if nearest is not None and abs(nearest - f) < 0.5:
            offsets.append(round((nearest - f) * 1000, 1))
    return offsets


def stream_kinds(path: Path) -> list[str]:
    assert FFPROBE
    out = subprocess.run([FFPROBE, "-v", "error", "-show_entries", "stream=codec_type", "-of", "csv=p=0", str(path)],
                         capture_output=True, text=True).stdout
    return sorted({line.strip() for line in out.splitlines() if line.strip()})
