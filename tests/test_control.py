"""The control API against a real engine process playing the dev clip."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from engine.client import (
    ControlClient,
    ControlError,
    EnginePaths,
    decode_preview,
    engine_running,
    start_background,
    stop_background,
    unanswering_engine,
)
from engine.protocol import MAX_LINE
from tests.helpers import wait_for


@pytest.fixture(scope="module")
def engine(clip_engine):
    return clip_engine


def _preview_detail(client: ControlClient) -> float:
    width, height, pixels = decode_preview(client.request("preview"))
    frame = np.frombuffer(pixels, np.uint8).reshape(height, width, 3).astype(np.float32)
    return float(np.abs(frame - cv2.GaussianBlur(frame, (0, 0), 1.0)).mean())


def test_settings_change_the_output_live(engine):
    with ControlClient(engine.socket) as client:
        wait_for(lambda: client.request("status")["frames"] > 5)
        # The detail of a preview not blurred whole (the stream's first frame is; a deadline missed on a loaded machine
        # blurs one too): the most of a few, 0.25 s apart (the preview refreshes every 0.2 s)
        samples = []
        for _ in range(4):
            samples.append(_preview_detail(client))
            time.sleep(0.25)
        normal = max(samples)
        client.request("panic", on=True)
        assert wait_for(lambda: client.request("status")["whole_frame"] == "panic")
        # The preview refreshes every 0.2 s: wait for one made after the switch.
        assert wait_for(lambda: _preview_detail(client) < 0.5 * normal), "panic: the preview is fully blurred"
        client.request("panic", on=False)
        assert wait_for(lambda: client.request("status")["whole_frame"] is None)
        assert wait_for(lambda: client.request("status")["faces"]), "faces are reported per frame"
        client.request("set", settings={"strength": 0.9, "mode": "mosaic"})
        assert client.request("settings")["mode"] == "mosaic"
        assert wait_for(lambda: client.request("status")["settings"]["strength"] == 0.9)


def test_bad_commands_get_errors_not_crashes(engine):
    with ControlClient(engine.socket) as client:
        engine_sinks_before = client.request("status")["sinks"]
        for cmd, args in (("bogus", {}), ("set", {"settings": {"strength": 7}}), ("set", {"settings": {"nope": 1}}),
                          ("set", {}), ("source", {"spec": "/no/such/video.mp4"}), ("sink_start", {"kind": "tape"})):
            with pytest.raises(ControlError):
                client.request(cmd, **args)
    # Not JSON, absurd nesting (RecursionError), an absurd number (ValueError): each gets an error reply.
    for line in (b"this is not json", b"[" * 100_000 + b"]" * 100_000, b'{"cmd": "ping", "n": ' + b"9" * 5000 + b"}"):
        with socket.socket(socket.AF_UNIX) as raw:
            raw.connect(str(engine.socket))
            raw.sendall(line + b"\n")
            reply = json.loads(raw.makefile().readline())
            assert reply["ok"] is False, line[:20]
    with ControlClient(engine.socket) as client:  # an option the engine would ignore (say, a mistyped passphrase)
        with pytest.raises(ControlError, match="does not take srt_pasphrase"):
            client.request("sink_start", kind="stream", path="srt://127.0.0.1:9?mode=caller", srt_pasphrase="x" * 12)
        assert client.request("status")["sinks"] == engine_sinks_before
    with ControlClient(engine.socket) as client:
        for unsafe in ({"similarity_threshold": 0.0}, {"confidence": 1}):  # past these, faces would go out unblurred
            with pytest.raises(ControlError, match="must be in"):
                client.request("set", settings=unsafe)
    assert engine_running(engine)


def test_a_line_over_the_limit_gets_one_answer_and_never_shifts_the_replies(tmp_path):
    """A reply cut at MAX_LINE left its rest to be read as the next request's reply (`ping` got `status`'s), and a
    request over it got one error per MiB piece (a review, stop 44): the connection now ends after one answer.
    3x MAX_LINE: CPython's readline(limit) on a socket file may read up to twice the limit before it stops."""
    from engine.control import ControlServer

    server = ControlServer(tmp_path / "c.sock", {"big": lambda r: "x" * (3 * MAX_LINE), "ping": lambda r: "pong"},
                           lambda: {})
    server.start()
    try:
        with ControlClient(server.socket_path) as client:
            with pytest.raises(ControlError, match="longer than"):
                client.request("big")
            assert client.request("ping") == "pong"  # on a new connection, its own reply
        with socket.socket(socket.AF_UNIX) as raw:
            raw.connect(str(server.socket_path))
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # it stops reading after MAX_LINE
                raw.sendall(b'{"cmd": "ping", "pad": "' + b"x" * (3 * MAX_LINE) + b'"}\n')
            replies = raw.makefile("rb").read().splitlines()
        assert len(replies) == 1 and "one line of at most" in json.loads(replies[0])["error"]
    finally:
        server.close()


