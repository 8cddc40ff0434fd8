"""The tracker alone, on the inputs a real run gave it: record once, replay against any code, compare to the bit.

    python bench/tracker_replay.py record CLIP OUT.pkl [--mode live|file] [--loops 2]
    python bench/tracker_replay.py time OUT.pkl                  # CPU ms a frame, median of 5 replays
    python bench/tracker_replay.py dump OUT.pkl STATES.pkl       # every track and candidate, frame by frame
    python bench/tracker_replay.py compare STATES_A.pkl STATES_B.pkl

`record` runs the pipeline (onnxruntime, live or file mode) over the clip and keeps what `FaceTracker.update` was
given each frame. `time` and `dump` replay that into a fresh tracker of the code this script is run from: run
the copy in another checkout (`git worktree add /tmp/base REV`, then `python /tmp/base/bench/...`, or
PYTHONPATH) to compare two versions. `compare` names the first frame and field where two dumps differ.
Used for stop 19's tracker in one stack (docs/measurements.md): identical on six recordings.
"""

from __future__ import annotations

import argparse
import pickle
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TRACK_FIELDS = ("id", "mean", "cov", "score", "age", "lost_frames", "lost_seconds", "xyxy", "safety_box", "landmarks")


def record(clip: str, out: str, mode: str, loops: int) -> None:
    import cv2

    from engine.config import Settings
    from engine.pipeline import Pipeline

    settings = Settings(backend="onnxruntime")
    pipeline = Pipeline(settings)
    pipeline.offline = mode == "file"
    calls: list = []
    update = pipeline.tracker.update

    def recording(detections, dt, frame_size=None):
        calls.append((detections, dt, frame_size))
        return update(detections, dt, frame_size)

    pipeline.tracker.update = recording
    cap, frames = cv2.VideoCapture(clip), []
    while (frame := cap.read()[1]) is not None:
        frames.append(frame)
    for _ in range(loops):
        for index, frame in enumerate(frames):
            pipeline.process(frame.copy(), index, 1 / 30)
    pipeline.close()
    Path(out).write_bytes(pickle.dumps({"offline": pipeline.offline, "settings": settings, "calls": calls}))
    print(f"{len(calls)} frames, {sum(len(c[0]) for c in calls)} detections -> {out}")


def replay(recorded: dict, keep_states: bool) -> list:
    from engine.stages.track import FaceTracker

    settings = recorded["settings"]
    tracker = FaceTracker(settings.confidence, settings.low_confidence, settings.hold_seconds)
    tracker.corroborated_starts = tracker.scene_motion = recorded["offline"]
    states = []
    for detections, dt, frame_size in recorded["calls"]:
        tracks = tracker.update(detections, dt, frame_size)
        if keep_states:
            states.append([(t.track_id, t.mean.tobytes(), t.cov.tobytes(), t.score, t.age, t.lost_frames,
                            t.lost_seconds, t.xyxy.tobytes(), t.safety_box().tobytes(),
                            np.asarray(t.landmarks).tobytes()) for t in tracks])
            states.append([(c.box.tobytes(), c.score, c.sightings, c.strong, c.age) for c in tracker._candidates])
    return states


def compare(a: list, b: list) -> int:
    for k, (x, y) in enumerate(zip(a, b, strict=True)):
        if x == y:
            continue
        kind = "tracks" if k % 2 == 0 else "candidates"
        print(f"frame {k // 2}: {kind} differ ({len(x)} against {len(y)})")
        for one, other in zip(x, y, strict=False):
            if one != other and kind == "tracks":
                names = [n for n, p, q in zip(TRACK_FIELDS, one, other, strict=True) if p != q]
                print(f"  track {one[0]}: {', '.join(names)}")
                break
        return 1
    print(f"identical: {len(a) // 2} frames")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record")
    rec.add_argument("clip")
    rec.add_argument("out")
    rec.add_argument("--mode", choices=("live", "file"), default="live")
    rec.add_argument("--loops", type=int, default=2)
    sub.add_parser("time").add_argument("recording")
    dump = sub.add_parser("dump")
    dump.add_argument("recording")
    dump.add_argument("states")
    cmp = sub.add_parser("compare")
    cmp.add_argument("a")
    cmp.add_argument("b")
    args = parser.parse_args()
    if args.command == "record":
        record(args.clip, args.out, args.mode, args.loops)
        return 0
    if args.command == "compare":
        return compare(pickle.loads(Path(args.a).read_bytes()), pickle.loads(Path(args.b).read_bytes()))
    recorded = pickle.loads(Path(args.recording).read_bytes())
    if args.command == "dump":
        Path(args.states).write_bytes(pickle.dumps(replay(recorded, keep_states=True)))
        return 0
    runs = []
    for _ in range(5):
        started = time.process_time()
        replay(recorded, keep_states=False)
        runs.append((time.process_time() - started) / len(recorded["calls"]) * 1000)
    print(f"tracker CPU ms a frame: median {statistics.median(runs):.2f}, min {min(runs):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
