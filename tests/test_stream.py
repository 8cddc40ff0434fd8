"""SRT and RTMP in and out on loopback, with FFmpeg as the far end (the phone, and OBS or the platform).

Sync is measured on content (tests/stream_util.py): a white flash and a beep start together every second
at the sender; in the recording the flash's first frame and the beep's onset must be within one frame.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from engine.config import Settings
from engine.pipeline import Pipeline
from engine.runner import Engine
from engine.service import open_sink
from engine.stages.anonymize import SafeFrame
from engine.stages.sinks import StreamSink, redact
from engine.stages.source import SourceError
from engine.stages.sources import FFmpegSource, open_source
from engine.stages.sources.srt import srt_url
from engine.stream_options import DEFAULT_TLS, Tls
from tests.stream_util import FFMPEG as FFMPEG_BIN
from tests.stream_util import (
    av_offsets_ms,
    beep_times,
    flash_times,
    free_port,
    record,
    self_signed,
    send,
    stream_kinds,
    sync_inputs,
)

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None,
                                reason="needs ffmpeg and ffprobe with srt and rtmp (Debian's ffmpeg)")

ONE_FRAME_MS = 1000 / 30


class ListSink:
    """Records what reached the sinks: when, what size, and what the engine said of its source then."""

    name = "list"

    def __init__(self, engine: Engine | None = None) -> None:
        self.engine = engine
        self.frames: list[tuple[float, tuple[int, ...], str]] = []

    def write(self, frame: SafeFrame) -> None:
        assert isinstance(frame, SafeFrame)
        state = self.engine.source_state if self.engine else "?"
        self.frames.append((time.monotonic(), frame.image.shape, state))

    def close(self) -> None:
        pass


def _live(engine: Engine) -> threading.Thread:
    thread = threading.Thread(target=engine.run_live, name="engine", daemon=True)
    thread.start()
    return thread


def _stop(engine: Engine, thread: threading.Thread, *procs: subprocess.Popen) -> None:
    engine.stop_event.set()
    thread.join(timeout=5)
    engine.close()
    for proc in procs:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _listen(spec: str, start_sender: Callable[[], subprocess.Popen],
            tls: Tls = DEFAULT_TLS) -> tuple[FFmpegSource, subprocess.Popen]:
    """Open a listening source, and start the sender once the rig's FFmpeg listens (a phone retries too)."""
    with ThreadPoolExecutor(1) as pool:
        opening = pool.submit(open_source, spec, open_timeout_s=15, tls=tls)
        time.sleep(1.0)
        sender = start_sender()
        return opening.result(), sender


def _round_trip(source_spec: str, sender_url: str, sender_fmt: str, out_url: str, recorder_url: str,
                recorder_args: list[str], path: Path, seconds: float = 6.0,
                sender_extra: list[str] | None = None, tls: Tls = DEFAULT_TLS) -> Engine:
    pipeline = Pipeline(Settings())
    recorder = record(recorder_url, path, recorder_args)
    source, sender = _listen(source_spec, lambda: send(sync_inputs(320, 240, 30, seconds), sender_url, sender_fmt,
                                                       sender_extra), tls)
    engine = Engine(Settings(), source, pipeline=pipeline)
    sink = open_sink("stream", source, out_url, bitrate_kbps=1000, keyframe_s=1.0)  # as `--out URL` does
    assert isinstance(sink, StreamSink) and sink.has_sound, "the source's sound must go along"
    engine.sinks.append(sink)
    thread = _live(engine)
    sender.wait(timeout=seconds + 20)
    time.sleep(1.0)
    _stop(engine, thread, recorder)
    return engine


