"""How well `facebank add` tells a photo of someone else from another photo of the person (facebank/store.py,
`OTHER_PERSON`): every photo of the labelled recognition sets enrolled as the facebank enrols it, then

- genuine: a photo added to its own person's other photos; its best cosine to them under the bar refuses it;
- impostor: a photo added to another person's photos; its best cosine to them at the bar or above lets it in.

    python bench/facebank_one_person.py [--lfw-people 200] [--json out.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
from rich.progress import track

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.config import Settings
from facebank.enrol import EnrolError, Enroller

DATA = Path(os.environ.get("BLURCAST_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
BARS = (0.2, 0.27, 0.3, 0.34, 0.36, 0.4, 0.45)
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")


def identities(lfw_people: int) -> dict[str, list[Path]]:
    """Labelled photos: identity -> paths (folders of one person each, deepface's derived identities, LFW)."""
    people: dict[str, list[Path]] = defaultdict(list)
    for root in (DATA / "recognition_faceapi_bbt", DATA / "recognition_face_recognition/examples/knn_examples/train"):
        for folder in sorted(p for p in root.glob("*") if p.is_dir()):
            people[f"{root.name}/{folder.name}"] += sorted(p for p in folder.iterdir()
                                                           if p.suffix.lower() in PHOTO_SUFFIXES)
    derived = DATA / "recognition_deepface/identities_derived.csv"
    if derived.exists():
        with derived.open() as f:
            for row in csv.DictReader(f):
                people[f"deepface/{row['identity']}"].append(DATA / "recognition_deepface/images" / row["image"])
    lfw = DATA / "recognition_lfw/lfw-deepfunneled"
    if lfw.is_dir() and lfw_people:
        folders = [f for f in sorted(lfw.iterdir()) if len(list(f.glob("*.jpg"))) >= 2]
        for folder in folders[:: max(1, len(folders) // lfw_people)][:lfw_people]:
            people[f"lfw/{folder.name}"] = sorted(folder.glob("*.jpg"))[:5]
    return {k: v for k, v in people.items() if len(v) >= 2}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lfw-people", type=int, default=200, help="LFW people with 2+ photos to add (0: none)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    enroller = Enroller(Settings())
    vectors: dict[str, list[np.ndarray]] = defaultdict(list)
    refused = 0
    for name, paths in track(list(identities(args.lfw_people).items()), description="enrolling"):
        for path in paths:
            try:
                vectors[name].append(enroller.enrol(path).embedding)
            except EnrolError:
                refused += 1
    people = {k: np.stack(v) for k, v in vectors.items() if len(v) >= 2}
    genuine, impostor = [], []
    names = list(people)
    for name in names:
        own = people[name]
        sims = own @ own.T
        np.fill_diagonal(sims, -1.0)
        genuine += sims.max(axis=1).tolist()
        for other in names:
            if other != name:
                impostor += (own @ people[other].T).max(axis=1).tolist()
    genuine_a, impostor_a = np.array(genuine), np.array(impostor)
    report = {"people": len(people), "photos": int(sum(len(v) for v in people.values())), "refused_photos": refused,
              "genuine": len(genuine), "impostor": len(impostor),
              "genuine_min": round(float(genuine_a.min()), 4), "impostor_max": round(float(impostor_a.max()), 4),
              "bars": {str(bar): {"genuine_refused": int((genuine_a < bar).sum()),
                                  "impostor_let_in": int((impostor_a >= bar).sum())} for bar in BARS}}
    print(f"{report['people']} people, {report['photos']} photos ({refused} refused by enrolment); "
          f"{len(genuine)} photos added to their own person, {len(impostor)} to another")
    print(f"best cosine: genuine min {report['genuine_min']}, impostor max {report['impostor_max']}")
    for bar, row in report["bars"].items():
        own, other = row["genuine_refused"], row["impostor_let_in"]
        print(f"bar {bar}: own photos refused {own} ({100 * own / len(genuine):.2f} %), "
              f"another's let in {other} ({100 * other / len(impostor):.3f} %)")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
