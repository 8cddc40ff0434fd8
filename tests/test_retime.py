"""A recording's frames at their source times (engine/stages/sinks/retime.py): a variable frame rate, or a video that
starts after its sound, keeps the sound in sync, and every input frame stays, once and in order.

Sync is measured on content (tests/stream_util.py): a picture that flashes white and a beep, both at every whole
second. The dev clip (real faces) checks the privacy side: the same frames, scored by the independent scorer.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest

from engine.stages.sinks.retime import RetimeError, needs_retiming, retime, usable_times
from engine.stages.source import VideoSource
from tests.conftest import REPO, score_independently
from tests.stream_util import av_offsets_ms

pytestmark = pytest.mark.skipif(not (shutil.which("ffmpeg") and shutil.which("ffprobe")),
                                reason="needs ffmpeg and ffprobe on PATH")

FLASHES = "testsrc2=s=320x240:r=30,drawbox=c=white:t=fill:enable='lt(mod(t,1),0.1)'"
BEEPS = "aevalsrc='if(lt(mod(t-{start},1),0.1)*gte(t,{start}),0.5*sin(2*PI*1000*t),0)':s=48000:c=stereo"
# Frames 2-5 s kept one in two, their times kept: a phone dropping to 15 fps in low light.
HALF_RATE_MIDWAY = "select='lt(t,2)+gte(t,5)+not(mod(n,2))'"


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True)


def _blurcast_run(source: Path, out: Path) -> str:
    done = subprocess.run([sys.executable, "-m", "blurcast", "run", str(source), "-o", str(out), "--no-facebank"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout + done.stderr


def _frames(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while (read := cap.read())[0]:
        frames.append(read[1])
    return frames


def _start(path: Path, stream: str) -> float:
    done = subprocess.run(["ffprobe", "-v", "error", "-select_streams", f"{stream}:0", "-show_entries",
                           "stream=start_time", "-of", "csv=p=0", str(path)],
                          capture_output=True, text=True, check=True)
    return float(done.stdout.strip())


@pytest.fixture(scope="module")
def variable_rate(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("vfr")
    steady = folder / "steady.mp4"
    _ffmpeg("-f", "lavfi", "-t", "8", "-i", FLASHES, "-f", "lavfi", "-t", "8", "-i", BEEPS.format(start=0),
            "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-c:a", "aac", str(steady))
    clip = folder / "variable.mp4"
    _ffmpeg("-i", str(steady), "-vf", HALF_RATE_MIDWAY, "-fps_mode", "passthrough", "-c:v", "libx264",
            "-preset", "veryfast", "-c:a", "copy", str(clip))
    return clip


def test_a_variable_frame_rate_keeps_its_sound_in_sync_and_every_frame(variable_rate, tmp_path):
    """30 fps, then 15, then 30: at a constant average rate the picture drifted up to 462 ms from its sound (measured
    before the fix: -231, -462, -77, +307, -308, +461, +230 ms at the flashes of seconds 1-7)."""
    assert all(abs(offset) <= 1 for offset in av_offsets_ms(variable_rate)), "the clip made is in sync"
    for suffix in (".mp4", ".mkv"):
        out = tmp_path / f"out{suffix}"
        printed = _blurcast_run(variable_rate, out)
        assert "source time" in printed
        offsets = av_offsets_ms(out)
        assert len(offsets) == 8, offsets
        assert all(abs(offset) <= 2 for offset in offsets), offsets
        assert len(_frames(out)) == len(_frames(variable_rate)) == 195, "every frame, once"


def test_a_video_that_starts_after_its_sound_keeps_its_place(tmp_path):
    """The dev clip's video starts 0.84 s after its sound; the recording started both at 0, the sound 0.84 s late.
    Here 0.5 s: measured before the fix, every flash 499.7 ms ahead of its beep."""
    picture, sound, clip = tmp_path / "v.mp4", tmp_path / "a.m4a", tmp_path / "late.mp4"
    _ffmpeg("-f", "lavfi", "-t", "4", "-i", FLASHES, "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
            str(picture))
    _ffmpeg("-f", "lavfi", "-t", "4.5", "-i", BEEPS.format(start=0.5), "-c:a", "aac", str(sound))
    _ffmpeg("-itsoffset", "0.5", "-i", str(picture), "-i", str(sound), "-map", "0", "-map", "1", "-c", "copy",
            str(clip))
    out = tmp_path / "out.mp4"
    _blurcast_run(clip, out)
    offsets = av_offsets_ms(out)
    assert len(offsets) == 4 and all(abs(offset) <= 2 for offset in offsets), offsets
    assert _start(out, "v") == pytest.approx(_start(clip, "v"), abs=0.002)


def test_a_constant_rate_recording_is_left_as_the_encoder_wrote_it(tmp_path):
    steady = tmp_path / "steady.mp4"
    _ffmpeg("-f", "lavfi", "-t", "2", "-i", FLASHES, "-c:v", "libx264", "-preset", "veryfast", str(steady))
    source = VideoSource(str(steady))
    while source.read() is not None:
        pass
    assert not needs_retiming(source.source_times(), float(source.fps_fraction))
    out = tmp_path / "out.mp4"
    printed = _blurcast_run(steady, out)
    assert "source time" not in printed


def test_the_dev_clip_as_a_phone_would_record_it_keeps_every_frame_private(dev_clip, dev_gt, tmp_path):
    """Real faces at a variable rate: the output's frames are the input's one for one (the scorer compares them in
    order), no bystander shown, and the picture lasts as long as the input's."""
    clip = tmp_path / "dev_vfr.mp4"
    _ffmpeg("-i", str(dev_clip), "-vf", "setpts='if(lt(N,138),N/30,138/30+(N-138)/15)/TB'", "-fps_mode", "passthrough",
            "-video_track_timescale", "90000", "-c:v", "libx264", "-crf", "12", "-c:a", "copy", str(clip))
    out = tmp_path / "out.mp4"
    _blurcast_run(clip, out)
    report = score_independently(clip, out, dev_gt, tmp_path)
    assert report["frames_output"] == report["frames_input"] == 275
    assert report["bystander_visible"] == 0, report
    times_in, times_out = VideoSource(str(clip)), VideoSource(str(out))
    while times_in.read() is not None and times_out.read() is not None:
        pass
    gaps_in, gaps_out = np.diff(times_in.frame_times), np.diff(times_out.frame_times)
    assert np.allclose(gaps_in, gaps_out, atol=0.002), "each frame lasts as long as in the input"


