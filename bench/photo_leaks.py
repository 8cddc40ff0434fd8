"""Photos as a user gives them: every annotated corpus photo (`bench/corpus/photo_*.gt.json`) at its own size
through `blurcast run PHOTO -o OUT.png --no-facebank`, scored face by face with the scorer's measure (a face is
visible when `face_visibility` >= 0.5; faces under 10 px and `ignore` ones left out). `--deface` runs deface 1.5.0
(its defaults) on the same photos, from a `deface` beside this Python or on PATH.

Also counts how much of each picture was blurred outside the annotated faces (every face box grown by half its
size on each side, so a face's own margin is not counted): the price of a photo's extra views in false blurs.

    python bench/photo_leaks.py [--only NAME ...] [--deface] [--held-out] [--turn Q]
                                [--variant LABEL:MODULE.CONST=VALUE ...]

A variant sets engine module constants (`yunet`, `anonymize`: e.g. `wide:yunet.STILL_ENLARGED_MAX_PX=inf`, a
number or a Python literal such as `flat:yunet.STILL_TURNS=()`) for that run of the command line; without one, the
code as it is (`now:`). `--turn Q` gives every photo turned Q quarter turns counter-clockwise (its boxes with it),
written as PNG with no orientation tag: a photo stored sideways or upside down whose tag was dropped.

`--held-out` keeps the photos annotated at stop 30, which no earlier tuning looked at.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from evaluation.video import face_visibility  # noqa: E402

DATA = Path(os.environ.get("BLURCAST_DATA", REPO.parent / "shared" / "data"))
CORPUS = REPO / "bench" / "corpus"
# Annotated before stop 30 and looked at while the still path was tuned (stop 20): the rest are held out.
TUNED = {f"photo_linzaer_imgs_{n}" for n in (1, 8, 10, 11, 16, 24, 25, 26, 27)}
VISIBLE_AT, MIN_SIZE = 0.5, 10


def photos(only: list[str], held_out: bool) -> list[tuple[str, Path, list[dict]]]:
    found = []
    for gt_path in sorted(CORPUS.glob("photo_*.gt.json")):
        name = gt_path.name.removesuffix(".gt.json")
        if (only and not any(o in name for o in only)) or (held_out and name in TUNED):
            continue
        gt = json.loads(gt_path.read_text())
        image = DATA / gt["image"]
        if not image.exists():
            print(f"skipped {name}: {image} is absent (BLURCAST_DATA)", file=sys.stderr)
            continue
        found.append((name, image, gt["faces"]))
    return found


RUN = ("import sys\nfrom engine.stages import anonymize\nfrom engine.stages.detectors import yunet\n{sets}"
       "from blurcast.cli import main\nsys.exit(main(['run', {src!r}, '-o', {out!r}, '--no-facebank']))")


def blurcast(image: Path, out: Path, home: Path, constants: str = "") -> None:
    """The command line, with the variant's constants set first."""
    sets = "".join(f"{name} = {_literal(value)!r}\n" for name, value in
                   (item.split("=", 1) for item in filter(None, constants.split(";" if ";" in constants else ","))))
    env = {**os.environ, "PYTHONPATH": str(REPO), "BLURCAST_HOME": str(home)}
    code = RUN.format(sets=sets, src=str(image), out=str(out))
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, env=env, cwd=REPO)


def _literal(value: str) -> object:
    try:
        return float(value)
    except ValueError:
        return ast.literal_eval(value)


def turned(image: np.ndarray, faces: list[dict], quarters: int) -> tuple[np.ndarray, list[dict]]:
    """The picture turned `quarters` quarter turns as np.rot90 does, (x, y) -> (y, w - x) each, and its faces."""
    faces = [dict(face) for face in faces]
    for _ in range(quarters % 4):
        width = image.shape[1]
        for face in faces:
            x1, y1, x2, y2 = face["box"]
            face["box"] = [y1, width - x2, y2, width - x1]
        image = np.ascontiguousarray(np.rot90(image))
    return image, faces