def _assert_synced(path: Path) -> None:
    assert stream_kinds(path) == ["audio", "video"]
    offsets = av_offsets_ms(path)
    assert len(offsets) >= 2, f"too few flash/beep pairs in the recording: {offsets}"
    # every flash has its beep (one may fall at a start or end): sound cut as "late" had lost beeps (stop 38's review)
    flashes = flash_times(path)
    assert len(offsets) >= len(flashes) - 1, f"flashes at {flashes} s, only {len(offsets)} with their beep"
    # Frames are placed on whole frame slots, so a sender's sub-frame offset rounds to within half a frame;
    # a flash frame the engine dropped (warm-up) shows one frame late, hence the median, with a worst bound.
    magnitudes = sorted(abs(o) for o in offsets)
    assert magnitudes[len(magnitudes) // 2] <= ONE_FRAME_MS, f"A/V offsets {offsets} ms: median over one frame"
    assert magnitudes[-1] <= 3 * ONE_FRAME_MS, f"A/V offsets {offsets} ms: worst over three frames"


def test_srt_in_and_out_keeps_sound_in_sync(tmp_path: Path) -> None:
    pin, pout = free_port(), free_port()
    out = tmp_path / "srt.ts"
    # the rig listens (as for a phone); the output calls the far end, which listens (as OBS's media source)
    engine = _round_trip(f"srt://:{pin}?mode=listener", f"srt://127.0.0.1:{pin}?mode=caller", "mpegts",
                         f"srt://127.0.0.1:{pout}?mode=caller", f"srt://127.0.0.1:{pout}?mode=listener", [], out)
    assert engine.stats.frames > 60
    _assert_synced(out)


def test_rtmp_in_and_out_keeps_sound_in_sync(tmp_path: Path) -> None:
    pin, pout = free_port(), free_port()
    out = tmp_path / "rtmp.ts"
    # the rig listens for a publisher; the output pushes to a far end that listens (a platform's ingest)
    engine = _round_trip(f"rtmp://:{pin}/live/phone", f"rtmp://127.0.0.1:{pin}/live/phone", "flv",
                         f"rtmp://127.0.0.1:{pout}/live/key", f"rtmp://127.0.0.1:{pout}/live/key", ["-listen", "1"],
                         out)
    assert engine.stats.frames > 60
    _assert_synced(out)


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_http_pull_in_and_srt_out_keeps_sound_in_sync(scheme: str, tmp_path: Path) -> None:
    """An IP camera or encoder serving MPEG-TS over HTTP(S) (FFmpeg's `-listen 1`; HTTPS with a self-signed
    certificate, as a streamer's own relay has, given to the rig as `--tls-ca` does): the rig pulls it, calling again
    until the server is up, as for a camera that boots after the rig."""
    tls: list[str] = []
    trust = DEFAULT_TLS
    if scheme == "https":
        if shutil.which("openssl") is None:
            pytest.skip("needs openssl to make the server's certificate")
        key, cert = self_signed(tmp_path)
        tls, trust = ["-cert_file", str(cert), "-key_file", str(key)], Tls(ca_file=str(cert))
    pin, pout = free_port(), free_port()
    out = tmp_path / "http.ts"
    url = f"{scheme}://127.0.0.1:{pin}/cam.ts"
    engine = _round_trip(url, url, "mpegts", f"srt://127.0.0.1:{pout}?mode=caller",
                         f"srt://127.0.0.1:{pout}?mode=listener", [], out, sender_extra=["-listen", "1", *tls],
                         tls=trust)
    assert engine.stats.frames > 60
    _assert_synced(out)


def test_a_pulled_stream_that_goes_away_is_pulled_again_without_raw_frames() -> None:
    """The camera's server restarts (a reboot, a Wi-Fi drop): the source is lost, nothing reaches the sinks while
    it is, and the rig pulls again once the server is back."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/cam.ts"
    first = send(sync_inputs(320, 240, 30, 3), url, extra=["-listen", "1"])
    source = open_source(url, open_timeout_s=15)
    source.stall_s = 1.0
    engine = Engine(Settings(), source)
    sink = ListSink(engine)
    engine.sinks.append(sink)
    thread = _live(engine)
    first.wait(timeout=20)
    gone = time.monotonic()
    states = set()
    while time.monotonic() < gone + 3.0:
        states.add(engine.source_state)
        time.sleep(0.05)
    back_at = time.monotonic()
    emitted_while_gone = [f for f in sink.frames if gone + 1.5 < f[0] < back_at]
    second = send(sync_inputs(320, 240, 30, 4), url, extra=["-listen", "1"])
    second.wait(timeout=30)
    _stop(engine, thread)
    assert first.returncode == 0 and second.returncode == 0, "each server was served to its end"
    assert states & {"lost", "reconnecting"}, f"the source never said it was gone: {states}"
    assert emitted_while_gone == [], "frames reached the sinks while the camera's server was gone"
    resumed = [f for f in sink.frames if f[0] > back_at]
    assert len(resumed) > 30, f"{len(resumed)} frames after the server came back: not pulled again"


RTSP_SERVER = Path(sys.executable).with_name("rtsp-server")  # aio-rtsp-toolkit (dev extra): serves files over RTSP


@pytest.mark.skipif(not RTSP_SERVER.exists(), reason="needs the dev extra's rtsp-server (aio-rtsp-toolkit)")
def test_rtsp_pull_in_and_srt_out_keeps_sound_in_sync(tmp_path: Path) -> None:
    """An IP camera (or a relay) serving RTSP: the rig pulls it over TCP, picture and sound, in sync. The camera is
    a real RTSP server (aio-rtsp-toolkit) sending an H.264 + AAC file as it would a live feed."""
    assert FFMPEG_BIN
    media = tmp_path / "media"
    media.mkdir()
    made_at_once = [arg for arg in sync_inputs(320, 240, 30, 6) if arg != "-re"]  # the server paces it
    subprocess.run([FFMPEG_BIN, "-hide_banner", "-loglevel", "error", "-y", *made_at_once, "-c:v", "libx264",
                    "-preset", "ultrafast", "-g", "30", "-pix_fmt", "yuv420p", "-c:a", "aac", str(media / "cam.mp4")],
                   check=True, timeout=60)
    port, control, pout = free_port(), free_port(), free_port()
    server = subprocess.Popen([str(RTSP_SERVER), "-d", str(media), "-H", "127.0.0.1", "-p", str(port),
                               "-cp", str(control)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    out = tmp_path / "rtsp.ts"
    try:
        recorder = record(f"srt://127.0.0.1:{pout}?mode=listener", out)
        source = open_source(f"rtsp://127.0.0.1:{port}/cam.mp4", open_timeout_s=20)  # called until the server is up
        assert source.has_audio, "the camera's sound must come along"
        engine = Engine(Settings(), source)
        engine.sinks.append(open_sink("stream", source, f"srt://127.0.0.1:{pout}?mode=caller", bitrate_kbps=1000,
                                      keyframe_s=1.0))
        thread = _live(engine)
        time.sleep(7.5)
        _stop(engine, thread, recorder)
    finally:
        server.kill()
        server.wait()
    assert engine.stats.frames > 60
    _assert_synced(out)


def test_a_recording_of_a_stream_keeps_its_sound_in_sync_across_a_reconnect(tmp_path: Path) -> None:
    """`--record` with an SRT source: the recording has the stream's sound, placed on the frames' source numbers,
    and still in sync after the phone drops out for seconds and connects again (the gap filled with the last
    frame and silence). Before stop 38 a network source's recording had no sound at all."""
    port = free_port()
    url = f"srt://127.0.0.1:{port}?mode=caller"
    out = tmp_path / "rec.mp4"
    pipeline = Pipeline(Settings())
    source, sender = _listen(f"srt://:{port}?mode=listener", lambda: send(sync_inputs(320, 240, 30, 30), url))
    source.stall_s = 1.0
    engine = Engine(Settings(), source, pipeline=pipeline)
    sink = open_sink("file", source, str(out), keep_existing=True)  # as `engine serve --record` does
    assert sink.has_sound, "the stream's sound must go into the recording"
    engine.sinks.append(sink)
    thread = _live(engine)
    time.sleep(4.5)
    sender.kill()
    sender.wait()
    time.sleep(3.0)
    for _ in range(20):  # the rig's listener comes back between retries, as a phone app retries
        sender = send(sync_inputs(320, 240, 30, 5), url)
        time.sleep(1.0)
        if sender.poll() is None:
            break
    sender.wait(timeout=30)
    time.sleep(1.0)
    _stop(engine, thread)
    assert sink.segments == [out] and sink.repeated > 30, "the outage is filled in the one recording"
    _assert_synced(out)
    flashes = flash_times(out)
    assert any(t < 4 for t in flashes) and any(t > 8 for t in flashes), f"flashes before and after: {flashes}"
    assert len(av_offsets_ms(out)) >= 6


def test_a_file_played_live_streams_with_its_sound_in_sync_loop_after_loop(tmp_path: Path) -> None:
    """`engine serve --source clip.mp4 --loop --out srt://... --record`: OpenCV reads the picture, FFmpeg the sound
    (sources/file_sound.py), both on the file's frame numbers counted across loops. Before stop 38 such a stream
    had no sound, its frames the engine dropped were not filled (the stream ran short of real time), and the
    recording had the file's sound once, not loop after loop."""
    clip = tmp_path / "clip.mp4"
    inputs = [a for a in sync_inputs(320, 240, 30, 3.5) if a != "-re"]
    subprocess.run(["ffmpeg", "-v", "error", "-y", *inputs, "-c:v", "libx264", "-preset", "ultrafast", "-g", "15",
                    "-c:a", "aac", str(clip)], check=True)
    port = free_port()
    out = tmp_path / "out.ts"
    recorder = record(f"srt://127.0.0.1:{port}?mode=listener", out)
    source = open_source(str(clip), loop=True)
    engine = Engine(Settings(), source, pipeline=Pipeline(Settings()))
    sink = open_sink("stream", source, f"srt://127.0.0.1:{port}?mode=caller", bitrate_kbps=1000, keyframe_s=1.0)
    assert isinstance(sink, StreamSink) and sink.has_sound, "the file's sound must go along"
    recording = tmp_path / "rec.mp4"
    engine.sinks += [sink, open_sink("file", source, str(recording), keep_existing=True)]  # as `--record` does
    thread = _live(engine)
    time.sleep(8.5)  # the 3.5 s file twice and more
    _stop(engine, thread, recorder)
    for path in (out, recording):  # the recording had the first loop's sound only, copied from the file
        _assert_synced(path)
        flashes = flash_times(path)
        assert len(av_offsets_ms(path)) >= 6 and max(flashes) > 4.0, f"{path.name}, both loops: {flashes}"
    frames = int(subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v", "-count_frames", "-show_entries",
                                 "stream=nb_read_frames", "-of", "csv=p=0", str(out)],
                                capture_output=True, text=True).stdout.split()[0].strip(","))
    assert frames >= engine.stats.frames + engine.stats.dropped - 5, "the frames dropped are filled"


