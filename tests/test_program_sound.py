"""The outputs' clock across source switches (engine/stages/sources/audio.py `ProgramSound`), and how an output's sound
feed takes the switch (`SoundFeed`): unit tests on plain taps and pipes, no FFmpeg."""

from __future__ import annotations

import os
import threading
import time

import numpy as np

from engine.stages.source import VideoSource
from engine.stages.sources.audio import BYTES_PER_SAMPLE, RATE, AudioTap, ProgramSound, SoundFeed

FPS = 30
PER_FRAME = RATE // FPS  # 1600 samples


class Source:
    """A source as ProgramSound sees it: its sound tap (None: a camera's picture only)."""

    def __init__(self, tap: AudioTap | None) -> None:
        self.audio, self.has_audio = tap, tap is not None


def _until(chunks, first_sample: int, timeout: float = 2.0) -> list[tuple[int, bytes]]:
    got, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        item = chunks.get(timeout=deadline - time.monotonic())
        got.append(item)
        if item[0] >= first_sample and item[1]:
            return got
    raise AssertionError(f"no chunk at {first_sample}: {[(f, len(p)) for f, p in got]}")


def _play(program: ProgramSound, numbers, positions) -> list[int | None]:
    out = []
    for number, position in zip(numbers, positions, strict=True):
        index = program.index(number)
        program.placed(index, position)
        out.append(index)
    return out


def test_a_source_switched_in_after_a_camera_follows_the_frames_placed_meanwhile():
    """A file, then a camera (no frame numbers, no sound) for 5 frames, then a file again: its frame 0 is the
    program's 15, where the outputs are, and its sound sample 0 goes there too (review: it had gone to 10, before its
    picture, where silence had been written)."""
    first = AudioTap()
    program = ProgramSound(Source(first), FPS)
    assert program.tap is first  # the outputs opened on the first source hold its tap
    outputs = first.subscribe()
    assert _play(program, range(10), range(10)) == list(range(10))
    program.switched(Source(None))
    assert _play(program, [None] * 5, range(10, 15)) == [None] * 5
    third = AudioTap()
    program.switched(Source(third))
    assert _play(program, [0, 1], [15, 16]) == [15, 16]
    third.publish(0, bytes(1024 * BYTES_PER_SAMPLE))
    got = _until(outputs, 15 * PER_FRAME)
    assert (10 * PER_FRAME, b"") in got and (15 * PER_FRAME, b"") in got  # each switch's cut, where it happened
    assert got[-1][0] == 15 * PER_FRAME
    program.close()


def test_sound_before_the_new_sources_first_frame_waits_for_its_place_and_none_goes_before_the_cut():
    """A new source's sound that comes before its first frame is held until that frame gives its place; sound of it
    that would land before the switch (a video that starts after its sound) is cut there."""
    first = AudioTap()
    program = ProgramSound(Source(first), FPS)
    outputs = first.subscribe()
    _play(program, range(30), range(30))
    new = AudioTap()
    program.switched(Source(new))
    new.publish(-800, bytes(2400 * BYTES_PER_SAMPLE))  # from half a frame before its frame 0
    time.sleep(0.1)
    assert outputs.get(timeout=1) == (30 * PER_FRAME, b"")  # the cut, and nothing else yet: the place is unknown
    assert outputs.empty()
    _play(program, [0], [30])
    first_sample, pcm = outputs.get(timeout=2)
    assert first_sample == 30 * PER_FRAME and len(pcm) == 1600 * BYTES_PER_SAMPLE  # its head before the cut dropped
    program.close()


def _fed(chunks: list[tuple[int, bytes]], until: int) -> np.ndarray:
    """What an output's sound feed writes for `chunks` published before its first frame, closed with its picture
    ending at sample `until` (mono view of the first channel)."""
    tap = AudioTap()
    read, write = os.pipe()
    placement: list = [None]
    feed = SoundFeed(tap, write, "test", lambda: placement[0])
    for first, pcm in chunks:
        tap.publish(first, pcm)
    time.sleep(0.2)  # the feed holds them: no frame placed yet
    placement[0] = (0, until)
    out = bytearray()

    def drain() -> None:
        while data := os.read(read, 1 << 16):
            out.extend(data)
    reader = threading.Thread(target=drain)
    reader.start()
    feed.close(wait_s=2.0)
    reader.join(timeout=5)
    os.close(read)
    return np.frombuffer(bytes(out), np.int16)[::2]


