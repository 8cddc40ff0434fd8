"""TLS far ends: an https:// pull and an rtmps:// push check the server's certificate, as OBS does for RTMPS.

FFmpeg checks none unless asked, so a push to a platform over rtmps handed its stream key to whoever sat in the
middle. Loopback only: FFmpeg's own HTTPS server with a self-signed certificate (a streamer's own relay), and a
TLS front (tests/stream_util.py TlsFront) before FFmpeg's RTMP listener for rtmps, which FFmpeg cannot serve.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from engine.config import Settings
from engine.stages.anonymize import Anonymizer
from engine.stages.sink import SinkError
from engine.stages.sinks import StreamSink
from engine.stages.source import SourceError
from engine.stages.sources import open_source
from engine.stream_options import Tls
from tests.helpers import AS_IN_A_TERMINAL, wait_for
from tests.stream_util import TlsFront, free_port, record, self_signed, send, stream_kinds, sync_inputs

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None or shutil.which("openssl") is None,
                                reason="needs ffmpeg (Debian's, with GnuTLS) and openssl to make certificates")


def _https_camera(port: int, key: Path, cert: Path, seconds: float = 8.0) -> subprocess.Popen:
    """An encoder serving MPEG-TS over HTTPS with a self-signed certificate (FFmpeg's `-listen 1`)."""
    return send(sync_inputs(320, 240, 30, seconds), f"https://127.0.0.1:{port}/cam.ts",
                extra=["-listen", "1", "-cert_file", str(cert), "-key_file", str(key)])


def _stop(proc: subprocess.Popen) -> None:
    proc.kill()
    proc.wait()


def test_an_https_pull_refuses_a_certificate_it_cannot_trust_at_once_and_says_what_to_do(tmp_path: Path) -> None:
    key, cert = self_signed(tmp_path)
    port = free_port()
    camera = _https_camera(port, key, cert)
    started = time.monotonic()
    try:
        with pytest.raises(SourceError, match=r"certificate is not trusted \(.+\).*--tls-ca CERT.pem"):
            open_source(f"https://127.0.0.1:{port}/cam.ts", open_timeout_s=20)
    finally:
        _stop(camera)
    assert time.monotonic() - started < 10, "no retry mends a certificate: it must not wait out the 20 s"


@pytest.mark.parametrize("tls", ["its certificate given", "no check"])
def test_an_https_pull_opens_with_the_relays_certificate_given_or_no_check(tmp_path: Path, tls: str) -> None:
    key, cert = self_signed(tmp_path)
    port = free_port()
    camera = _https_camera(port, key, cert)
    options = Tls(ca_file=str(cert)) if tls == "its certificate given" else Tls(verify=False)
    try:
        source = open_source(f"https://127.0.0.1:{port}/cam.ts", open_timeout_s=20, tls=options)
        try:
            frames = [source.read() for _ in range(10)]
        finally:
            source.close()
    finally:
        _stop(camera)
    assert all(frame is not None and frame.shape == (240, 320, 3) for frame in frames)


def _frames(n: int) -> list:
    anonymizer = Anonymizer(Settings())
    image = np.full((240, 320, 3), 90, np.uint8)
    return [anonymizer.apply(image.copy(), i, []) for i in range(n)]


def test_an_rtmps_output_checks_the_ingests_certificate(tmp_path: Path) -> None:
    """Untrusted: the output ends with the reason (the engine then reports it as stopped) and nothing reached the
    ingest; with the ingest's certificate given, the stream arrives whole through TLS."""
    key, cert = self_signed(tmp_path)
    back = free_port()
    out = tmp_path / "ingest.ts"
    recorder = record(f"rtmp://127.0.0.1:{back}/live/key", out, ["-listen", "1"])
    front = TlsFront(cert, key, back)
    url = f"rtmps://127.0.0.1:{front.port}/live/secret-key"
    frames = _frames(90)
    try:
        time.sleep(0.5)  # the recorder listens
        refused = StreamSink(url, 320, 240, Fraction(30), bitrate_kbps=500)
        with pytest.raises(SinkError, match=r"certificate is not trusted \(.+\).*--tls-ca CERT.pem") as caught:
            deadline = time.monotonic() + 10
            for i in range(10_000):
                refused.write_at(frames[i % len(frames)], i)
                time.sleep(1 / 30)
                assert time.monotonic() < deadline, "the output kept trying a certificate it cannot trust"
        assert "secret-key" not in str(caught.value), "the stream key stays out of messages"
        refused.close()
        assert front.handshakes >= 1 and front.relayed == 0, "nothing may reach an ingest whose certificate failed"
        trusted = StreamSink(url, 320, 240, Fraction(30), bitrate_kbps=500, tls=Tls(ca_file=str(cert)))
        for i, frame in enumerate(frames):
            trusted.write_at(frame, i)
            time.sleep(1 / 30)
        trusted.close()
        recorder.wait(timeout=15)
    finally:
        front.close()
        if recorder.poll() is None:
            _stop(recorder)
    assert front.relayed == 1 and stream_kinds(out) == ["video"]
    counted = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                              "stream=nb_read_frames", "-of", "csv=p=0", str(out)], capture_output=True, text=True)
    assert int(counted.stdout.split()[0].strip(",")) >= 80, counted.stdout


def _blurcast(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "blurcast", *args], capture_output=True, text=True, timeout=120)