def test_a_file_played_live_once_through_records_its_sound_in_sync_when_its_video_starts_late(tmp_path) -> None:
    """`engine serve --source clip.mp4 --record` (no loop), a clip whose sound starts 0.4 s before its picture
    (the dev clip's starts 0.84 s before): the recording takes the sound placed on the frames it gets. It had the
    file's sound copied whole from the file's start, 0.4 s early: the flash and its beep 400 ms apart."""
    synced = tmp_path / "synced.mp4"
    inputs = [a for a in sync_inputs(320, 240, 30, 6) if a != "-re"]
    subprocess.run(["ffmpeg", "-v", "error", "-y", *inputs, "-c:v", "libx264", "-preset", "ultrafast", "-g", "15",
                    "-c:a", "aac", str(synced)], check=True)
    clip = tmp_path / "late_video.mp4"  # the same content in sync, its video stream starting 0.4 s in
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(synced), "-itsoffset", "0.4", "-i", str(synced),
                    "-map", "1:v", "-map", "0:a", "-af", "adelay=400:all=1", "-c:v", "copy", "-c:a", "aac",
                    str(clip)], check=True)
    source = open_source(str(clip))
    engine = Engine(Settings(), source, pipeline=Pipeline(Settings()))
    recording = tmp_path / "rec.mp4"
    try:
        sink = open_sink("file", source, str(recording), keep_existing=True, live=True)  # as `engine serve --record`
        engine.sinks.append(sink)
        assert sink.has_sound, "played live, the recording takes the file's sound from its tap"
        job = open_sink("file", source, str(tmp_path / "job.mp4"))
        job.close()
        assert job.audio_from == str(clip), \
            "`blurcast run` (file mode) still copies the file's sound whole, then puts the frames back at their times"
        thread = _live(engine)
        time.sleep(3.0)  # stopped before the file's end, as a Ctrl-C does
        engine.stop_event.set()
        thread.join(timeout=10)
        assert not thread.is_alive()
    finally:
        engine.close()
    _assert_synced(recording)
    assert len(flash_times(recording)) >= 2
    # the sound ends with the picture: it is decoded 0.5 s ahead of the frames, and ran on up to ~0.5 s past the last
    video, audio = (_duration(recording, kind) for kind in ("v", "a"))
    assert abs(audio - video) <= 0.15, f"sound {audio:.3f} s, picture {video:.3f} s"