def test_a_portrait_preview_fits_a_reply(tmp_path):
    """A phone's portrait frame asked 640 wide (the UI's picture preview) was 2.9 MB of reply: refused, never shown."""
    from engine.service import PREVIEW_MAX_PIXELS, EngineService

    class _Engine:
        def wanted_preview(self) -> np.ndarray:
            return np.zeros((1280, 720, 3), np.uint8)

    reply = EngineService._preview(type("S", (), {"engine": _Engine()})(), {"max_width": 640})
    width, height, _ = decode_preview(reply)
    assert width * height <= PREVIEW_MAX_PIXELS and abs(width / height - 720 / 1280) < 0.01
    assert len(json.dumps({"ok": True, "result": reply})) < MAX_LINE


def test_dropped_client_leaves_the_engine_running(engine):
    with ControlClient(engine.socket) as client:
        stream = client.subscribe(hz=20)
        first = next(stream)
        assert first["event"] == "telemetry"
        stream.close()  # the controller vanishes mid-stream
    code = "from engine.client import ControlClient; import sys; c = ControlClient(sys.argv[1]); " \
           "s = c.subscribe(20); next(s); import os; os._exit(0)"
    subprocess.run([sys.executable, "-c", code, str(engine.socket)], timeout=30, check=True)
    with ControlClient(engine.socket) as client:
        before = client.request("status")["frames"]
        assert wait_for(lambda: client.request("status")["frames"] > before + 10)


def test_virtual_camera_missing_gives_a_clear_error(engine):
    import glob

    if glob.glob("/dev/video*"):
        pytest.skip("a video device exists here; this test is for machines without v4l2loopback")
    with ControlClient(engine.socket) as client, pytest.raises(ControlError, match="v4l2loopback"):
        client.request("sink_start", kind="vcam")


def test_recording_and_settings_persist_across_restart(dev_clip, tmp_path):
    paths = EnginePaths(tmp_path / "state")
    start_background(["--source", str(dev_clip), "--loop"], paths)
    try:
        with ControlClient(paths.socket) as client:
            client.request("set", settings={"margin": 0.4})
            client.request("sink_start", kind="file", path=str(tmp_path / "rec.mp4"))
            start = client.request("status")["frames"]
            wait_for(lambda: client.request("status")["frames"] > start + 15)
            client.request("sink_stop", name="file")
    finally:
        stop_background(paths)
    cap = cv2.VideoCapture(str(tmp_path / "rec.mp4"))
    assert cap.read()[0], "the recording is a readable video"
    first = (tmp_path / "rec.mp4").read_bytes()
    start_background(["--source", str(dev_clip), "--loop"], paths)
    try:
        with ControlClient(paths.socket) as client:
            assert client.request("settings")["margin"] == 0.4
            # The same name again (the UI remembers it): the earlier recording is kept, this one goes beside it
            reply = client.request("sink_start", kind="file", path=str(tmp_path / "rec.mp4"))
            assert reply["path"] == str(tmp_path / "rec-1.mp4")
            written = lambda: [o["path"] for o in client.request("status")["outputs"] if o["name"] == "file"]  # noqa: E731
            assert wait_for(lambda: written() == [str(tmp_path / "rec-1.mp4")])
            client.request("sink_stop", name="file")
    finally:
        stop_background(paths)
    assert not engine_running(paths)
    assert (tmp_path / "rec.mp4").read_bytes() == first


def test_stop_ends_an_engine_that_no_longer_answers(dev_clip, tmp_path):
    """A suspended (SIGSTOP) or hung engine: `engine stop` said "engine stopped" while it still ran, and the next
    start was refused as "already running" (a review, stop 44). Asked, then SIGTERMed, then killed."""
    from tests.stream_util import free_port

    paths = EnginePaths(tmp_path / "state")
    pid = start_background(["--source", str(dev_clip), "--loop", "--out", f"srt://:{free_port()}?mode=listener"],
                           paths)
    children = wait_for(lambda: _children(pid), timeout=10, what="the stream output's FFmpeg")
    os.kill(pid, signal.SIGSTOP)
    try:
        assert unanswering_engine(paths) == pid  # `engine status`: "running but not answering", not "not running"
        assert stop_background(paths, wait_s=1.0) is True
        assert not engine_running(paths)
        wait_for(lambda: not _alive(pid), timeout=5, what="the engine gone")
        wait_for(lambda: not any(_alive(c) for c in children), timeout=5, what="its FFmpeg children gone (port held)")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_a_state_folder_too_deep_for_a_socket_says_so(tmp_path):
    """A socket's path holds 107 bytes: a deeper BLURCAST_HOME gave a traceback (a review, stop 44)."""
    from engine.control import ControlServer

    deep = tmp_path / ("x" * 60) / ("y" * 60)
    with pytest.raises(ControlError, match="set BLURCAST_HOME to a shorter folder"):
        ControlServer(deep / "control.sock", {}, lambda: {})


