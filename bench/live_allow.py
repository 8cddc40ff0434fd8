"""The allowlisted person's share shown by a real live engine: its own threads, the embedding worker in real time.

    python bench/live_allow.py [--tree PATH ...] [--repeat 3] [--coast natural|forced] [--gt GT --photo PHOTO]
    python bench/live_allow.py --corpus [--only SUBSTR ...] [--tree PATH ...] [--repeat 2]

Each round runs, per `--tree` (a checkout; default this one), the dev clip played live (`Engine.run_live` on the
file at its rate, as `blurcast run CLIP --live -o out.mp4 --allow PHOTO --no-facebank` does) into a recording,
each in a fresh process, and scores the recording black-box with `shared/tools/score_video.py` (leak rate,
allowlisted visible). `--coast forced` coasts every other frame from the start (a CPU far behind) instead of
when the engine falls behind by itself, which on a 2-core machine happens in some runs and not in others.

`--corpus`: every clip of the corpus with an allowlisted person (bench/suite.py: the dev clip and the real clips),
the person enrolled as `bench/suite.py` enrols them (the dev clip's photo, or a crop of the gt's named frame), one
row a clip and round.

`bench/live_variants.py` and `bench/enrolled_frames.py` wait for every embedding (deterministic, in-process):
they cannot see a worker that falls behind. This one can, so its figures vary from run to run: compare trees
within a round. Needs the shared data (BLURCAST_DATA, default ../shared/data).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("BLURCAST_DATA", REPO.parent / "shared" / "data"))
SCORER = Path(os.environ.get("BLURCAST_SCORER", REPO.parent / "shared" / "tools" / "score_video.py"))
GT = DATA / "video_hamilton" / "gt.json"
PHOTO = DATA / "recognition_face_recognition" / "examples" / "lin-manuel-miranda.png"


def child(tree: Path, clip: Path, photo: Path, out: Path, forced: bool) -> None:
    """One live run of `tree`'s engine; prints its telemetry as JSON."""
    sys.path.insert(0, str(tree))
    from blurcast.assemble import build_engine
    from engine.service import ServeOptions, default_settings

    options = ServeOptions(source=str(clip), vcam=False, record=str(out), preview=False, outputs=[],
                           bitrate_kbps=4000, keyframe_s=2.0, preset="auto")
    engine = build_engine(options, default_settings(), use_facebank=False, allow=[str(photo)]).engine
    if forced:
        engine._coast_until = time.monotonic() + 1e9  # far behind from the first frame
    try:
        engine.run_live()
        telemetry = engine.telemetry()
    finally:
        engine.close()
    keys = ("fps", "frames", "dropped", "coasted_frames", "whole_frames", "latency_p95_ms")
    print(json.dumps({k: telemetry.get(k) for k in keys}))


def one_run(tree: Path, gt: Path, photo: Path, forced: bool, work: Path, clip: Path | None = None) -> dict:
    clip = clip or gt.parent / json.loads(gt.read_text())["video"]
    out = work / "out.mp4"
    done = subprocess.run([sys.executable, __file__, "--child", str(tree), str(clip), str(photo), str(out),
                           str(int(forced))], capture_output=True, text=True, cwd=tree, check=True)
    telemetry = json.loads(done.stdout.strip().splitlines()[-1])
    report = work / "score.json"
    subprocess.run([sys.executable, str(SCORER), "--input", str(clip), "--output", str(out), "--gt", str(gt),
                    "--json", str(report)], capture_output=True, check=True)
    score = json.loads(report.read_text())
    return {**telemetry, "allow_visible": score["allow_visible"], "leak_rate": score["leak_rate"]}


def main(argv: list[str] | None = None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--child":
        tree, clip, photo, out, forced = sys.argv[2:7]
        child(Path(tree), Path(clip), Path(photo), Path(out), forced == "1")
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tree", action="append", type=Path, help="a checkout to run (repeatable; default this one)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--coast", choices=("natural", "forced"), default="natural")
    parser.add_argument("--gt", type=Path, default=GT, help="annotated clip (label 'allow' for the person)")
    parser.add_argument("--photo", type=Path, default=PHOTO, help="the allowlisted person's photo")
    parser.add_argument("--corpus", action="store_true", help="every corpus clip with an allowlisted person")
    parser.add_argument("--only", action="append", help="with --corpus: clips whose name holds this (repeatable)")
    args = parser.parse_args(argv)
    if args.corpus:
        return corpus_rounds(args)
    if not args.gt.exists() or not SCORER.exists():
        print(f"needs {args.gt} and {SCORER} (BLURCAST_DATA / BLURCAST_SCORER)", file=sys.stderr)
        return 2
    trees = [t.resolve() for t in (args.tree or [REPO])]
    print(f"{'round':>5} {'tree':30s} {'allow visible':>13} {'leak':>7} {'coasted':>7} {'dropped':>7} {'fps':>6}")
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(1, args.repeat + 1):
            for tree in trees:
                r = one_run(tree, args.gt, args.photo, args.coast == "forced", Path(tmp))
                leak = "–" if r["leak_rate"] is None else f"{100 * r['leak_rate']:.2f}%"  # None: no bystander
                print(f"{round_:>5} {str(tree)[-30:]:30s} {100 * r['allow_visible']:12.1f}% "
                      f"{leak:>7} {r['coasted_frames']:>7} {r['dropped']:>7} {r['fps']:>6}", flush=True)
    return 0


def corpus_rounds(args: argparse.Namespace) -> int:
    """`--corpus`: each enrolled clip of bench/suite.py's corpus, each tree, `--repeat` rounds."""
    sys.path.insert(0, str(REPO / "bench"))
    import suite  # the corpus, its prepared copies and its enrolment photos

    trees = [t.resolve() for t in (args.tree or [REPO])]
    clips = [c for c in suite.corpus(args.only) if c.allow_photo is not None or c.enrol is not None]
    if not clips or not SCORER.exists():
        print(f"needs the corpus's clips and {SCORER} (BLURCAST_DATA / BLURCAST_SCORER)", file=sys.stderr)
        return 2
    print(f"{'clip':34s} {'round':>5} {'tree':24s} {'allow visible':>13} {'leak':>7} {'coasted':>7} {'dropped':>7}")
    with tempfile.TemporaryDirectory() as tmp:
        for clip in clips:
            video = suite.prepared(clip, suite.CACHE)
            photo = suite.enrol_photo(clip, video, Path(tmp))
            if photo is None:
                print(f"{clip.name[:34]:34s} no enrolment frame", flush=True)
                continue
            for round_ in range(1, args.repeat + 1):
                for tree in trees:
                    r = one_run(tree, clip.gt, photo, args.coast == "forced", Path(tmp), clip=video)
                    leak = "–" if r["leak_rate"] is None else f"{100 * r['leak_rate']:.2f}%"
                    print(f"{clip.name[:34]:34s} {round_:>5} {str(tree)[-24:]:24s} {100 * r['allow_visible']:12.1f}% "
                          f"{leak:>7} {r['coasted_frames']:>7} {r['dropped']:>7}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