def test_outputs_running_keep_the_sound_of_a_source_switched_in(tmp_path) -> None:
    """The UI's source switch while a recording runs: the recording goes on with the new source's sound, each flash
    with its beep (it got silence from the switch on: the output held the old source's tap). An output opened after
    the switch takes the engine's sound as well."""
    clips = []
    for name in ("a", "b"):
        clips.append(tmp_path / f"{name}.mp4")
        inputs = [a for a in sync_inputs(320, 240, 30, 6) if a != "-re"]
        subprocess.run(["ffmpeg", "-v", "error", "-y", *inputs, "-c:v", "libx264", "-preset", "ultrafast", "-g", "15",
                        "-c:a", "aac", str(clips[-1])], check=True)
    source = open_source(str(clips[0]))
    engine = Engine(Settings(), source, pipeline=Pipeline(Settings()))
    before, after = tmp_path / "before.mp4", tmp_path / "after.mp4"
    try:
        engine.sinks.append(open_sink("file", source, str(before), keep_existing=True, live=True))
        thread = _live(engine)
        time.sleep(2.5)
        engine.replace_source(open_source(str(clips[1])))  # as the service's `source` request does
        time.sleep(0.5)
        late = open_sink("file", engine.source, str(after), keep_existing=True, live=True,
                         sound=engine.output_sound())
        assert late.has_sound
        engine.add_sink(late)
        time.sleep(3.0)
        engine.stop_event.set()
        thread.join(timeout=10)
        assert not thread.is_alive()
        offset = engine.sound.offset
    finally:
        engine.close()
    # The old source's sound up to ~0.07 s past its last frame was written before the switch (a recording writes
    # sound 0.05 s ahead of its picture): the new source's first beep (0.1 s) is cut there. Every later flash of the
    # new source has its beep within a frame; before the change every one of them had silence.
    flashes = sorted(flash_times(before))
    assert len(flashes) >= 5, f"flashes at {flashes}: both sources' frames recorded"
    switch = offset / 30  # the new source's frame 0 (its first flash) in the recording, which began at frame 0
    assert any(abs(f - switch) < 0.02 for f in flashes), f"flashes at {flashes}, the switch at {switch:.3f} s"
    beeps = beep_times(before)
    for flash in flashes:
        if abs(flash - switch) < 0.02:
            continue
        nearest = min(abs(b - flash) for b in beeps)
        assert nearest <= ONE_FRAME_MS / 1000, f"flash at {flash:.3f} s: nearest beep {nearest * 1000:.0f} ms away " \
                                               f"(beeps at {beeps})"
    assert len([f for f in flashes if f > switch]) >= 2
    _assert_synced(after)  # opened after the switch, on the engine's sound
    assert len(flash_times(after)) >= 2