def deface(image: Path, out: Path) -> None:
    exe = shutil.which("deface") or str(Path(sys.executable).with_name("deface"))
    subprocess.run([exe, str(image), "-o", str(out)], check=True, capture_output=True)


def score(image: np.ndarray, out: np.ndarray, faces: list[dict]) -> tuple[int, int, list[int], float]:
    """(faces scored, faces visible, the visible ones' tracks, share of the picture changed outside faces). Every
    annotated box is a face for the last; `ignore` ones are not scored."""
    grey_in, grey_out = (cv2.cvtColor(img, cv2.COLOR_BGR2GRAY) for img in (image, out))
    height, width = grey_in.shape
    outside = np.ones((height, width), bool)
    scored, shown = 0, []
    for face in faces:
        x1, y1, x2, y2 = (round(v) for v in face["box"])
        gx, gy = (x2 - x1) // 2, (y2 - y1) // 2
        outside[max(0, y1 - gy):y2 + gy, max(0, x1 - gx):x2 + gx] = False
        x1, y1, x2, y2 = max(0, x1), max(0, y1), min(width, x2), min(height, y2)
        if face["ignore"] or x2 - x1 < MIN_SIZE or y2 - y1 < MIN_SIZE:
            continue
        scored += 1
        if face_visibility(grey_in[y1:y2, x1:x2], grey_out[y1:y2, x1:x2]) >= VISIBLE_AT:
            shown.append(face["track"])
    changed = cv2.absdiff(grey_in, grey_out) > 8
    return scored, len(shown), shown, float((changed & outside).sum() / max(1, outside.sum()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", default=[], help="photos whose name contains this")
    parser.add_argument("--deface", action="store_true", help="deface 1.5.0 on the same photos")
    parser.add_argument("--held-out", action="store_true", help="only the photos no tuning looked at")
    parser.add_argument("--variant", action="append", default=[],
                        help="LABEL:MODULE.CONST=VALUE,... (repeatable; separate with ';' where a value holds commas)")
    parser.add_argument("--turn", type=int, default=0, help="quarter turns counter-clockwise (tag-less)")
    args = parser.parse_args()
    tools = [(label, partial(blurcast, constants=constants))
             for label, _, constants in (v.partition(":") for v in args.variant or ["now:"])]
    tools += [("deface", deface)] if args.deface else []
    totals = {tool: [0, 0] for tool, _ in tools}
    tmp = Path(tempfile.mkdtemp(prefix="blurcast-photos-"))
    print(f"{'photo':42} {'faces':>5} " + " ".join(f"{t + ' visible':>26}" for t, _ in tools))
    for name, path, faces in photos(args.only, args.held_out):
        image = cv2.imread(str(path))
        if args.turn % 4:
            image, faces = turned(image, faces, args.turn)
            path = tmp / f"{name}.turned{args.turn % 4}.png"
            cv2.imwrite(str(path), image)
        cells = []
        for tool, run in tools:
            out = tmp / f"{name}.{tool}.png"
            started = time.perf_counter()
            try:
                if tool == "deface":
                    run(path, out)
                else:
                    run(path, out, tmp / "home")
            except subprocess.CalledProcessError as exc:
                raise SystemExit(f"{tool} failed on {path}: {exc.stderr.decode(errors='replace')[-800:]}") from exc
            seconds = time.perf_counter() - started
            scored, visible, tracks, outside = score(image, cv2.imread(str(out)), faces)
            totals[tool][0] += visible
            totals[tool][1] += scored
            cells.append(f"{visible:3} {str(tracks)[:9]:9} {100 * outside:4.1f}% {seconds:4.1f}s")
        print(f"{name[:42]:42} {scored:5} " + " ".join(f"{c:>26}" for c in cells), flush=True)
    for tool, (visible, scored) in totals.items():
        print(f"{tool}: {visible} of {scored} faces visible ({100 * visible / max(1, scored):.2f} %)")
    print("(columns: visible faces, their tracks, share of the picture changed outside faces, seconds a photo)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
