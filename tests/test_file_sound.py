"""A file's sound for the stream outputs of a file played live (engine/stages/sources/file_sound.py): placed on the
picture's frame numbers, paced by the frames read, loop after loop, silence where it cannot be decoded."""

from __future__ import annotations

import queue
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from engine.stages.source import file_clock
from engine.stages.sources.audio import BYTES_PER_SAMPLE, RATE, PlacedSound
from engine.stages.sources.file_sound import LEAD_S, FileSound
from tests.stream_util import sync_inputs

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None,
                                reason="needs ffmpeg and ffprobe (Debian's ffmpeg)")

FPS = 30


def _clip(path: Path, video_delay_s: float = 0.0, sound: bool = True) -> Path:
    """A 3 s clip (a flash and a beep every second); its video starting `video_delay_s` after its sound."""
    inputs = [a for a in sync_inputs(160, 120, FPS, 3) if a != "-re"]
    video, audio = inputs[:6], inputs[6:]  # -f lavfi -t 3 -i GRAPH, twice
    delay = ["-itsoffset", str(video_delay_s)] if video_delay_s else []
    cmd = ["ffmpeg", "-v", "error", "-y", *delay, *video, *(audio if sound else []), "-c:v", "libx264",
           "-preset", "ultrafast", *(["-c:a", "aac"] if sound else []), str(path)]
    subprocess.run(cmd, check=True)
    return path


def _drain(chunks: queue.Queue, settle_s: float = 0.5) -> list[tuple[int, bytes]]:
    """What the tap has published, once it stops coming (it waits for frames read)."""
    out: list[tuple[int, bytes]] = []
    while True:
        try:
            out.append(chunks.get(timeout=settle_s))
        except queue.Empty:
            return out


def test_sound_is_placed_on_the_picture_and_paced_by_the_frames_read(tmp_path: Path) -> None:
    clip = _clip(tmp_path / "late_video.mkv", video_delay_s=0.5)  # MP4 from FFmpeg drops the offset
    offset = file_clock(str(clip))[0]
    assert offset == pytest.approx(0.5, abs=0.05)
    sound = FileSound(str(clip), FPS, video_start_s=offset)
    chunks = sound.audio.subscribe()
    try:
        first = _drain(chunks)
        assert first, "sound up to LEAD_S ahead is published before any frame is read"
        # the sound starts half a second before frame 0: its first sample sits at -0.5 s on the frames' clock
        assert first[0][0] == -round(offset * RATE)
        end = first[-1][0] + len(first[-1][1]) // BYTES_PER_SAMPLE
        assert end <= (LEAD_S + 0.05) * RATE, "no further ahead of the frames read than LEAD_S"
        sound.frames_read(45)  # 1.5 s of picture read
        more = _drain(chunks)
        end = more[-1][0] + len(more[-1][1]) // BYTES_PER_SAMPLE
        assert (1.5 + LEAD_S) * RATE <= end <= (1.5 + LEAD_S + 0.05) * RATE
        samples = [c[0] for c in first + more]
        assert samples == sorted(samples) and all(  # contiguous: no sample lost or repeated
            b[0] == a[0] + len(a[1]) // BYTES_PER_SAMPLE for a, b in zip(first + more, (first + more)[1:],
                                                                        strict=False))
    finally:
        sound.close()


def test_each_loop_starts_at_its_first_frame_and_ends_the_loop_before(tmp_path: Path) -> None:
    clip = _clip(tmp_path / "clip.mp4")
    # the picture wraps at frame 81 (2.7 s) while the sound goes on to 3 s: a wrap between two chunks' starts, and the
    # header's count (`frames`) says where before the wrap is known (sound runs LEAD_S ahead of the frames read)
    sound = FileSound(str(clip), FPS, frames=81)
    chunks = sound.audio.subscribe()
    try:
        sound.frames_read(81)
        first_loop = _drain(chunks)
        sound.loop_started(81)
        sound.frames_read(200)
        published = first_loop + _drain(chunks)
        wrap = round(81 * RATE / FPS)
        assert wrap % 1024, "the test wants a wrap inside a chunk"
        second = next(i for i, c in enumerate(published) if c[0] == wrap)  # the second loop starts at its frame
        assert all(c[0] + len(c[1]) // BYTES_PER_SAMPLE <= wrap for c in published[:second]), \
            "the first loop's sound ends where the second loop's picture starts, not past it"
        assert published[second - 1][0] + len(published[second - 1][1]) // BYTES_PER_SAMPLE == wrap
    finally:
        sound.close()


def test_a_sound_that_cannot_be_decoded_is_silence_in_step_with_the_frames(tmp_path: Path) -> None:
    clip = _clip(tmp_path / "mute.mp4", sound=False)  # no sound stream: FFmpeg's decoder fails at once
    sound = FileSound(str(clip), FPS)
    chunks = sound.audio.subscribe()
    try:
        sound.frames_read(30)
        published = _drain(chunks)
        assert published and all(not any(pcm) for _, pcm in published), "silence, not nothing"
        end = published[-1][0] + len(published[-1][1]) // BYTES_PER_SAMPLE
        assert (1 + LEAD_S) * RATE <= end <= (1 + LEAD_S + 0.05) * RATE
        started = time.monotonic()
    finally:
        sound.close()
    assert time.monotonic() - started < 5, "closing is prompt"


def _frames(n: int) -> list:
    """Plain frames through the anonymizer, as every frame a sink gets."""
    import numpy as np

    from engine.config import Settings
    from engine.stages.anonymize import Anonymizer

    anonymizer = Anonymizer(Settings())
    return [anonymizer.apply(np.full((120, 160, 3), (i * 7) % 255, np.uint8), i, []) for i in range(n)]


def _count(path: Path, kind: str) -> int:
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", kind, "-count_packets", "-show_entries",
                          "stream=nb_read_packets", "-of", "csv=p=0", str(path)], capture_output=True, text=True)
    return int(out.stdout.split()[0].strip(",")) if out.stdout.strip() else 0