def _duration(path: Path, stream: str) -> float:
    """A recording's stream's length in seconds: its packets' last end minus its first start."""
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", f"{stream}:0", "-show_entries",
                          "packet=pts_time,duration_time", "-of", "csv=p=0", str(path)],
                         capture_output=True, text=True, check=True).stdout.split()
    packets = [(float(p), float(d)) for p, d in (line.split(",")[:2] for line in out)]
    return max(p + d for p, d in packets) - min(p for p, _ in packets)


def test_sender_killed_and_back_reconnects_without_raw_frames(tmp_path: Path) -> None:
    port = free_port()
    url = f"srt://127.0.0.1:{port}?mode=caller"
    source, sender = _listen(f"srt://:{port}?mode=listener", lambda: send(sync_inputs(320, 240, 30, 30), url))
    source.stall_s = 1.0
    engine = Engine(Settings(), source)
    sink = ListSink(engine)
    engine.sinks.append(sink)
    thread = _live(engine)
    time.sleep(2.0)
    sender.kill()
    sender.wait()
    killed = time.monotonic()
    states = set()
    deadline = killed + 4.0
    while time.monotonic() < deadline:
        states.add(engine.source_state)
        time.sleep(0.05)
    lost_at = time.monotonic()
    emitted_while_lost = [f for f in sink.frames if f[0] > killed + 1.5 and f[0] < lost_at]
    back = None
    for _ in range(20):  # the rig's listener comes back between retries; a phone app retries the same way
        sender = send(sync_inputs(320, 240, 30, 4), url)
        time.sleep(1.0)
        if sender.poll() is None:
            back = time.monotonic()
            break
    assert back is not None, "the sender could not reconnect to the rig's listener"
    time.sleep(2.5)
    _stop(engine, thread)
    sender.kill()
    sender.wait()
    assert "lost" in states
    assert emitted_while_lost == [], "frames reached the sinks while the source was lost"
    resumed = [f for f in sink.frames if f[0] > back]
    assert len(resumed) > 15, "too few frames after the reconnect"
    assert all(f[2] != "lost" for f in resumed[5:])


def test_a_stream_joined_mid_gop_whose_sound_comes_first_is_decoded(dev_clip: Path, tmp_path: Path) -> None:
    """A sender joined mid-GOP (a relay, a phone reconnecting): 1.4 s of sound before the first keyframe. The
    decoder's short probe found no frame rate ("90k fps"), the video reader waited on it for ever and the listener's
    port stayed held, so no later sender got in either (a review, stop 44). The rate the receiver read is given to
    the decoder now, and a decoder that states none is ended within CONFIGURE_S."""
    joined = tmp_path / "joined.ts"  # the dev clip from 1.4 s, packets copied: sound at 1.42 s, picture at 2.85 s
    subprocess.run([shutil.which("ffmpeg"), "-v", "error", "-y", "-i", str(dev_clip), "-ss", "1.4", "-t", "6", "-c",
                    "copy", "-f", "mpegts", str(joined)], check=True)
    port = free_port()
    url = f"srt://127.0.0.1:{port}?mode=caller"
    source, sender = _listen(f"srt://:{port}?mode=listener",
                             lambda: subprocess.Popen([shutil.which("ffmpeg"), "-v", "error", "-nostdin", "-re", "-i",
                                                       str(joined), "-c", "copy", "-f", "mpegts", url]))
    try:
        frames = [source.read() for _ in range(30)]
        assert all(f is not None for f in frames), "the picture never came"
        assert abs(source.info.fps - 29.97) < 0.1
    finally:
        source.close()
        sender.kill()
        sender.wait()


