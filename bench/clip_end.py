"""What a clip's end costs: each corpus clip cut after K frames, against the same K frames of the whole clip.

    python bench/clip_end.py [--only SUBSTR ...] [--cuts 12 24 36]

File mode hides a face found late in the frames it still holds (up to 24 back, stages/lookahead.py). A clip that ends
takes that future away from its last frames: a face first found after the cut is never hidden back, and a weak box
waiting for its next sighting at the end never gets one. This runs `blurcast run` (blur-all, a fresh process) on
each clip re-encoded losslessly, and on its first K frames cut losslessly (the same pixels), and counts the
bystander face-frames left visible (the scorer's measure) among those K frames in both. The rows say how many more
the cut leaks, and which of them lie in its last 8 frames (where waiting evidence could still be acted on at the
end) and which earlier (faces the whole clip finds only after the cut: nothing at the end knows of them).
Needs the shared data (BLURCAST_DATA, default ../shared/data) and ffmpeg.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench import suite

TAIL = 8  # the last frames of a cut: where a flush at the source's end could still act


def _scorer():
    spec = importlib.util.spec_from_file_location("score_video", suite.SCORER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def lossless(src: Path, dst: Path, frames: int | None = None) -> None:
    """`src`'s frames (its first `frames`), re-encoded without loss: a cut decodes to the whole clip's pixels."""
    cut = ["-frames:v", str(frames)] if frames else []
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(src), *cut, "-c:v", "libx264", "-qp", "0", "-an",
                    str(dst)], check=True)


def leaked(scorer, video: Path, out: Path, gt: dict, upto: int) -> tuple[set[tuple[int, int]], int]:
    """(frame, track) of every bystander face-frame left visible among the first `upto` frames, and how many
    were scored (the scorer's own measure, size floor and bar)."""
    by_frame: dict[int, list[dict]] = defaultdict(list)
    for face in gt["faces"]:
        if face["frame"] < upto and face["label"] == "bystander" and not face.get("ignore"):
            by_frame[face["frame"]].append(face)
    src, dst = cv2.VideoCapture(str(video)), cv2.VideoCapture(str(out))
    visible, scored = set(), 0
    for index in range(upto):
        ok_in, frame_in = src.read()
        ok_out, frame_out = dst.read()
        if not (ok_in and ok_out):
            break
        grey_in, grey_out = (cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in (frame_in, frame_out))
        for face in by_frame.get(index, []):
            x1, y1, x2, y2 = (round(v) for v in face["box"])
            x1, y1, x2, y2 = max(0, x1), max(0, y1), min(grey_in.shape[1], x2), min(grey_in.shape[0], y2)
            if x2 - x1 < 10 or y2 - y1 < 10:  # the scorer's default size floor
                continue
            scored += 1
            if scorer.face_visibility(grey_in[y1:y2, x1:x2], grey_out[y1:y2, x1:x2]) >= 0.5:
                visible.add((index, face["track"]))
    return visible, scored


def measure(clip: suite.Clip, cuts: list[int], tmp: Path, scorer) -> list[dict]:
    gt = json.loads(clip.gt.read_text())
    whole = tmp / "whole.mp4"
    lossless(suite.prepared(clip, suite.CACHE), whole)
    whole_out = tmp / "whole.out.mp4"
    suite.run_blurcast(whole, whole_out, ["--no-facebank"], tmp / "home")
    rows = []
    for k in cuts:
        cut, cut_out = tmp / f"cut{k}.mp4", tmp / f"cut{k}.out.mp4"
        lossless(whole, cut, k)
        suite.run_blurcast(cut, cut_out, ["--no-facebank"], tmp / "home")
        in_whole, scored = leaked(scorer, whole, whole_out, gt, k)
        in_cut, _ = leaked(scorer, cut, cut_out, gt, k)
        more = in_cut - in_whole
        rows.append({"clip": clip.name, "cut": k, "scored": scored, "whole": len(in_whole), "cut_leaked": len(in_cut),
                     "more_in_tail": sorted(f for f in more if f[0] >= k - TAIL),
                     "more_before_tail": sorted(f for f in more if f[0] < k - TAIL),
                     "fewer": len(in_whole - in_cut)})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", default=[], help="clips whose name contains this (repeatable)")
    parser.add_argument("--cuts", type=int, nargs="+", default=[12, 24, 36], help="frames kept in each cut")
    parser.add_argument("--json", type=Path, help="write the rows here")
    args = parser.parse_args(argv)
    scorer = _scorer()
    rows = []
    for clip in suite.corpus(args.only or None):
        frames = json.loads(clip.gt.read_text()).get("frames", 0)
        cuts = [k for k in args.cuts if not frames or k < frames]
        with tempfile.TemporaryDirectory() as tmp:
            for row in measure(clip, cuts, Path(tmp), scorer):
                rows.append(row)
                print(f"{row['clip'][:48]:48} cut at {row['cut']:3}: leaked {row['whole']:3} whole -> "
                      f"{row['cut_leaked']:3} cut ({row['scored']} scored); more in its last {TAIL} frames "
                      f"{len(row['more_in_tail'])}, before them {len(row['more_before_tail'])}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