def _children(pid: int) -> set[int]:
    """Child pids from every thread of `pid`; a thread may end between listing and reading (CI, stop 44)."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            found.update(int(child) for child in (task / "children").read_text().split())
    return found


def _alive(pid: int) -> bool:
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()
    except FileNotFoundError:
        return False


def test_a_restart_takes_only_the_launch_its_own_engine_saved(tmp_path):
    """`r` in the UI restarts as the lost engine ran: never as an older or another engine's saved file says."""
    from engine.client import launch_of, save_launch, serve_args

    paths = EnginePaths(tmp_path)
    args = serve_args("srt://:9000?mode=listener&passphrase=0123456789", record="rec.mp4", outputs=["rtmp://x/y"])
    save_launch(paths, args)
    assert launch_of(paths, os.getpid()) == args
    assert launch_of(paths, os.getpid() + 1) is None and launch_of(paths, None) is None
    assert paths.launch.stat().st_mode & 0o077 == 0, "owner-only: a stream URL may carry its passphrase"
    for damaged in ("{not json", "[1, 2]", json.dumps({"pid": os.getpid(), "args": "--source 0"})):
        paths.launch.write_text(damaged)
        assert launch_of(paths, os.getpid()) is None


def test_launch_arguments_hold_in_another_folder_and_a_log_line_holds_no_secret(tmp_path, monkeypatch, dev_clip):
    from engine.client import redact, serve_args

    monkeypatch.chdir(dev_clip.parent)
    args = serve_args(dev_clip.name, bitrate_kbps=6000.0, keyframe_s=2)  # numbers as a JSON client sends them
    assert args[args.index("--source") + 1] == str(dev_clip)  # a restart may run elsewhere
    assert args[args.index("--bitrate") + 1] == "6000"  # `engine serve` refuses "6000.0"
    line = " ".join(redact(a) for a in ["--out", "srt://h:9000?mode=caller&passphrase=supersecret123",
                                         "--out", "rtmp://live.example/app/KEY1"])
    assert "supersecret123" not in line and "KEY1" not in line


def test_a_source_switch_is_saved_for_a_restart_as_asked_not_masked(tmp_path, monkeypatch):
    """The engine shows an SRT source with its passphrase masked; what a restart reads must still connect."""
    from types import SimpleNamespace

    import engine.service as service
    from engine.client import launch_of

    masked = SimpleNamespace(spec="srt://h:9000?mode=caller&passphrase=***",
                             info=SimpleNamespace(width=640, height=360, fps=30.0))
    monkeypatch.setattr(service, "open_source", lambda spec, loop=False, tls=None: masked)
    engine = SimpleNamespace(replace_source=lambda new: None, sinks=[])
    paths = EnginePaths(tmp_path)
    svc = service.EngineService(engine, paths, launch=service.ServeOptions(source="0"))
    svc._source({"cmd": "source", "spec": "srt://h:9000?mode=caller&passphrase=0123456789"})
    args = launch_of(paths, os.getpid())
    assert args[args.index("--source") + 1] == "srt://h:9000?mode=caller&passphrase=0123456789"


def test_the_tls_options_reach_a_switched_source_and_a_restart(tmp_path, monkeypatch):
    """An engine started with --tls-ca (its relay's certificate) or --tls-no-verify: a source the UI switches to is
    opened with them, and a restart gets them back, read by `engine serve` as given (without them a self-signed
    relay would be refused after the restart)."""
    from types import SimpleNamespace

    import engine.service as service
    from blurcast.cli import _tls_from, build_parser
    from engine.client import launch_of
    from engine.stream_options import Tls

    (tmp_path / "relay.pem").write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    monkeypatch.chdir(tmp_path)
    opened = []
    switched = SimpleNamespace(spec="https://relay/cam.ts", info=SimpleNamespace(width=640, height=360, fps=30.0))
    monkeypatch.setattr(service, "open_source", lambda spec, loop=False, tls=None: opened.append(tls) or switched)
    for tls in (Tls(ca_file="relay.pem"), Tls(verify=False), Tls()):
        paths = EnginePaths(tmp_path / str(len(opened)))
        svc = service.EngineService(SimpleNamespace(replace_source=lambda new: None, sinks=[]), paths,
                                    launch=service.ServeOptions(source="0", tls=tls))
        svc._source({"cmd": "source", "spec": "https://relay/cam.ts"})
        assert opened[-1] == tls
        args = launch_of(paths, os.getpid())
        assert _tls_from(build_parser().parse_args(["engine", "serve", *args])) == tls, args
    assert Tls(ca_file="relay.pem").ca_file == str(tmp_path / "relay.pem"), "a restart may run in another folder"
