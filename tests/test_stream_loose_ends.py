"""The IRL rig's loose ends (issue 11): stream output options checked, sound buffers capped, stalled outputs
logged once, a never-called SRT output closed promptly, V4L2 raw formats, private multi-stream folders.

Real FFmpeg on loopback as the far end, as in tests/test_stream.py.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from engine.config import Settings
from engine.stages.anonymize import Anonymizer, SafeFrame
from engine.stages.sink import SinkError
from engine.stages.sinks import StreamSink
from engine.stream_options import check_stream_options
from tests.stream_util import free_port, record, stream_kinds

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None,
                                  reason="needs ffmpeg and ffprobe with srt (Debian's ffmpeg)")


def _test_frames(n: int, w: int = 320, h: int = 240) -> list[SafeFrame]:
    """FFmpeg's test picture (no faces), through the anonymizer as every frame a sink gets."""
    raw = subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", f"testsrc2=s={w}x{h}:r=30", "-frames:v",
                          str(n), "-f", "rawvideo", "-pix_fmt", "bgr24", "pipe:1"], capture_output=True,
                         check=True).stdout
    images = np.frombuffer(raw, np.uint8).reshape(n, h, w, 3)
    anonymizer = Anonymizer(Settings())
    return [anonymizer.apply(images[i].copy(), i, []) for i in range(n)]


def _send_paced(sink: StreamSink, frames: list[SafeFrame], recorder: subprocess.Popen,
                before_each: Callable[[int], object] | None = None) -> None:
    """`frames` to `sink` at 30 fps, then the sink closed and the far end given 10 s to finish its file."""
    for i, frame in enumerate(frames):
        if before_each is not None:
            before_each(i)
        sink.write_at(frame, i)
        time.sleep(1 / 30)
    sink.close()
    try:
        recorder.wait(timeout=10)
    except subprocess.TimeoutExpired:
        recorder.kill()
        recorder.wait()


@needs_ffmpeg
def test_closing_an_srt_listener_output_nobody_called_is_prompt() -> None:
    """Engine shutdown with `--out srt://:PORT?mode=listener` and no OBS ever calling: FFmpeg sits in its
    listen call holding frames it cannot send; the close must not wait out three 5 s timeouts."""
    sink = StreamSink(f"srt://127.0.0.1:{free_port()}?mode=listener", 320, 240, Fraction(30))
    for i, frame in enumerate(_test_frames(20)):
        sink.write_at(frame, i)
    time.sleep(1.0)  # the writer has handed FFmpeg its first frame; FFmpeg now waits for a caller
    started = time.monotonic()
    sink.close()
    took = time.monotonic() - started
    assert took < 4.0, f"closing took {took:.1f} s"
    assert sink._proc.poll() is not None, "the FFmpeg child outlived close()"


@needs_ffmpeg
def test_a_stream_output_from_a_file_takes_its_sound_or_says_it_has_none(dev_clip: Path, tmp_path: Path,
                                                                          caplog) -> None:
    """The dev clip has sound: a stream output from it takes it (sources/file_sound.py; it went without before stop
    38). A file without sound: the output says it is silent rather than let the streamer find out on air."""
    from engine.service import open_sink
    from engine.stages.source import VideoSource

    mute = tmp_path / "mute.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(dev_clip), "-t", "1", "-an", "-c:v", "copy", str(mute)],
                   check=True)
    for clip, sound in ((dev_clip, True), (mute, False)):
        source = VideoSource(str(clip))
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="engine.service"):
            sink = open_sink("stream", source, f"srt://127.0.0.1:{free_port()}?mode=listener")
        try:
            assert sink.has_sound is sound
            assert ("goes out without sound: the source has none" in caplog.text) is not sound
        finally:
            sink.close()
            source.close()


