"""Who stays visible in a photo: enrol one person, anonymize a photo of them among others, check that they show
and that no one else does (the two worst bugs: a bystander shown, the streamer blurred).

    python bench/photo_allow.py [--only NAME ...] [--photos N] [--keep DIR]

The cases: every corpus photo (`bench/corpus/photo_*.gt.json`) whose faces carry an `identity` (bench/annotate.py's
`name` edit), once for each named person with enrolment photos in `ENROL` (other photos of them: face chips from
other scenes, the face_recognition project's training photos). Each case runs the command line as a user would:
`blurcast facebank add NAME PHOTO...` in a fresh `BLURCAST_HOME` (all or nothing; a refusal is reported), then
`blurcast run PHOTO -o OUT.png`, and scores the output face by face with the scorer's measure (a face is visible when
`face_visibility` >= 0.5; faces under 10 px and `ignore` ones are not scored, as in bench/photo_leaks.py).

`--photos N` enrols each person from their first N photos only (one photo: the least a user gives).
Prints one row a case and the totals: enrolled faces shown, other faces shown.
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


def cases(only: list[str]) -> list[tuple[str, Path, list[dict], str]]:
    """(photo name, its path, its faces, the identity to enrol) for every named face with enrolment photos."""
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
        found += [(name, image, gt["faces"], person) for person in people]
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", default=[], help="photos whose name contains this")
    parser.add_argument("--photos", type=int, default=5, help="enrol each person from at most this many photos")
    parser.add_argument("--keep", type=Path, help="keep the anonymized photos in this folder")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="blurcast-allow-"))
    out_dir = args.keep or work
    out_dir.mkdir(parents=True, exist_ok=True)
    shown_total, others_total, others_shown_total, refused = 0, 0, 0, []
    all_cases = cases(args.only)
    print(f"{'photo':40} {'enrolled':14} {'shown':>5} {'others':>6} {'others shown':>12}")
    for name, path, faces, person in all_cases:
        home, why = enrolled_home(person, args.photos, work / "homes")
        if home is None:
            refused.append(f"{person}: {why}")
            print(f"{name[:40]:40} {person[:14]:14} facebank refused: {why}", flush=True)
            continue
        out = out_dir / f"{name}.{person}.png"
        done = blurcast(["run", str(path), "-o", str(out)], home)
        if done.returncode != 0:
            raise SystemExit(f"blurcast run failed on {path}: {done.stderr[-800:]}")
        image, result = cv2.imread(str(path)), cv2.imread(str(out))
        mine = [f for f in faces if f.get("identity") == person]
        others = [f for f in faces if f.get("identity") != person]
        _, mine_shown, _, _ = score(image, result, mine)
        others_scored, others_shown, tracks, _ = score(image, result, others)
        shown = mine_shown == len(mine)
        shown_total += shown
        others_total += others_scored
        others_shown_total += others_shown
        print(f"{name[:40]:40} {person[:14]:14} {'yes' if shown else 'NO':>5} {others_scored:6} "
              f"{others_shown:4} {str(tracks) if tracks else '':8}", flush=True)
    ran = len(all_cases) - len(refused)
    print(f"enrolled person shown in {shown_total} of {ran} cases; other faces shown: {others_shown_total} of "
          f"{others_total}; facebank refusals: {len(refused)}")
    for line in refused:
        print(f"  refused {line}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