def _tone(samples: int, value: int) -> bytes:
    return np.full((samples, 2), value, np.int16).tobytes()


def test_an_output_keeps_the_sound_it_holds_unless_a_switch_says_otherwise():
    """Sound that overlaps what an output holds (a loop's sound starting a little before its picture, a reconnect's
    first merged chunk) is cut at its head, the held sound keeping its place; only at a switch's cut does the new
    source's sound replace what is held from there on (review: the first version replaced on any overlap)."""
    old, new = _tone(2000, 100), _tone(2000, 200)
    overlap = _fed([(0, old), (1000, new)], until=3000)
    assert len(overlap) == 3000
    assert (overlap[:2000] == 100).all() and (overlap[2000:] == 200).all()
    switched = _fed([(0, old), (1000, b""), (1000, new)], until=3000)
    assert len(switched) == 3000
    assert (switched[:1000] == 100).all() and (switched[1000:] == 200).all()


class TimedSource(Source):
    def __init__(self, tap: AudioTap | None, fps: float) -> None:
        super().__init__(tap)
        self.info = type("Info", (), {"fps": fps})()


def test_a_source_at_another_rate_is_placed_on_the_outputs_rate():
    """Outputs keep the first source's rate (30 fps). A 25 fps source switched in: its frame j goes to the program
    frame at its time (j x 1.2 frames on), and its sound at the same offset, so that picture and sound stay together
    (review: numbered one a frame, its picture ran at 25 frames a second of a 30 fps output and its sound drifted
    away from it; an output started after the switch at 25 fps lost its sound)."""
    first = AudioTap()
    program = ProgramSound(TimedSource(first, 30.0), 30.0)
    outputs = first.subscribe()
    _play(program, range(30), range(30))
    new = AudioTap()
    program.switched(TimedSource(new, 25.0))
    numbers = _play(program, range(26), range(30, 56))
    assert numbers[0] == 30 and numbers[5] == 36 and numbers[25] == 60  # 0.2 s and 1 s into it: 6 and 30 frames
    new.publish(RATE, bytes(1024 * BYTES_PER_SAMPLE))  # its sound at 1 s, with its frame 25
    got = _until(outputs, 60 * PER_FRAME)
    assert got[-1][0] == 60 * PER_FRAME == numbers[25] * PER_FRAME
    program.close()


class SoundlessOnError(VideoSource):
    """The dev clip, whose sound cannot be probed (a broken ffprobe, a file gone bad): only its picture plays."""

    @property
    def has_audio(self) -> bool:
        raise RuntimeError("ffprobe failed")


class Frames:
    name = "frames"

    def __init__(self) -> None:
        self.shapes: list[tuple[int, ...]] = []

    def write(self, frame) -> None:
        self.shapes.append(frame.image.shape)

    def close(self) -> None:
        pass


def test_a_source_whose_sound_fails_still_switches_and_the_frames_go_on(dev_clip):
    """A sound error at a switch is logged; the picture switches and frames keep going out (before the guard, an error
    in the reader's thread would have ended the source: no frame out again)."""
    from engine.config import Settings
    from engine.pipeline import Pipeline
    from engine.runner import Engine

    sink = Frames()
    engine = Engine(Settings(), VideoSource(str(dev_clip), loop=True), [sink], pipeline=Pipeline(Settings()))
    thread = threading.Thread(target=engine.run_live, daemon=True)
    thread.start()
    try:
        time.sleep(1.0)
        engine.replace_source(SoundlessOnError(str(dev_clip), loop=True))
        time.sleep(0.3)
        sent = len(sink.shapes)
        time.sleep(1.0)
        assert thread.is_alive() and engine.source_state == "running"
        assert len(sink.shapes) > sent + 10, "frames stopped after the switch"
        assert isinstance(engine.source, SoundlessOnError)
    finally:
        engine.stop_event.set()
        thread.join(timeout=10)
        engine.close()