@needs_ffmpeg
def test_closing_a_connected_output_loses_nothing_sent(tmp_path: Path) -> None:
    """The prompt close must not cut a live output short: every frame written reaches the far end."""
    port = free_port()
    out = tmp_path / "out.ts"
    recorder = record(f"srt://127.0.0.1:{port}?mode=listener", out)
    time.sleep(0.5)
    sink = StreamSink(f"srt://127.0.0.1:{port}?mode=caller", 320, 240, Fraction(30), bitrate_kbps=500)
    _send_paced(sink, _test_frames(60), recorder)
    assert sink.dropped == 0 and sink.frames_sent == 60
    assert stream_kinds(out) == ["video"]
    assert sink._proc.returncode == 0, "a connected output's FFmpeg must finish on its own (flushed), not be killed"
    times = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v", "-show_entries", "frame=pts_time",
                            "-of", "csv=p=0", str(out)], capture_output=True, text=True).stdout
    # The far end keeps all but the last few frames, as before this change: an SRT receiver drops the packets
    # in flight when the sender hangs up (measured 55-57 of 60 with and without it).
    assert len([t for t in times.split() if t.strip(",")]) >= 54


def _children() -> set[int]:
    """This process's child processes (an FFmpeg the sink started would be one)."""
    import os

    pids: set[int] = set()
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        try:  # a thread may end between listing and reading
            pids |= {int(p) for p in (task / "children").read_text().split()}
        except OSError:
            continue
    return pids


BAD_OPTIONS = [({"bitrate_kbps": 0}, "bitrate_kbps must be in"),
               ({"bitrate_kbps": 10**9}, "bitrate_kbps must be in"),
               ({"bitrate_kbps": 10**400}, "bitrate_kbps is out of range"),  # beyond float: was "internal error"
               ({"bitrate_kbps": "6000k"}, "bitrate_kbps must be a number"),
               ({"bitrate_kbps": 4000.5}, "whole number"), ({"bitrate_kbps": True}, "must be a number"),
               ({"keyframe_s": 0}, "keyframe_s must be in"), ({"keyframe_s": float("nan")}, "finite"),
               ({"keyframe_s": 3600}, "keyframe_s must be in"),
               ({"preset": "placebo"}, "preset must be one of"),
               ({"preset": "veryfast -f null"}, "preset must be one of")]


@needs_ffmpeg
@pytest.mark.parametrize(("options", "message"), BAD_OPTIONS)
def test_bad_stream_options_are_refused_before_ffmpeg_starts(options: dict, message: str) -> None:
    before = _children()
    with pytest.raises(ValueError, match=message):
        StreamSink(f"srt://127.0.0.1:{free_port()}?mode=listener", 320, 240, Fraction(30), **options)
    assert _children() - before == set(), "an FFmpeg was started for a refused option"


@pytest.mark.parametrize("args", [["--bitrate", "0"], ["--bitrate", "6000.5"], ["--keyframe", "60"],
                                  ["--keyframe", "nan"], ["--preset", "placebo"]])
def test_cli_refuses_bad_stream_options_before_anything_loads(args: list[str], capsys) -> None:
    from blurcast.cli import build_parser

    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["engine", "start", "--source", "srt://:9000", "--out", "srt://:9001", *args])
    assert exit_.value.code == 2
    assert f"argument {args[0]}" in capsys.readouterr().err


def test_good_stream_options_pass_unchanged() -> None:
    from engine.stream_options import published_stream_limits

    assert check_stream_options(6000.0, 1, "ultrafast") == (6000, 1.0, "ultrafast")
    assert published_stream_limits()["bitrate_kbps"]["min"] == 300


def _clip_pcm(clip: Path, seconds: float) -> bytes:
    from engine.stages.sources.audio import CHANNELS, RATE

    return subprocess.run(["ffmpeg", "-v", "error", "-i", str(clip), "-t", str(seconds), "-vn", "-ac", str(CHANNELS),
                           "-ar", str(RATE), "-f", "s16le", "pipe:1"], capture_output=True, check=True).stdout


