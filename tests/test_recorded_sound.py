"""The sound of a recording (engine/stages/sink.py, FileSink): copied where the container takes it, made AAC where it
does not. Before, an MPEG-TS input (a recorded SRT stream: AAC with ADTS headers) or a camera's PCM sound, recorded to
.mp4, killed the encoder on its first sound packet: the run ended with exit 2 and its frames split over two files,
the second without sound."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from engine.stages.sink import audio_codec_args, audio_codecs
from tests.conftest import REPO

pytestmark = pytest.mark.skipif(not (shutil.which("ffmpeg") and shutil.which("ffprobe")),
                                reason="needs ffmpeg and ffprobe on PATH")


def _streams(path: Path) -> list[str]:
    done = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_type,codec_name", "-of", "csv=p=0",
                           str(path)], capture_output=True, text=True, check=True)
    return sorted(line.strip(",") for line in done.stdout.split())


def _video_frames(path: Path) -> int:
    done = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-count_packets", "-show_entries",
                           "stream=nb_read_packets", "-of", "csv=p=0", str(path)], capture_output=True, text=True)
    return int(done.stdout.strip().strip(","))


@pytest.mark.parametrize(("suffix", "sound", "expected"), [
    (".ts", ["-c:a", "copy"], "aac,audio"),  # AAC in ADTS, as an SRT or RTMP recording holds it
    (".mov", ["-c:a", "pcm_s16le"], "aac,audio"),  # a camera's uncompressed sound
    (".mkv", ["-c:a", "libopus"], "opus,audio"),
    (".mkv", ["-c:a", "ac3"], "ac3,audio"),  # a camcorder's or broadcast's: MP4's index had to wait for it
])
def test_the_dev_clip_recorded_to_mp4_from_any_container_keeps_its_sound(dev_clip, tmp_path, suffix, sound, expected):
    clip = tmp_path / f"clip{suffix}"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(dev_clip), "-c:v", "copy", *sound, str(clip)], check=True)
    out = tmp_path / "out.mp4"
    done = subprocess.run([sys.executable, "-m", "blurcast", "run", str(clip), "-o", str(out), "--no-facebank"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.glob("out*")) == ["out.mp4"], "one recording, not split by a dead encoder"
    assert _video_frames(out) == 275
    assert expected in _streams(out)


def test_sound_is_copied_where_the_container_takes_it():
    assert audio_codec_args(["aac"], ".mp4") == ["-c:a", "copy", "-bsf:a:0", "aac_adtstoasc"]
    assert audio_codec_args(["mp3", "aac"], ".mp4") == ["-c:a", "copy", "-bsf:a:1", "aac_adtstoasc"], "AAC's alone"
    assert audio_codec_args(["aac"], ".mkv") == ["-c:a", "copy"]
    assert audio_codec_args(["pcm_s16le"], ".mkv") == ["-c:a", "copy"]
    assert audio_codec_args(["pcm_s16le"], ".mov") == ["-c:a", "copy"]
    assert audio_codec_args(["pcm_s16le"], ".mp4")[:3] == ["-c:a", "aac", "-b:a"]
    assert audio_codec_args(["aac", "opus"], ".mp4")[:2] == ["-c:a", "copy"], "each codec is one MP4 takes"
    assert audio_codec_args(["aac", "pcm_s24le"], ".mp4")[:2] == ["-c:a", "aac"], "one it does not: all made AAC"
    assert audio_codec_args([], ".mp4") == ["-c:a", "copy"], "no sound: nothing mapped"
    assert audio_codec_args(["mp3"], ".m4v")[:2] == ["-c:a", "aac"], "the iPod muxer has no MP3"
    assert audio_codec_args(["pcm_mulaw"], ".mkv")[:2] == ["-c:a", "aac"], "G.711: Matroska could not be retimed"


def test_the_codecs_are_read_from_the_file(dev_clip, tmp_path):
    assert audio_codecs(str(dev_clip)) == ["aac"]
    clip = tmp_path / "two.ts"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(dev_clip), "-map", "0:v", "-map", "0:a", "-map", "0:a",
                    "-c:v", "copy", "-c:a:0", "copy", "-c:a:1", "libmp3lame", str(clip)], check=True)
    assert audio_codecs(str(clip)) == ["aac", "mp3"], "each stream once (an MPEG-TS lists them under its program too)"
    assert audio_codecs(str(tmp_path / "absent.mp4")) == []
