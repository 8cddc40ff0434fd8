"""The streamer at night: the dev clip darkened with fresh sensor grain, the performer enrolled from his clean photo,
run through `blurcast run` of each tree (a checkout: another worktree of main for the baseline), scored by
`../shared/tools/score_video.py`.

    python bench/night_allow.py [--seeds 1,2,3,4,5,6] [--gain 0.35] [--sigma 8] [--tree PATH ...]

The clip is `tests/test_noise.py`'s: every value x`gain`, Gaussian grain of `sigma` new every frame (seeded), x264
crf 12. Prints, per seed and tree, the performer's face-frames shown and the bystander face-frames shown.
docs/measurements.md, stop 37.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.conftest import DEV_CLIP, DEV_GT, PERFORMER_PHOTO, SCORER  # noqa: E402
from tests.test_noise import _noisy_copy  # noqa: E402


def run(tree: Path, clip: Path, work: Path) -> dict:
    out = work / f"{tree.name}.mp4"
    env = {**os.environ, "BLURCAST_HOME": str(work / f"home-{tree.name}")}
    done = subprocess.run([sys.executable, "-m", "blurcast", "run", str(clip), "-o", str(out), "--no-facebank",
                           "--allow", str(PERFORMER_PHOTO)], cwd=tree, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{tree}: blurcast run failed ({done.returncode}): {done.stderr[-500:]}")
    report = work / f"{tree.name}.json"
    subprocess.run([sys.executable, str(SCORER), "--input", str(clip), "--output", str(out), "--gt", str(DEV_GT),
                    "--json", str(report)], check=True, capture_output=True)
    return json.loads(report.read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="1,2,3,4,5,6")
    parser.add_argument("--gain", type=float, default=0.35)
    parser.add_argument("--sigma", type=float, default=8.0)
    parser.add_argument("--tree", action="append", type=Path, help="checkouts to compare (default: this one)")
    args = parser.parse_args(argv)
    trees = [t.resolve() for t in args.tree or [REPO]]
    for seed in (int(s) for s in args.seeds.split(",")):
        with tempfile.TemporaryDirectory(prefix=f"night-{seed}-") as folder:
            work = Path(folder)
            clip = work / "night.mp4"
            _noisy_copy(DEV_CLIP, clip, args.sigma, gain=args.gain, seed=seed)
            for tree in trees:
                r = run(tree, clip, work)
                print(f"seed {seed} {tree}: performer shown {100 * r['allow_visible']:.1f} %, bystander face-frames "
                      f"shown {r['bystander_visible']} of {r['bystander_face_frames']} (worst run "
                      f"{r['worst_leak_run']})", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