@needs_ffmpeg
def test_pending_sound_is_capped_and_keeps_its_place(dev_clip: Path) -> None:
    """The dev clip's own sound, in the decoder's 4096-byte chunks, held while the picture's time is unknown."""
    from engine.stages.sources.audio import BYTES_PER_SAMPLE, RATE, PendingAudio

    pcm = _clip_pcm(dev_clip, 5.0)
    chunk = 1024 * BYTES_PER_SAMPLE
    pending = PendingAudio(max_s=1.0)
    dropped = sum(pending.add(pcm[i:i + chunk]) for i in range(0, len(pcm), chunk))
    total = len(pcm) // BYTES_PER_SAMPLE
    start, held = pending.take(first_sample=-1000)
    assert len(held) <= RATE * BYTES_PER_SAMPLE, "more than the cap was held"
    assert dropped + len(held) // BYTES_PER_SAMPLE == total
    assert start == -1000 + dropped, "what is held must keep its place on the clock"
    assert held == pcm[dropped * BYTES_PER_SAMPLE:], "the newest sound is kept, the oldest dropped"
    assert pending.take(0) == (0, b""), "taking empties it"


@needs_ffmpeg
def test_sound_long_before_the_picture_is_capped_and_logged_once(tmp_path: Path, monkeypatch, caplog) -> None:
    """A sender whose sound starts 6 s before its picture (over SRT, real FFmpeg at both ends): the sound the
    rig holds until the picture's time is known stops growing at the cap, logged once however much is dropped."""
    import engine.stages.sources.audio as audio
    from engine.stages.source import SourceError
    from engine.stages.sources import open_source

    monkeypatch.setattr(audio, "MAX_PENDING_S", 1.0)
    lead = tmp_path / "lead.ts"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-t", "10", "-i", "sine=f=440:r=48000", "-itsoffset", "6",
                    "-f", "lavfi", "-t", "4", "-i", "testsrc2=s=160x120:r=30", "-map", "1:v", "-map", "0:a",
                    "-c:v", "libx264", "-preset", "ultrafast", "-g", "15", "-c:a", "aac", "-f", "mpegts", str(lead)],
                   check=True)
    port = free_port()
    sender = subprocess.Popen(["ffmpeg", "-v", "error", "-re", "-i", str(lead), "-c", "copy", "-f", "mpegts",
                               f"srt://127.0.0.1:{port}?mode=listener"], stderr=subprocess.DEVNULL)
    caplog.set_level(logging.WARNING, logger="engine.stages.sources.ffmpeg_pipe")
    try:
        source = open_source(f"srt://127.0.0.1:{port}", open_timeout_s=12)  # the sound overflows at ~6 s
        source.close()
    except SourceError:
        pass  # no picture in time: the rig gives up on this sender, as it should
    finally:
        sender.kill()
        sender.wait()
    capped = [r for r in caplog.records if "ahead of its first picture" in r.getMessage()]
    assert len(capped) == 1, [r.getMessage() for r in caplog.records]


@needs_ffmpeg
def test_a_stalled_output_is_logged_once_then_as_a_count(monkeypatch, caplog) -> None:
    """A stream output that stops taking sound (its far end gone) while the source's sound flows: one warning,
    then a count every STALL_LOG_S, not one per 21 ms chunk."""
    import engine.stages.sources.audio as audio
    from engine.stages.sources import open_source
    from tests.stream_util import send, sync_inputs

    monkeypatch.setattr(audio, "MAX_QUEUED_CHUNKS", 10)  # full after 0.2 s instead of 40 s
    monkeypatch.setattr(audio, "STALL_LOG_S", 1.0)
    port = free_port()
    sender = send(sync_inputs(160, 120, 30, 10), f"srt://127.0.0.1:{port}?mode=listener")
    caplog.set_level(logging.WARNING, logger="engine.stages.sources.audio")
    # 30 s: a call made before the sender listens is retried 10 s later (a loaded CI run once took over 15 s)
    source = open_source(f"srt://127.0.0.1:{port}", open_timeout_s=30)
    try:
        assert source.has_audio
        stalled = source.audio.subscribe()  # never read, as a writer thread blocked on a dead FFmpeg
        deadline = time.monotonic() + 3.5
        while time.monotonic() < deadline:
            source.read()  # the engine keeps taking frames meanwhile
        assert stalled.full()
    finally:
        source.close()
        sender.kill()
        sender.wait()
    messages = [r.getMessage() for r in caplog.records if r.name == "engine.stages.sources.audio"]
    assert messages and "chunks behind" in messages[0]
    counts = [m for m in messages[1:] if "still stalled" in m]
    assert len(messages) == 1 + len(counts) and 1 <= len(counts) <= 4, messages
    assert sum(int(m.split(": ")[1].split()[0]) for m in counts) > 50, "the count covers the chunks dropped"


