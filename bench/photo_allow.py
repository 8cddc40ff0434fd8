"""Who stays visible in a photo: enrol one person, anonymize a photo of them among others, check that they show
and that no one else does (the two worst bugs: a bystander shown, the streamer blurred).

    python bench/photo_allow.py [--only NAME ...] [--photos N] [--keep DIR] [--video]

The cases: every corpus photo (`bench/corpus/photo_*.gt.json`) whose faces carry an `identity` (bench/annotate.py's
`name` edit), once for each named person with enrolment photos in `ENROL` (other photos of them: face chips from
other scenes, the face_recognition project's training photos). Each case runs the command line as a user would:
`blurcast facebank add NAME PHOTO...` in a fresh `BLURCAST_HOME` (all or nothing; a refusal is reported), then
`blurcast run PHOTO -o OUT.png`, and scores the output face by face with the scorer's measure (a face is visible when
`face_visibility` >= 0.5; faces under 10 px and `ignore` ones are not scored, as in bench/photo_leaks.py).

`--photos N` enrols each person from their first N photos only (one photo: the least a user gives).
Prints one row a case and the totals: enrolled faces shown, other faces shown.

`--video` runs each case on the photo's 48-frame 1080p pan-and-zoom clip instead (bench/widerface_clips.py, the
suite's rendering, cached), the named person labelled `allow` and everyone else `bystander`, scored by
`../shared/tools/score_video.py`: the share of the person's face-frames shown, and the bystanders' leak.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
import suite  # noqa: E402
import widerface_clips  # noqa: E402
from photo_leaks import CORPUS, DATA, score  # noqa: E402

_BBT = "recognition_faceapi_bbt"
_KNN = "recognition_face_recognition/examples/knn_examples/train"
# Enrolment photos by identity, none of them a probe nor cut from one: the bbt face chips come from other scenes than
# the five group stills (checked by eye), the knn training photos are other photos than the test ones.
ENROL: dict[str, list[str]] = {
    **{name: [f"{_BBT}/{name}/{name}{i}.png" for i in range(1, 6)]
       for name in ("amy", "bernadette", "howard", "leonard", "penny", "raj", "sheldon", "stuart")},
    # One photo each: their other training photos are the official portraits that probes are cut from
    # (examples/two_people.jpg puts the two side by side; obama-240p, obama_small, the partial faces are crops).
    "obama": [f"{_KNN}/obama/obama2.jpg"],
    "biden": [f"{_KNN}/biden/biden2.jpg"],
    "kit_harington": [f"{_KNN}/kit_harington/john1.jpeg", f"{_KNN}/kit_harington/john2.jpeg"],
    "rose_leslie": [f"{_KNN}/rose_leslie/img1.jpg", f"{_KNN}/rose_leslie/img2.jpg"],
    "alex_lacamoire": [f"{_KNN}/alex_lacamoire/img1.jpg"],
}


def cases(only: list[str]) -> list[tuple[str, Path, dict, str]]:
    """(photo name, its path, its gt, the identity to enrol) for every named face with enrolment photos."""
    found = []
    for gt_path in sorted(CORPUS.glob("photo_*.gt.json")):
        name = gt_path.name.removesuffix(".gt.json")
        gt = json.loads(gt_path.read_text())
        people = sorted({f["identity"] for f in gt["faces"] if f.get("identity") in ENROL})
        if not people or (only and not any(o in name for o in only)):
            continue
        image = DATA / gt["image"]
        if not image.exists():
            print(f"skipped {name}: {image} is absent (BLURCAST_DATA)", file=sys.stderr)
            continue
        found += [(name, image, gt, person) for person in people]
    return found


def blurcast(args: list[str], home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "BLURCAST_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "blurcast", *args], capture_output=True, text=True, env=env, cwd=REPO)


def enrolled_home(person: str, photos: int, homes: Path) -> tuple[Path | None, str]:
    """A BLURCAST_HOME whose facebank holds `person` (made once a person), or None and the refusal."""
    home = homes / f"{person}-{photos}"
    if (home / "facebank.json").exists():
        return home, ""
    home.mkdir(parents=True, exist_ok=True)
    done = blurcast(["facebank", "add", person, *(str(DATA / p) for p in ENROL[person][:photos])], home)
    if done.returncode != 0:
        shutil.rmtree(home)
        return None, (done.stderr.strip().splitlines() or ["refused"])[-1]
    return home, ""


def photo_case(path: Path, faces: list[dict], person: str, home: Path, out: Path) -> tuple[bool, int, int, list]:
    """The photo through `blurcast run`: (the person shown, other faces scored, of them shown, their tracks)."""
    done = blurcast(["run", str(path), "-o", str(out)], home)
    if done.returncode != 0:
        raise SystemExit(f"blurcast run failed on {path}: {done.stderr[-800:]}")
    image, result = cv2.imread(str(path)), cv2.imread(str(out))
    mine_scored, mine_shown, _, _ = score(image, result, [f for f in faces if f.get("identity") == person])
    others_scored, others_shown, tracks, _ = score(image, result, [f for f in faces if f.get("identity") != person])
    shown = mine_shown == mine_scored
    return shown, others_scored, others_shown, tracks


def video_case(name: str, gt: dict, person: str, home: Path, out: Path) -> tuple[float, int, int, int]:
    """The photo's pan-and-zoom clip through `blurcast run`: (share of the person's face-frames shown, bystander
    face-frames, of them shown, the longest run of one bystander's)."""
    video, rendered = widerface_clips.corpus_photo(gt, name)
    tracks = {k + 1 for k, f in enumerate(gt["faces"]) if f.get("identity") == person}  # the rendering's numbering
    labelled = json.loads(rendered.read_text())
    for face in labelled["faces"]:
        face["label"] = "allow" if face["track"] in tracks else "bystander"
    truth = out.with_suffix(".gt.json")
    truth.write_text(json.dumps(labelled))
    done = blurcast(["run", str(video), "-o", str(out)], home)
    if done.returncode != 0:
        raise SystemExit(f"blurcast run failed on {video}: {done.stderr[-800:]}")
    r = suite.score(video, out, truth, out.parent)  # ../shared/tools/score_video.py, as the suite calls it
    return (r["allow_visible"] or 0.0, r["bystander_face_frames"],
            r["bystander_visible"], r["worst_leak_run"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", default=[], help="photos whose name contains this")
    parser.add_argument("--photos", type=int, default=5, help="enrol each person from at most this many photos")
    parser.add_argument("--keep", type=Path, help="keep the anonymized photos in this folder")
    parser.add_argument("--video", action="store_true", help="the photos' 1080p pan-and-zoom clips instead")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="blurcast-allow-"))
    out_dir = args.keep or work
    out_dir.mkdir(parents=True, exist_ok=True)
    totals, refused = [0, 0, 0, 0.0], []  # cases shown (photo) or share shown (video), others, of them shown, run
    all_cases = cases(args.only)
    print(f"{'photo':40} {'enrolled':14} {'shown':>5} {'others':>6} {'others shown':>12}")
    for name, path, gt, person in all_cases:
        home, why = enrolled_home(person, args.photos, work / "homes")
        if home is None:
            refused.append(f"{person}: {why}")
            print(f"{name[:40]:40} {person[:14]:14} facebank refused: {why}", flush=True)
            continue
        if args.video:
            share, others, others_shown, run = video_case(name, gt, person, home, out_dir / f"{name}.{person}.mp4")
            cells = f"{100 * share:4.0f}% {others:6} {others_shown:4} run {run}"
            totals = [totals[0] + share, totals[1] + others, totals[2] + others_shown, max(totals[3], run)]
        else:
            shown, others, others_shown, tracks = photo_case(path, gt["faces"], person, home,
                                                             out_dir / f"{name}.{person}.png")
            cells = f"{'yes' if shown else 'NO':>5} {others:6} {others_shown:4} {str(tracks) if tracks else ''}"
            totals = [totals[0] + shown, totals[1] + others, totals[2] + others_shown, 0]
        print(f"{name[:40]:40} {person[:14]:14} {cells}", flush=True)
    ran = len(all_cases) - len(refused)
    if args.video:
        print(f"enrolled person's face-frames shown: {100 * totals[0] / max(1, ran):.1f} % on average over {ran} "
              f"cases; bystander face-frames shown: {totals[2]} of {totals[1]} (worst run {totals[3]:g}); "
              f"facebank refusals: {len(refused)}")
    else:
        print(f"enrolled person shown in {totals[0]} of {ran} cases; other faces shown: {totals[2]} of "
              f"{totals[1]}; facebank refusals: {len(refused)}")
    for line in refused:
        print(f"  refused {line}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
