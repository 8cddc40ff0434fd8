"""File-mode speed of one or more checkouts against deface, on the same clip, interleaved, same run.

    python bench/file_speed.py CLIP [CLIP ...] [--tree PATH ...] [--repeat 2] [--frames 90] [--no-deface]

Each clip (cut to its first `--frames` frames, without audio) goes through deface 1.5.0 (its defaults) and
through `blurcast run --no-facebank` of each `--tree` (a checkout: another worktree of main for the baseline;
default this one), each a fresh process with model load, in turn, `--repeat` times. Prints fps per run and
the ratio to deface of the same round (on a shared machine only ratios within a round mean anything), and
each process's CPU time a frame (its encoder child included), steadier than wall time under load, and at the
end each tree's median ratio over the rounds with its range. Each tree's bytecode is compiled first (`.pyc` files
written into it), as `pip install` compiles deface's.
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
log = logging.getLogger("file_speed")


def timed(cmd: list[str], env: dict | None = None, cpu: dict | None = None, key: str = "",
          cwd: Path | None = None) -> float:
    """Wall seconds of `cmd`; its CPU seconds (children's user + system, steadier under load) go to cpu[key]."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=cwd)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if cpu is not None:
        cpu[key] = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return wall


def cut(clip: Path, frames: int, out: Path) -> tuple[Path, int]:
    dst = out / f"{clip.stem}_{frames}f.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(clip), "-frames:v", str(frames), "-c:v", "libx264",
                    "-crf", "14", "-preset", "veryfast", "-an", str(dst)], check=True)
    import cv2

    cap, n = cv2.VideoCapture(str(dst)), 0
    while cap.grab():
        n += 1
    return dst, n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("clips", nargs="+", type=Path)
    parser.add_argument("--tree", action="append", type=Path)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--frames", type=int, default=90)
    parser.add_argument("--no-deface", dest="deface", action="store_false", help="the trees only (ratios to the first)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    trees = args.tree or [REPO]
    deface = shutil.which("deface") or str(Path(sys.executable).with_name("deface"))
    for tree in trees:
        # Bytecode as an installed package has it (pip compiles at install, as deface's was): with
        # PYTHONDONTWRITEBYTECODE set, as on the dev machines, every run compiled the tree's ~100 modules, 0.2 s.
        subprocess.run([sys.executable, "-m", "compileall", "-q", "engine", "blurcast", "facebank", "tui"],
                       check=True, cwd=tree.resolve(), stdout=subprocess.DEVNULL)
    with tempfile.TemporaryDirectory(prefix="blurcast-speed-") as tmp:
        out = Path(tmp)
        for clip in args.clips:
            video, frames = cut(clip, args.frames, out)
            ratios: dict[str, list[float]] = {}
            for round_ in range(args.repeat):
                cpu: dict[str, float] = {}
                fps: dict[str, float] = {}
                if args.deface:
                    seconds = timed([deface, str(video), "-o", str(out / "deface.mp4")], None, cpu, "deface")
                    fps["deface"] = frames / seconds
                for tree in trees:
                    env = {**os.environ, "PYTHONPATH": str(tree.resolve())}
                    # From the tree: `python -m` puts the working directory first on sys.path, ahead of PYTHONPATH,
                    # so run from elsewhere every tree ran the working directory's code.
                    seconds = timed([sys.executable, "-m", "blurcast", "run", str(video), "-o", str(out / "o.mp4"),
                                     "--no-facebank"], env, cpu, str(tree), cwd=tree.resolve())
                    fps[str(tree)] = frames / seconds
                base = next(iter(fps.values()))  # deface's, or the first tree's
                log.info("%s (%d frames) round %d: %s", clip.name, frames, round_ + 1,
                         ", ".join(f"{k} {v:.2f} fps ({v / base:.2f}x, CPU {cpu[k] * 1000 / frames:.0f} ms"
                                   " a frame)" for k, v in fps.items()))
                for k, v in list(fps.items())[1:]:
                    ratios.setdefault(k, []).append(v / base)
            # On a shared machine one round's ratio moves by 10 % (deface alone took 658-905 CPU ms a frame between
            # rounds at stop 29): the median over the rounds, with its range, is the figure to quote.
            for k, values in ratios.items():
                log.info("%s: %s median %.2fx over %d rounds (%.2f-%.2f) against %s", clip.name, k,
                         statistics.median(values), len(values), min(values), max(values), next(iter(fps)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