def test_multi_stream_homes_are_private(dev_clip: Path, tmp_path: Path) -> None:
    """Each stream's folder holds its log, socket and facebank, as the single engine's 0700 state folder does."""
    from blurcast.multi import stream_spec
    from engine.multistream import MultiStreamEngine, StreamSpec
    from engine.stages.source import VideoSource

    spec = stream_spec("a", str(dev_clip), tmp_path / "streams" / "a")  # as `python -m blurcast.multi` does
    spec.source.close()
    multi = MultiStreamEngine([StreamSpec("b", VideoSource(str(dev_clip)), tmp_path / "direct" / "b")],
                              backend="onnxruntime")
    multi.stop()
    for folder in (tmp_path / "streams", tmp_path / "streams" / "a", tmp_path / "direct" / "b"):
        assert folder.stat().st_mode & 0o777 == 0o700, f"{folder}: {oct(folder.stat().st_mode & 0o777)}"


@needs_ffmpeg
@pytest.mark.parametrize("pix_fmt", ["yuyv422", "nv12", "mjpeg"])
def test_raw_capture_formats_open_at_their_size_and_rate(tmp_path: Path, pix_fmt: str) -> None:
    """No capture card here, so the decoder path a V4L2 source uses (the device read directly, no remux) runs
    on a file that FFmpeg describes as it does a card: for raw YUYV/NV12 its *input* line already says
    "rawvideo ... 30 fps" (v4l2.c sets avg_frame_rate), before the size is known."""
    from engine.stages.sources.ffmpeg_pipe import FFmpegSource

    path = tmp_path / f"card-{pix_fmt}.avi"
    codec = ["-c:v", "mjpeg", "-pix_fmt", "yuvj422p"] if pix_fmt == "mjpeg" else ["-c:v", "rawvideo", "-pix_fmt",
                                                                                   pix_fmt]
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=s=320x240:r=25", "-t", "3", *codec,
                    "-f", "avi", str(path)], check=True)
    for _ in range(3):  # the bug was a race between FFmpeg's log lines: try it more than once
        source = FFmpegSource(f"v4l2://{path}", ["-re"], str(path), "cannot open", kind="camera", open_timeout_s=10,
                              remux=False)
        try:
            frames = [source.read() for _ in range(5)]
            assert all(f is not None and f.shape == (240, 320, 3) for f in frames)
            assert (source.info.width, source.info.height, round(source.info.fps)) == (320, 240, 25)
        finally:
            source.close()


@pytest.mark.parametrize(("query", "expected"), [
    ("format=yuyv&size=1920x1080&fps=30", ["-input_format", "yuyv422", "-video_size", "1920x1080", "-framerate", "30"]),
    ("format=mjpeg&size=1280x720&fps=60", ["-input_format", "mjpeg", "-video_size", "1280x720", "-framerate", "60"]),
    ("format=nv12&fps=30000/1001", ["-input_format", "nv12", "-framerate", "30000/1001"]),
    ("format=h264&size=1920x1080", ["-input_format", "h264", "-video_size", "1920x1080"]),
    ("", []),
])
def test_v4l2_command_for_each_format(query: str, expected: list[str]) -> None:
    from engine.stages.sources.v4l2 import v4l2_args

    args, device = v4l2_args(f"v4l2:///dev/video2?{query}")
    assert device == "/dev/video2" and args == ["-f", "v4l2", *expected]