def test_a_recording_whose_sound_goes_quiet_never_holds_the_engine(tmp_path: Path) -> None:
    """FFmpeg reads its inputs in turn: it takes no picture that runs ~1 s ahead of its sound, and no sound while it
    waits for picture. The recording's picture is written on the engine's frame loop, so sound that went quiet (a
    source switched, a phone's sound gone, shutdown) froze the whole engine, and so did two seconds of sound queued
    before the first frame (a full pipe, FFmpeg waiting for that frame). Now silence fills in, the pipe is never
    waited on, and a segment after the encoder's death keeps its sound too."""
    import threading

    from engine.stages.sink import FileSink
    from engine.stages.sources.audio import AudioTap

    tap = AudioTap()
    sink = FileSink(tmp_path / "rec.mp4", 160, 120, FPS, audio=tap)
    frames = _frames(90)
    tone = bytes(range(256)) * 16  # 1024 samples of something
    for k in range(round(2 * RATE / 1024)):  # two seconds of sound before the first frame, then none at all
        tap.publish(k * 1024, tone)

    def record() -> None:
        for i, frame in enumerate(frames):
            if i == 45:
                sink.restart()  # as after the encoder died: a new file, its sound placed from its first frame
            sink.write_live(frame, i, source_index=i)
        sink.close()

    writer = threading.Thread(target=record, daemon=True)
    started = time.monotonic()
    writer.start()
    writer.join(timeout=60)
    assert not writer.is_alive(), "the recording held the engine: picture and sound waited on each other"
    assert time.monotonic() - started < 30
    first, second = sink.segments
    assert _count(first, "v") > 0 and _count(first, "a") > 0  # killed, as a dead encoder is: what it had flushed
    # the second file: every frame, and its 1.5 s of sound (silence where none came; AAC packets of 1024 samples)
    assert _count(second, "v") == 45 and _count(second, "a") >= 50


def _sound_seconds(path: Path) -> tuple[float, float]:
    """(the recording's sound duration, the RMS of its last half second) from its decoded samples."""
    import numpy as np

    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-map", "0:a:0", "-ac", "1", "-ar", str(RATE),
                          "-f", "f32le", "-"], capture_output=True, check=True).stdout
    pcm = np.frombuffer(raw, np.float32)
    return len(pcm) / RATE, float(np.sqrt(np.mean(pcm[-RATE // 2:] ** 2))) if len(pcm) else 0.0


def test_a_recording_keeps_its_sound_placed_across_an_outage_longer_than_it_fills(tmp_path: Path) -> None:
    """The source gone 14 s: the recording fills 10 s with its last frame and skips the rest, and its sound must skip
    the same. The sound comes back before the picture that says so (a review, stop 38: it was placed with the old
    start, the outage written as silence and the sound after it cut)."""
    import math
    import struct

    from engine.stages.sink import MAX_FILL_FRAMES, FileSink
    from engine.stages.sources.audio import AudioTap

    tap = AudioTap()
    sink = FileSink(tmp_path / "rec.mp4", 160, 120, FPS, audio=tap)
    per_frame = RATE // FPS
    tone = b"".join(struct.pack("<hh", v, v) for v in (round(8000 * math.sin(2 * math.pi * 440 * k / RATE))
                                                       for k in range(per_frame)))
    frames = _frames(60)
    numbers = [*range(30), *range(450, 480)]  # 420 frames of outage: 300 filled, 120 skipped
    for frame, number in zip(frames, numbers, strict=True):
        tap.publish(number * per_frame, tone)  # the sound leads its picture, as a source's does
        sink.write_live(frame, number, source_index=number)
    sink.close()
    video_s = (30 + MAX_FILL_FRAMES + 30) / FPS
    sound_s, tail_rms = _sound_seconds(sink.path)
    assert _count(sink.path, "v") == 360
    assert abs(sound_s - video_s) < 0.3, f"sound {sound_s:.2f} s against picture {video_s:.2f} s"
    assert tail_rms > 1000 / 32768, "the sound after the outage is there, not cut"


def test_sound_placed_for_a_closing_output_stops_at_its_picture_end() -> None:
    """A closing output's sound ends where its picture does: a chunk past the end is dropped with no silence up to
    it (it had been padded up to, which left a recording up to 2 s of silence past its last frame), one across the
    end is cut there, a gap before the end is still filled."""
    import io

    placed, pipe = PlacedSound(), io.BytesIO()
    chunk = b"\x01" * (1024 * BYTES_PER_SAMPLE)
    placed.write(pipe, 0, chunk, 0, end=1500)
    placed.write(pipe, 2048, chunk, 0, end=1500)  # wholly past the end
    assert placed.written == 1024 and len(pipe.getvalue()) == 1024 * BYTES_PER_SAMPLE
    placed.write(pipe, 1200, chunk, 0, end=1500)  # a gap of 176 samples, then cut at the end
    assert placed.written == 1500 and len(pipe.getvalue()) == 1500 * BYTES_PER_SAMPLE
    assert pipe.getvalue()[1024 * BYTES_PER_SAMPLE: 1200 * BYTES_PER_SAMPLE] == bytes(176 * BYTES_PER_SAMPLE)