def test_a_decoder_that_never_states_its_picture_ends_the_connection_and_frees_the_port(monkeypatch, caplog) -> None:
    """Whatever else keeps a decoder from stating its output's size and rate: the video reader gives up after
    CONFIGURE_S and kills it (it may be blocked on its full pipe, holding the receiver), so the connection ends with
    an error in time and the port is free for the next sender, instead of waiting for ever."""
    from engine.stages.sources import ffmpeg_pipe

    monkeypatch.setattr(ffmpeg_pipe, "_OUT_FPS", re.compile(r"(?!)"))  # as if FFmpeg never said it
    monkeypatch.setattr(ffmpeg_pipe, "CONFIGURE_S", 1.0)
    port = free_port()
    url = f"srt://127.0.0.1:{port}?mode=caller"
    started = time.monotonic()
    with ThreadPoolExecutor(1) as pool:
        opening = pool.submit(open_source, f"srt://:{port}?mode=listener", open_timeout_s=6)
        time.sleep(1.0)
        sender = send(sync_inputs(320, 240, 30, 30), url)
        with pytest.raises(SourceError):
            opening.result(timeout=30)
    sender.kill()
    sender.wait()
    assert time.monotonic() - started < 20 and "said no picture size and rate" in caplog.text
    monkeypatch.undo()
    source, sender = _listen(f"srt://:{port}?mode=listener", lambda: send(sync_inputs(320, 240, 30, 8), url))
    try:
        assert source.read() is not None, "the port was not free for the next sender"
    finally:
        source.close()
        sender.kill()
        sender.wait()


def test_size_change_restarts_decoder_and_output_keeps_its_size(tmp_path: Path) -> None:
    parts = []
    for name, (w, h) in (("big", (320, 240)), ("small", (160, 120))):
        parts.append(tmp_path / f"{name}.ts")
        inputs = [a for a in sync_inputs(w, h, 30, 3) if a != "-re"]
        subprocess.run(["ffmpeg", "-v", "error", "-y", *inputs, "-c:v", "libx264", "-preset", "ultrafast", "-g", "15",
                        "-c:a", "aac", "-f", "mpegts", str(parts[-1])], check=True)
    playlist = tmp_path / "both.txt"
    playlist.write_text("".join(f"file '{p}'\n" for p in parts))
    pin, pout = free_port(), free_port()
    out = tmp_path / "out.ts"
    pipeline = Pipeline(Settings())  # models loaded before the stream starts: no second of it goes by unseen
    recorder = record(f"srt://127.0.0.1:{pout}?mode=listener", out)
    source, sender = _listen(f"srt://:{pin}?mode=listener", lambda: subprocess.Popen(
        ["ffmpeg", "-v", "error", "-re", "-f", "concat", "-safe", "0", "-i", str(playlist), "-c", "copy",
         "-f", "mpegts", f"srt://127.0.0.1:{pin}?mode=caller"], stderr=subprocess.DEVNULL))
    assert (source.info.width, source.info.height) == (320, 240)
    assert source._session is not None and source._session.pix_fmt == "yuv420p"  # untagged: I420 on the pipe
    engine = Engine(Settings(), source, pipeline=pipeline)
    sink = ListSink(engine)
    engine.sinks += [sink, StreamSink(f"srt://127.0.0.1:{pout}?mode=caller", 320, 240, source.fps_fraction,
                                      bitrate_kbps=500)]
    thread = _live(engine)
    sender.wait(timeout=20)
    time.sleep(1.0)
    _stop(engine, thread, recorder)
    sizes = [tuple(f[1][:2]) for f in sink.frames]
    assert (240, 320) in sizes and (120, 160) in sizes, f"sizes seen: {sorted(set(sizes))}"
    assert sizes.index((120, 160)) > sizes.index((240, 320))
    probe = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v", "-show_entries", "frame=width,height",
                            "-of", "csv=p=0", str(out)], capture_output=True, text=True).stdout.split()
    sizes_out = {p.strip(",") for p in probe}
    assert len(probe) > 60 and sizes_out == {"320,240"}, f"the output changed size: {sorted(sizes_out)}"