@pytest.mark.parametrize("query", ["format=rgb565", "size=1920*1080", "fps=fast", "fps=0", "fps=-30", "fps=30/0"])
def test_v4l2_bad_modes_are_refused_before_ffmpeg(query: str) -> None:
    from engine.stages.source import SourceError
    from engine.stages.sources.v4l2 import v4l2_args

    with pytest.raises(SourceError):
        v4l2_args(f"v4l2:///dev/video0?{query}")


@needs_ffmpeg
def test_debug_log_of_the_ffmpeg_command_hides_the_passphrase(caplog) -> None:
    """FFmpeg's own command line still carries it (see docs/streaming.md), but the engine's log does not."""
    from engine.stages.source import SourceError
    from engine.stages.sources import open_source

    secret = "not-in-the-log-0123"
    caplog.set_level(logging.DEBUG, logger="engine.stages.sources.ffmpeg_pipe")
    with pytest.raises(SourceError) as error:
        open_source(f"srt://:{free_port()}?mode=listener&passphrase={secret}", open_timeout_s=1.0)
    assert any("receiver:" in r.getMessage() for r in caplog.records), "the command was logged"
    assert secret not in caplog.text and secret not in str(error.value)


@needs_ffmpeg
def test_an_output_that_cannot_connect_names_no_passphrase(caplog) -> None:
    """FFmpeg's error names the URL in full ("Connection to srt://...&passphrase=... failed"): not in ours."""
    secret = "not-in-the-log-4567"
    caplog.set_level(logging.DEBUG, logger="engine.stages.sinks.stream")
    sink = StreamSink(f"srt://127.0.0.1:{free_port()}?mode=caller&passphrase={secret}", 320, 240, Fraction(30))
    for i, frame in enumerate(_test_frames(5)):
        sink.write_at(frame, i)
    deadline = time.monotonic() + 15
    while sink._proc.poll() is None and time.monotonic() < deadline:  # SRT gives up calling after ~3 s
        time.sleep(0.2)
    time.sleep(0.5)
    try:
        sink.close()
    except SinkError as exc:  # nothing was sent: close reports FFmpeg's error
        assert secret not in str(exc) and "failed" in str(exc)
    assert "Connection to srt://" in caplog.text and secret not in caplog.text


@needs_ffmpeg
def test_a_source_that_cannot_connect_says_why_without_its_key() -> None:
    """FFmpeg's reason (here: refused) reaches the error, masked; before, the failed session's log was gone."""
    from engine.stages.source import SourceError
    from engine.stages.sources import open_source

    secret = "key-not-in-the-error-89"
    with pytest.raises(SourceError) as error:
        open_source(f"rtmp://127.0.0.1:{free_port()}/live/{secret}", open_timeout_s=3.0)
    assert "refused" in str(error.value).lower()
    assert secret not in str(error.value)


def test_srt_output_options_go_into_the_url_or_are_refused_in_words() -> None:
    """The UI's SRT latency (ms) and passphrase: FFmpeg's `latency` is in microseconds; the passphrase is held to
    SRT's 10-79 characters, also one typed in the URL; no value is ever repeated in an error."""
    from engine.stream_options import published_stream_limits, srt_output_url

    url = "srt://relay:9000?mode=caller&streamid=live/me"
    assert srt_output_url(url, 500, "hunter2hunter2") == f"{url}&latency=500000&passphrase=hunter2hunter2"
    assert srt_output_url("srt://:9001?mode=listener") == "srt://:9001?mode=listener"
    assert srt_output_url("rtmp://a/live/key") == "rtmp://a/live/key"
    for args, message in [(("srt://h:9", 5), "srt_latency_ms must be in [20, 10000]"),
                          (("srt://h:9", 200.5), "whole number"),
                          (("srt://h:9", None, "secret"), "10 to 79 bytes"),
                          (("srt://h:9?passphrase=secret", None, None), "10 to 79 bytes"),
                          (("srt://h:9", None, "secretsecret" * 6 + "é" * 6), "10 to 79 bytes"),  # 78 letters, 84 bytes
                          (("srt://h:9?streamid=#!::r=a&latency=1", 200), "given twice"),
                          (("srt://h:9", None, "has a space in it"), "without spaces"),
                          (("srt://h:9?latency=1", 200), "given twice"),
                          (("rtmp://a/live/key", 200), "SRT options")]:
        with pytest.raises(ValueError, match=re.escape(message)) as refused:
            srt_output_url(*args)
        assert "secret" not in str(refused.value) and "space in" not in str(refused.value)
    # SRS / srt-live-server stream ids start with #: FFmpeg reads it as part of the query, and so must we.
    srs = "srt://relay:10080?streamid=#!::r=live/me,m=publish"
    assert srt_output_url(srs, 500) == f"{srs}&latency=500000"
    assert srt_output_url("srt://h:9", 120) == "srt://h:9?latency=120000"
    limits = published_stream_limits()
    assert (limits["srt_latency_ms"]["min"], limits["srt_latency_ms"]["max"]) == (20, 10_000)
    assert limits["srt_passphrase"]["default"] is None and "masked" in limits["srt_passphrase"]["help"]