def test_the_command_line_refuses_an_untrusted_relay_and_a_certificate_file_that_is_none(tmp_path: Path) -> None:
    """`run` from a self-signed relay: one line saying why and what to do, exit status 2 (as any source that cannot
    open), no output; the same with its certificate given records it. A --tls-ca that is no certificate is a usage
    error before anything starts."""
    key, cert = self_signed(tmp_path)
    port = free_port()
    out = tmp_path / "out.mp4"
    camera = _https_camera(port, key, cert)
    try:
        done = _blurcast("run", f"https://127.0.0.1:{port}/cam.ts", "-o", str(out))
    finally:
        _stop(camera)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr  # as any source that cannot open
    assert "certificate is not trusted" in done.stderr and "--tls-ca CERT.pem" in done.stderr, done.stderr
    assert not out.exists()
    camera = _https_camera(port, key, cert, seconds=30)
    rig = subprocess.Popen([sys.executable, "-c", AS_IN_A_TERMINAL, "run", f"https://127.0.0.1:{port}/cam.ts", "-o",
                            str(out), "--tls-ca", str(cert)], stderr=subprocess.PIPE, text=True)
    try:  # recording while the relay still sends (a fragmented MP4 grows as it goes), then Ctrl-C, as a user stops it
        wait_for(lambda: out.exists() and out.stat().st_size > 100_000, timeout=60, what="the relay recorded")
    finally:
        rig.send_signal(signal.SIGINT)
        _, stderr = rig.communicate(timeout=90)
        _stop(camera)
    assert rig.returncode == 130, stderr  # 130: ended by Ctrl-C, as a shell counts it
    assert stream_kinds(out) == ["audio", "video"], stderr
    for bad, why in ((key, "not a PEM certificate"), (tmp_path / "none.pem", "no readable certificate file")):
        done = _blurcast("run", f"https://127.0.0.1:{port}/cam.ts", "-o", str(tmp_path / "x.mp4"), "--tls-ca",
                         str(bad))
        assert done.returncode == 2 and why in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_the_ui_starts_its_engine_with_the_tls_options_it_was_given(tmp_path: Path, monkeypatch) -> None:
    """`blurcast --source https://relay --tls-ca CERT` (the UI, no command) starts the engine that reads the relay
    (before stop 48 only `run` and `engine start` took them, so a UI-started engine refused a streamer's own relay);
    a --tls-ca that is no certificate is a usage error before the terminal is taken over."""
    import tui.app
    from blurcast import cli
    from engine.client import ControlClient, EnginePaths, stop_background

    key, cert = self_signed(tmp_path)
    port = free_port()
    url = f"https://127.0.0.1:{port}/cam.ts"
    asked: dict = {}
    monkeypatch.setattr(tui.app, "run_ui", lambda source, engine_options=(): asked.update(
        source=source, options=list(engine_options)) or 0)
    assert cli.main(["--source", url, "--tls-ca", str(key)]) == 2 and not asked
    assert cli.main(["--source", url, "--tls-ca", str(cert)]) == 0
    assert asked == {"source": url, "options": ["--tls-ca", str(cert)]}
    paths = EnginePaths(tmp_path / "engine")
    app = tui.app.make_app(paths, source=url, requested_source=url, engine_options=asked["options"])
    camera = _https_camera(port, key, cert, seconds=60)
    try:
        app.engine_link.start()  # what the UI does when no engine runs
        with ControlClient(paths.socket, timeout=10) as client:
            assert wait_for(lambda: client.request("status")["frames"] > 10, timeout=60,
                            what="the engine the UI started reading the relay")
            assert client.request("status")["source"]["state"] == "running"
    finally:
        stop_background(paths)
        _stop(camera)
    # The way out of a source that failed (the relay was down): another source, started with the same options
    app = tui.app.make_app(paths, source=url, engine_options=asked["options"], start_engine=False, attach=False)

    async def switch() -> list[str]:
        async with app.run_test():
            app._begin_start = lambda: None  # the arguments only: the start itself was tested above
            app.switch_source(f"https://127.0.0.1:{port}/other.ts")
            return app.engine_link.engine_args
    assert asyncio.run(switch()) == ["--source", f"https://127.0.0.1:{port}/other.ts", "--tls-ca", str(cert)]
    # Before a command they are the UI's, which the command would ignore: a usage error, not a silent refusal
    for before in (["--tls-ca", str(cert)], ["--source", url]):  # `--source` before a command: the same trap
        with pytest.raises(SystemExit) as stopped:
            cli.main([*before, "run", url, "-o", str(tmp_path / "x.mp4")])
        assert stopped.value.code == 2


def test_only_ffmpegs_words_for_a_refused_certificate_count_and_only_where_one_was_checked() -> None:
    """A refusal is never retried, so nothing else may read as one: a stream's title, a URL with "certificates" in
    its path (a review found both taken for refusals, which would have ended a source or output for good)."""
    from engine.stages.sources.rtmp import rtmp_url
    from engine.stream_options import certificate_refused

    assert certificate_refused(["    title           : certificate ceremony, live",
                                "https://h/certificates/cam.ts: Connection refused"]) is None
    assert certificate_refused(["[tls @ 0x55d4c3a0] Peer certificate failed verification",
                                "rtmps://h/live/***: Input/output error"]) == "Peer certificate failed verification"
    assert certificate_refused(["[tls @ 0x5] The certificate's owner does not match hostname 127.0.0.1"]) == \
        "The certificate's owner does not match hostname 127.0.0.1"
    assert Tls().checks("https://relay/cam.ts") and Tls().checks("rtmps://live.example/app/KEY")
    assert not Tls().checks("http://relay/certificate/cam.ts") and not Tls(verify=False).checks("https://relay/x")
    assert Tls(verify=False).ffmpeg_args("rtmps://x/app/KEY") == [] and Tls().ffmpeg_args("srt://:9000") == []
    assert rtmp_url("rtmps://relay.example.com/live/KEY")[0] == "rtmps://relay.example.com:443/live/KEY"  # not 1935