def test_service_assembly_streams_out_and_reports_the_sync_offset(tmp_path: Path) -> None:
    """`blurcast engine start --source srt://... --out srt://...` as the service builds it."""
    from blurcast.assemble import build_engine
    from engine.client import EnginePaths
    from engine.service import EngineService, ServeOptions

    pin, pout = free_port(), free_port()
    secret = "0123456789abc"  # an encrypted output: the far end has the same passphrase
    recorder = record(f"srt://127.0.0.1:{pout}?mode=listener&passphrase={secret}&pbkeylen=16", tmp_path / "out.ts")
    sender = send(sync_inputs(320, 240, 30, 20), f"srt://127.0.0.1:{pin}?mode=listener")
    options = ServeOptions(source=f"srt://127.0.0.1:{pin}",
                           outputs=[f"srt://127.0.0.1:{pout}?mode=caller&passphrase={secret}&pbkeylen=16"])
    paths = EnginePaths(tmp_path / "home")
    engine = build_engine(options, Settings(), paths=paths, use_facebank=False).engine
    service = EngineService(engine, paths=paths)
    thread = _live(engine)
    [sink] = engine.sinks
    deadline = time.monotonic() + 15
    while sink.frames_sent < 60 and time.monotonic() < deadline:  # a busy machine starts the encoder slower
        time.sleep(0.2)
    telemetry = service.telemetry()
    sender.kill()
    _stop(engine, thread, sender, recorder)
    assert telemetry["source"]["kind"] == "stream" and telemetry["frames"] >= 60
    assert telemetry["obs_sync_offset_ms"] is not None and telemetry["video_delay_ms"] is not None
    [output] = telemetry["outputs"]
    assert output["name"].startswith("stream srt://") and secret not in json.dumps(telemetry)
    assert stream_kinds(tmp_path / "out.ts") == ["audio", "video"], recorder.stderr.read().decode()[-500:]


def test_output_far_end_restarts_and_output_reconnects(tmp_path: Path) -> None:
    """OBS (the far end) restarts mid-stream: the output connects again; the engine never stops."""
    pin, pout = free_port(), free_port()
    pipeline = Pipeline(Settings())
    first = record(f"srt://127.0.0.1:{pout}?mode=listener", tmp_path / "first.ts")
    sender = send(sync_inputs(320, 240, 30, 30), f"srt://127.0.0.1:{pin}?mode=listener")
    source = open_source(f"srt://127.0.0.1:{pin}", open_timeout_s=15)
    engine = Engine(Settings(), source, pipeline=pipeline)
    sink = StreamSink(f"srt://127.0.0.1:{pout}?mode=caller", 320, 240, source.fps_fraction, audio=source.audio,
                      bitrate_kbps=500)
    engine.sinks.append(sink)
    thread = _live(engine)
    time.sleep(3.0)
    first.kill()
    first.wait()
    time.sleep(1.0)
    second = record(f"srt://127.0.0.1:{pout}?mode=listener", tmp_path / "second.ts")
    deadline = time.monotonic() + 15
    while sink.reconnects == 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    resumed_at = sink.frames_sent
    while sink.frames_sent < resumed_at + 90 and time.monotonic() < deadline:  # 3 s into the new connection
        time.sleep(0.2)
    still_an_output = sink in engine.sinks
    sender.kill()
    _stop(engine, thread, sender, second)
    assert sink.reconnects >= 1 and still_an_output
    assert stream_kinds(tmp_path / "second.ts") == ["audio", "video"]


def test_srt_spec_and_secrets() -> None:
    assert srt_url("srt://:9000?mode=listener") == ("srt://0.0.0.0:9000?mode=listener", True)
    assert srt_url("srt://relay:9000?streamid=abc")[1] is False
    with pytest.raises(SourceError, match="10 to 79"):
        srt_url("srt://:9000?passphrase=short")
    assert "secret" not in redact("srt://h:1?passphrase=secretsecret&streamid=x")
    assert "secret" not in redact("srt://h:1?Passphrase=secretsecret")  # FFmpeg ignores it; the log must too
    assert redact("rtmp://a.rtmp.youtube.com/live2/abcd-efgh") == "rtmp://a.rtmp.youtube.com/live2/***"


def test_source_without_sound_is_decoded_picture_only() -> None:
    port = free_port()
    sender = subprocess.Popen(["ffmpeg", "-v", "error", "-re", "-f", "lavfi", "-i", "testsrc2=s=160x120:r=30",
                               "-t", "4", "-c:v", "libx264", "-preset", "ultrafast", "-f", "mpegts",
                               f"srt://127.0.0.1:{port}?mode=listener"], stderr=subprocess.DEVNULL)
    source = open_source(f"srt://127.0.0.1:{port}", open_timeout_s=15)  # the rig calls; retried until it answers
    try:
        frames = [source.read() for _ in range(10)]
        assert source.has_audio is False and all(f is not None and f.shape == (120, 160, 3) for f in frames)
    finally:
        source.close()
        sender.kill()
        sender.wait()


def test_no_sender_is_a_clear_error() -> None:
    with pytest.raises(SourceError, match="no SRT sender"):
        open_source(f"srt://:{free_port()}?mode=listener", open_timeout_s=1.5)