@pytest.mark.parametrize(("cores", "expected"), [(2, "ultrafast"), (4, "ultrafast"), (8, "veryfast")])
def test_the_auto_preset_is_ultrafast_where_veryfast_would_starve_the_engine(monkeypatch, cores, expected) -> None:
    """`auto`, the default, is what FFmpeg gets resolved: on a 2-core rig veryfast's encoding took the CPU the engine
    needed at 1080p30 (12.8 fps out against 20.5 with ultrafast); a named preset is passed as it is. The cores are
    the ones this process may use (a container pinned to 2 of a large host's cores gets ultrafast)."""
    from engine import stream_options

    monkeypatch.setattr(stream_options.os, "sched_getaffinity", lambda pid: set(range(cores)))
    monkeypatch.setattr(stream_options.os, "cpu_count", lambda: 64)
    assert stream_options.DEFAULTS["preset"] == "auto"
    assert check_stream_options(preset="auto")[2] == expected
    assert check_stream_options()[2] == expected
    assert check_stream_options(preset="medium")[2] == "medium"


@needs_ffmpeg
def test_a_stream_whose_sound_goes_quiet_keeps_sending(tmp_path: Path) -> None:
    """A source with sound whose sound stops (a phone's microphone off): a stream output's FFmpeg takes no picture
    ~0.1-0.25 s ahead of its sound (bench/sound_lag.py --output stream), so without silence following the picture
    the output stalled for good. Half a second of sound, then 4 s of picture alone: the picture goes on."""
    from engine.stages.sources.audio import RATE, AudioTap

    port = free_port()
    out = tmp_path / "out.ts"
    recorder = record(f"srt://127.0.0.1:{port}?mode=listener", out)
    time.sleep(0.5)
    tap = AudioTap()
    sink = StreamSink(f"srt://127.0.0.1:{port}?mode=caller", 320, 240, Fraction(30), audio=tap, bitrate_kbps=500)
    _send_paced(sink, _test_frames(135), recorder,
                lambda i: i < 15 and tap.publish(i * RATE // 30, bytes(RATE // 30 * 4)))
    # the sound is taken for gone after SOUND_QUIET_S (1 s): until then FFmpeg may hold the picture and the output's
    # short queue drops a few frames (5 measured); without the rule it never sent another one
    assert sink.frames_sent >= 135 - 30 and sink.frames_sent + sink.dropped == 135, f"sent {sink.frames_sent}"
    assert stream_kinds(out) == ["audio", "video"]
    duration = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v", "-show_entries",
                               "stream=duration", "-of", "csv=p=0", str(out)], capture_output=True, text=True).stdout
    assert float(duration.split()[0].strip(",")) > 4.0, "the picture after the sound stopped reached the far end"


def _descendants(pid: int) -> set[int]:
    found, todo = set(), [pid]
    while todo:
        for task in Path(f"/proc/{todo.pop()}/task").glob("*"):
            try:
                kids = {int(p) for p in (task / "children").read_text().split()}
            except OSError:
                continue
            todo += sorted(kids - found)
            found |= kids
    return found


