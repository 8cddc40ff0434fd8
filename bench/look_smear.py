"""The identifier's "new look" check under a pan's smear: same face smeared vs another face.

    python bench/look_smear.py [--lfw-people N]

`FacebankIdentifier` compares each face's 16x16 grey patch with the previous frame's (`_patch`, correlation
below `Policy.same_look` = a new look: the tracker may have moved the id onto another face). If a pan that starts
or ends changed the patch, the streamer would be blurred as "may be another face" until re-embedded. Measured at
stop 33 (docs/measurements.md): it does not, no more often than two sharp frames in a row (the raw patch: 6.4 % of
pan starts below the bar, 7.0 % of sharp pairs, the cuts), and no other comparison below separates the same face
from two faces better. This measures, per way of comparing two patches, how the correlation of
- the same face, sharp against smeared (the dev clip against its `--degrade motion` copy, same frame, and the
  frame before: a pan starting or ending), and the same face in consecutive sharp frames,
compares with that of
- two different faces: every pair of faces found in one dev-clip frame (an id swap between neighbours), and
  LFW's first photos of different people (each face on its own centre and size), sharp and one side smeared.
Prints percentiles; a comparison is useful if the same face smeared stays above a bar that different faces stay
below.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import sys
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.smear import smeared  # noqa: E402
from engine.config import Settings  # noqa: E402
from engine.recognition.identify_facebank import _patch  # noqa: E402
from engine.recognition.recognize import face_size  # noqa: E402
from engine.stages.detect import create_detector  # noqa: E402

log = logging.getLogger("look_smear")
DATA = Path(os.environ.get("BLURCAST_DATA", REPO.parent / "shared" / "data"))
CACHE = Path.home() / ".cache" / "blurcast" / "corpus"
LFW = DATA / "recognition_lfw" / "lfw-deepfunneled"


def frames(path: Path) -> list[np.ndarray]:
    capture, out = cv2.VideoCapture(str(path)), []
    while (grabbed := capture.read())[0]:
        out.append(grabbed[1])
    return out


def faces_in(detector, frame: np.ndarray) -> list[tuple[np.ndarray, float]]:
    found = detector.detect(frame, 0.5)
    out = []
    for marks in found.landmarks:
        marks = np.asarray(marks, np.float32).reshape(5, 2)
        if face_size(marks) >= 24:
            out.append((marks.mean(0), face_size(marks)))
    return out


def _unit(grid: np.ndarray) -> np.ndarray:
    v = grid.ravel().astype(np.float32)
    v = v - v.mean()
    return v / max(float(np.linalg.norm(v)), 1e-6)


def _gauss(p: np.ndarray, sigma: float) -> np.ndarray:
    return _unit(cv2.GaussianBlur(p.reshape(16, 16), (0, 0), sigma, borderType=cv2.BORDER_REPLICATE))


def _half(p: np.ndarray) -> np.ndarray:
    return _unit(cv2.resize(p.reshape(16, 16), (8, 8), interpolation=cv2.INTER_AREA))


def _smear_matched(a: np.ndarray, b: np.ndarray) -> float:
    """Best correlation with either side smeared (3 or 5 px of the patch, 4 directions)."""
    best = float(a @ b)
    for length, angle in itertools.product((3, 5), (0, 45, 90, 135)):
        best = max(best, float(_unit(smeared(a.reshape(16, 16), length, angle)) @ b),
                   float(a @ _unit(smeared(b.reshape(16, 16), length, angle))))
    return best


WAYS = {
    "raw": lambda a, b: float(a @ b),
    "gauss 0.8": lambda a, b: float(_gauss(a, 0.8) @ _gauss(b, 0.8)),
    "gauss 1.2": lambda a, b: float(_gauss(a, 1.2) @ _gauss(b, 1.2)),
    "8x8": lambda a, b: float(_half(a) @ _half(b)),
    "smear-matched": _smear_matched,
}


def comparisons(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    return {name: way(a, b) for name, way in WAYS.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lfw-people", type=int, default=300)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    clips = [CACHE / "hamilton (dev clip)_275f.mp4", CACHE / "hamilton (dev clip)_275f.motion.mp4"]
    if missing := [c for c in clips if not c.exists()]:
        raise SystemExit(f"{missing[0]} is missing: run `python bench/suite.py --degrade motion --only hamilton` first")
    plain, motion = frames(clips[0]), frames(clips[1])
    detector = create_detector(Settings().updated({"detector": "yunet"}))
    groups: dict[str, list[dict[str, float]]] = {k: [] for k in (
        "same face, next sharp frame", "same face, smeared (same frame)", "same face, pan starts",
        "same face, pan ends", "two faces of one frame", "two faces, one smeared", "LFW, two people",
        "LFW, two people, one smeared")}
    for t in range(1, len(plain)):
        faces = faces_in(detector, plain[t])
        for centre, size in faces:
            now, before = _patch(plain[t], centre, size), _patch(plain[t - 1], centre, size)
            smear_now, smear_before = _patch(motion[t], centre, size), _patch(motion[t - 1], centre, size)
            groups["same face, next sharp frame"].append(comparisons(before, now))
            groups["same face, smeared (same frame)"].append(comparisons(now, smear_now))
            groups["same face, pan starts"].append(comparisons(before, smear_now))
            groups["same face, pan ends"].append(comparisons(smear_before, now))
        for (c1, s1), (c2, s2) in itertools.combinations(faces, 2):
            a, b = _patch(plain[t], c1, s1), _patch(plain[t], c2, s2)
            groups["two faces of one frame"].append(comparisons(a, b))
            groups["two faces, one smeared"].append(comparisons(a, _patch(motion[t], c2, s2)))
    lfw = []
    for person in sorted(p for p in LFW.iterdir() if p.is_dir())[: args.lfw_people]:
        image = cv2.imread(str(next(iter(sorted(person.glob("*.jpg"))))))
        found = faces_in(detector, image)
        if found:
            centre, size = min(found, key=lambda f: np.linalg.norm(f[0] - 125))
            length = max(3, round(size / 10))  # a smear of a tenth of the face, as the dev clip's motion copy
            lfw.append((_patch(image, centre, size), _patch(smeared(image, length), centre, size)))
    for (a, a_smeared), (b, _) in itertools.combinations(lfw, 2):
        groups["LFW, two people"].append(comparisons(a, b))
        groups["LFW, two people, one smeared"].append(comparisons(a_smeared, b))
    for way in WAYS:
        print(f"{way}: percentiles 1 / 5 / 50 / 95 / 99 / max, and the share below the same-look bar")
        for name, rows in groups.items():
            values = np.array([r[way] for r in rows])
            q = np.quantile(values, [0.01, 0.05, 0.5, 0.95, 0.99, 1.0])
            print(f"  {name:34s} n={len(values):6d}  " + " / ".join(f"{v:5.2f}" for v in q)
                  + f"   below 0.5: {100 * (values < 0.5).mean():5.1f} %")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