def test_an_anamorphic_stream_is_decoded_with_square_pixels() -> None:
    """A sender whose pixels are not square (a DV or HDV camera through an encoder box: 720x480 shown 854x480) was
    searched as stored: a face squeezed to a third of its width stayed visible for 60 frames on end (a probe, SRT,
    SAR 32:27). The decoder now stretches its pixels square, as a file's are."""
    port = free_port()
    sender = subprocess.Popen(["ffmpeg", "-v", "error", "-re", "-f", "lavfi", "-i", "testsrc2=s=240x120:r=30",
                               "-vf", "setsar=2", "-t", "4", "-c:v", "libx264", "-preset", "ultrafast", "-f", "mpegts",
                               f"srt://127.0.0.1:{port}?mode=listener"], stderr=subprocess.DEVNULL)
    source = open_source(f"srt://127.0.0.1:{port}", open_timeout_s=15)
    try:
        frames = [source.read() for _ in range(10)]
        assert all(f is not None and f.shape == (120, 480, 3) for f in frames), [getattr(f, "shape", f) for f in frames]
        assert (source.info.width, source.info.height) == (480, 120)
    finally:
        source.close()
        sender.kill()
        sender.wait()


def test_a_sound_track_that_carries_nothing_yet_does_not_keep_the_picture_out(tmp_path: Path, caplog) -> None:
    """A sender that declares a sound track and sends nothing on it for its first seconds (a muted phone
    microphone): the receiver could not write the track's header ("sample rate not set") and exited, with the
    sender's connection, on every try, saying nothing; no picture ever came out. The picture is now taken without
    sound from the next connection, and a warning says why."""
    late = tmp_path / "late.ts"  # the picture from 1.4 s, the sound from 3.9 s
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=s=160x120:r=30", "-itsoffset", "2.5",
                    "-f", "lavfi", "-i", "sine=f=440:r=48000", "-t", "30", "-map", "0:v", "-map", "1:a", "-c:v",
                    "libx264", "-preset", "ultrafast", "-c:a", "aac", "-f", "mpegts", str(late)], check=True)
    port = free_port()

    def sender() -> subprocess.Popen:  # a phone app calls again when its connection drops
        return subprocess.Popen(["ffmpeg", "-v", "error", "-nostdin", "-re", "-i", str(late), "-c", "copy", "-f",
                                 "mpegts", f"srt://127.0.0.1:{port}?mode=caller"], stderr=subprocess.DEVNULL)

    senders, done = [sender()], threading.Event()

    def keep_calling() -> None:
        while not done.wait(0.2) and len(senders) < 6:
            if senders[-1].poll() is not None:
                senders.append(sender())

    caller = threading.Thread(target=keep_calling, daemon=True)
    caller.start()
    with caplog.at_level(logging.WARNING):
        source = open_source(f"srt://:{port}?mode=listener", open_timeout_s=40)
    try:
        frames = [source.read() for _ in range(10)]
        assert all(f is not None and f.shape == (120, 160, 3) for f in frames)
        assert "its sound track has carried nothing yet" in caplog.text
    finally:
        source.close()
        done.set()
        caller.join()
        for proc in senders:
            proc.kill()
            proc.wait()


def test_an_anamorphic_picture_after_a_size_change_is_squared_too(tmp_path: Path) -> None:
    """The decoder restarted for a new size knows nothing of the new picture's pixel aspect (an encoder box switched
    from an HD camera to an SD widescreen one): it had decoded it as stored, squeezed. It is squared whatever it is."""
    parts = []
    for name, size, sar in (("hd", "320x240", "1"), ("sd", "160x120", "2")):
        parts.append(tmp_path / f"{name}.ts")
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=s={size}:r=30", "-t", "3",
                        "-vf", f"setsar={sar}", "-c:v", "libx264", "-preset", "ultrafast", "-g", "15", "-f", "mpegts",
                        str(parts[-1])], check=True)
    playlist = tmp_path / "both.txt"
    playlist.write_text("".join(f"file '{p}'\n" for p in parts))
    pin = free_port()
    pipeline = Pipeline(Settings())
    source, sender = _listen(f"srt://:{pin}?mode=listener", lambda: subprocess.Popen(
        ["ffmpeg", "-v", "error", "-re", "-f", "concat", "-safe", "0", "-i", str(playlist), "-c", "copy",
         "-f", "mpegts", f"srt://127.0.0.1:{pin}?mode=caller"], stderr=subprocess.DEVNULL))
    engine = Engine(Settings(), source, pipeline=pipeline)
    sink = ListSink(engine)
    engine.sinks.append(sink)
    thread = _live(engine)
    sender.wait(timeout=20)
    time.sleep(1.0)
    _stop(engine, thread)
    sizes = {tuple(f[1][:2]) for f in sink.frames}
    assert (240, 320) in sizes and (120, 320) in sizes and (120, 160) not in sizes, f"sizes seen: {sorted(sizes)}"