def test_retime_refuses_a_frame_count_that_does_not_match_and_leaves_the_file(tmp_path):
    steady = tmp_path / "steady.mp4"
    _ffmpeg("-f", "lavfi", "-t", "1", "-i", FLASHES, "-c:v", "libx264", "-preset", "veryfast", str(steady))
    before = steady.read_bytes()
    with pytest.raises(RetimeError, match="30 video frames"):
        retime(steady, [k / 15 for k in range(29)], {})
    assert steady.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["steady.mp4"], "no temporary file left"


def test_times_a_file_cannot_carry_are_refused():
    assert usable_times([0.0, 0.033, 0.066])
    assert not usable_times([0.0, 0.033, 0.033]), "two frames at one time"
    assert not usable_times([0.0, 0.066, 0.033]), "going back (a damaged file, a stream's wrap)"
    assert not usable_times([0.0, float("nan")])


def test_only_a_drift_over_half_a_frame_asks_for_retiming():
    steady = [k / 30 for k in range(300)]
    assert not needs_retiming(steady, 30.0)
    assert not needs_retiming([t + 0.016 for t in steady], 30.0), "under half a frame late: left"
    assert needs_retiming([t + 0.017 for t in steady], 30.0)
    assert needs_retiming([k / 30 for k in range(150)] + [5 + k / 15 for k in range(150)], 20.0)


def test_a_recording_is_retimed_only_once_its_encoder_has_finished(tmp_path):
    """`keep_source_times` leaves a recording still being written alone (a Ctrl-C may land while it finishes)."""
    from engine.config import Settings
    from engine.stages.anonymize import Anonymizer
    from engine.stages.sink import FileSink

    sink = FileSink(tmp_path / "out.mp4", 64, 48, Fraction(30))
    for index in range(3):
        sink.write(Anonymizer(Settings()).whole(np.zeros((48, 64, 3), np.uint8), index))
    assert sink.keep_source_times([0.5, 0.6, 0.7]) is False, "not closed yet"
    sink.close()
    assert sink.keep_source_times([0.5, 0.6, 0.7]) is True  # a video half a second after its file's start
    assert _start(tmp_path / "out.mp4", "v") == pytest.approx(0.5, abs=0.002)
    assert len(_frames(tmp_path / "out.mp4")) == 3


def test_a_clip_trimmed_by_an_edit_list_keeps_every_frame_and_is_not_called_cut(dev_clip, tmp_path):
    """A clip trimmed on a phone keeps its frames and says where to start (an edit list); its header still counts the
    frames before the cut. Before: "the input ended at frame 257 of the 275 its header announces (truncated?)", and
    the sound's cut that follows such a warning dropped frames off the recording's end."""
    clip = tmp_path / "trimmed.mp4"
    _ffmpeg("-ss", "0.6", "-i", str(dev_clip), "-c", "copy", str(clip))
    read = len(_frames(clip))
    out = tmp_path / "out.mp4"
    printed = _blurcast_run(clip, out)
    assert "header announces" not in printed
    assert len(_frames(out)) == read


def test_a_stream_recording_whose_times_jump_keeps_a_constant_rate(tmp_path):
    """An MPEG-TS recorded across a sender's restart: its times jump 47 s ahead. FFmpeg's sound copy closes such a jump,
    OpenCV's frame times keep it: retimed, the picture froze 47 s and then ran 47 s away from its sound."""
    steady, first, second, joined = (tmp_path / name for name in ("steady.mp4", "1.ts", "2.ts", "joined.ts"))
    _ffmpeg("-f", "lavfi", "-t", "5", "-i", FLASHES, "-f", "lavfi", "-t", "5", "-i", BEEPS.format(start=0),
            "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-c:a", "aac", str(steady))
    _ffmpeg("-i", str(steady), "-t", "2.5", "-c:v", "libx264", "-preset", "veryfast", "-c:a", "aac", "-f", "mpegts",
            str(first))
    _ffmpeg("-ss", "2.5", "-i", str(steady), "-c:v", "libx264", "-preset", "veryfast", "-c:a", "aac",
            "-output_ts_offset", "50", "-f", "mpegts", str(second))
    joined.write_bytes(first.read_bytes() + second.read_bytes())
    out = tmp_path / "out.mkv"
    printed = _blurcast_run(joined, out)
    assert "jump by" in printed and "source time" not in printed
    offsets = av_offsets_ms(out)
    assert len(offsets) == 5 and all(abs(offset) < 100 for offset in offsets), offsets
