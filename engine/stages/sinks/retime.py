"""A recording's frames put back at their source times, so that the sound copied beside them stays in sync.

The file sink's encoder reads raw frames from a pipe, which carry no timestamps, so it writes frame k at k / fps.
That drifts from the sound where the input's rate varies (a phone in low light drops from 30 to 15 fps: 2.3 s off,
measured, on such a clip), and is off throughout where the video starts after the sound (the dev clip's by 0.84 s,
so its lips moved 0.84 s before their words). After the encoder has finished, this remuxes the file (no
re-encode, PyAV) with each video packet at its source frame's time and the sound's packets as they were. Every frame
stays, once and in order, so a frame-by-frame comparison with the input (score_video.py) still lines up.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

TIME_BASE = Fraction(1, 90000)  # MPEG's clock: a source time in milliseconds keeps its precision
ONE_FRAME_S = 1 / 30  # how long a video of one frame shows it (it has no period of its own)
DRIFT_FRAMES = 0.5  # a frame more than half a period from k / fps is shown with another frame's sound


class RetimeError(RuntimeError):
    """The recording could not be remuxed; it is left as it was (playable, at a constant rate)."""


def needs_retiming(times: Sequence[float], fps: float) -> bool:
    """Whether a constant `fps` puts any frame more than half a period from its source time."""
    period = 1.0 / fps
    return any(abs(t - k * period) > DRIFT_FRAMES * period for k, t in enumerate(times))


def usable_times(times: Sequence[float]) -> bool:
    """Source times a file can carry: finite and strictly increasing (a damaged file's may not be)."""
    return all(math.isfinite(t) for t in times) and all(b > a for a, b in itertools.pairwise(times))


def retime(path: Path, times: Sequence[float], muxer_options: dict[str, str]) -> float:
    """Rewrite `path` so its video frame k (presentation order) starts at `times[k]` seconds. The file must hold
    exactly len(times) video frames. Atomic: a failure leaves `path` untouched. Returns where the video now ends
    (s, on the file's clock)."""
    import av  # only here: a constant-rate recording never needs it

    tmp = path.with_name(f".{path.stem}.retiming{path.suffix}")
    try:
        with av.open(str(path)) as source:
            video = source.streams.video[0]
            decode_order = [p.pts for p in source.demux(video) if p.size]
        if len(decode_order) != len(times) or None in decode_order:
            raise RetimeError(f"{path} holds {len(decode_order)} video frames with times, {len(times)} were timed")
        slot = {pts: k for k, pts in enumerate(sorted(decode_order))}
        # Frames decoded before their turn (B-frames' references): decode position j is given the time of frame
        # j - delay, so that every frame is decoded no later than it is shown.
        delay = max(j - slot[pts] for j, pts in enumerate(decode_order))
        end = _remux(path, tmp, slot, min(decode_order), delay, times, muxer_options)
        os.replace(tmp, path)
        return end
    except (av.FFmpegError, OSError, ValueError) as exc:  # ValueError: a codec PyAV's muxer does not take
        raise RetimeError(f"could not put the frames of {path} at their source times: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)


def _remux(path: Path, tmp: Path, slot: dict[int, int], first_pts: int, delay: int, times: Sequence[float],
           muxer_options: dict[str, str]) -> float:
    import av

    with av.open(str(path)) as source, av.open(str(tmp), "w", options=muxer_options) as target:
        video = source.streams.video[0]
        streams = {video.index: target.add_stream_from_template(video)}
        for audio in source.streams.audio:
            streams[audio.index] = target.add_stream_from_template(audio)
        streams[video.index].time_base = TIME_BASE
        # Where the encoder's file starts its video (0, or later where its muxer moved every stream so that no
        # time is negative): the sound copied beside it is on that clock, and the frames stay on it.
        start = float(first_pts * video.time_base)
        decoded = 0
        for packet in source.demux(*[source.streams[i] for i in streams]):
            if not packet.size:  # the demuxer's end-of-stream packets
                continue
            if packet.stream.index == video.index:
                k = slot[packet.pts]
                packet.pts = _ticks(start + times[k])
                packet.dts = _ticks(start + _time_at(decoded - delay, times))
                packet.duration = _ticks(_period(times, k))
                packet.time_base = TIME_BASE
                decoded += 1
            packet.stream = streams[packet.stream.index]
            target.mux(packet)
    return start + times[-1] + _period(times, len(times) - 1)


def _time_at(k: int, times: Sequence[float]) -> float:
    """The source time of position `k`; before the first frame (a decode delay) it steps back by the shortest source
    period, so decode times stay increasing."""
    if k >= 0:
        return times[min(k, len(times) - 1)]
    shortest = min((b - a for a, b in itertools.pairwise(times)), default=ONE_FRAME_S)
    return times[0] + k * shortest


def _period(times: Sequence[float], k: int) -> float:
    """How long frame k is shown: until the next frame; the last one as long as the one before it."""
    if len(times) < 2:
        return ONE_FRAME_S
    return times[k + 1] - times[k] if k + 1 < len(times) else times[k] - times[k - 1]


def _ticks(seconds: float) -> int:
    return round(seconds / TIME_BASE)