def _alive(pid: int) -> bool:
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()
    except OSError:
        return False


@needs_ffmpeg
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGHUP"])
def test_sigterm_or_a_closed_ssh_session_ends_a_live_run_and_its_ffmpeg_children(dev_clip: Path, tmp_path: Path,
                                                                                  sig: str) -> None:
    """`kill PID` (SIGTERM) or the SSH session closing (SIGHUP) ended `run` at once and left its stream receiver and
    encoders, orphaned, holding their ports (a review, stop 44). Now it stops as Ctrl-C stops it: its recording
    closed, no FFmpeg left, exit 128 + the signal."""
    import os
    import signal
    import sys

    port = free_port()
    out = tmp_path / "rec.mp4"
    env = {**os.environ, "BLURCAST_HOME": str(tmp_path / "home")}
    proc = subprocess.Popen([sys.executable, "-m", "blurcast", "run", str(dev_clip), "--live", "--no-facebank",
                             "-o", str(out), "--out", f"srt://:{port}?mode=listener"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=Path(__file__).resolve().parents[1])
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not (out.exists() and out.stat().st_size > 50_000):
            time.sleep(0.2)
        children = _descendants(proc.pid)
        assert children, "the run's FFmpeg children (the encoders) were not found"
        proc.send_signal(getattr(signal, sig))
        code = proc.wait(timeout=30)
        err = proc.stderr.read().decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 128 + getattr(signal, sig), err[-2000:]
    time.sleep(0.5)
    assert not [p for p in children if _alive(p)], "an FFmpeg child outlived the run"
    probe = subprocess.run(["ffprobe", "-v", "error", "-count_packets", "-select_streams", "v:0", "-show_entries",
                            "stream=nb_read_packets", "-of", "csv=p=0", str(out)], capture_output=True, text=True)
    assert probe.returncode == 0 and int(probe.stdout.strip().strip(",")) > 10, "the recording does not play"


@needs_ffmpeg
def test_a_live_run_whose_stream_output_never_connected_exits_1(tmp_path: Path, capsys) -> None:
    """Nothing listening at `--out`: the run logged its reconnects and exited 0 (a review, stop 44). What FFmpeg
    wrote out (its -progress count) tells a stream delivered from one that went nowhere."""
    from blurcast import cli

    clip = tmp_path / "clip.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=s=320x240:r=30", "-t", "3", "-pix_fmt",
                    "yuv420p", str(clip)], check=True)
    nowhere = f"srt://127.0.0.1:{free_port()}?mode=caller"
    import signal

    before = signal.getsignal(signal.SIGTERM)
    assert cli.main(["run", str(clip), "--live", "--no-facebank", "--out", nowhere]) == 1
    assert signal.getsignal(signal.SIGTERM) is before, "run's SIGTERM handler outlived it (in-process callers)"
    assert "no frame reached srt://127.0.0.1" in " ".join(capsys.readouterr().err.split())
    port = free_port()
    recorder = record(f"srt://:{port}?mode=listener", tmp_path / "far.ts")
    try:
        time.sleep(0.5)
        assert cli.main(["run", str(clip), "--live", "--no-facebank", "--out",
                         f"srt://127.0.0.1:{port}?mode=caller"]) == 0
    finally:
        recorder.wait(timeout=20)
    assert (tmp_path / "far.ts").stat().st_size > 10_000


@pytest.mark.parametrize("out", ["udp://127.0.0.1:9", "srt://127.0.0.1:9?passphrase=short"])
def test_a_bad_stream_output_is_refused_before_the_source_waits_for_its_sender(out: str, capsys) -> None:
    """An SRT listener source waits up to a minute for its phone: `--out udp://...` was refused only after that (a
    review, stop 44)."""
    from blurcast import cli

    started = time.monotonic()
    assert cli.main(["run", f"srt://:{free_port()}?mode=listener", "--no-facebank", "--out", out]) == 2
    assert time.monotonic() - started < 10
    err = " ".join(capsys.readouterr().err.split())
    assert "unsupported stream output" in err or "passphrase" in err, err
