"""How small may an enrolment photo's face be? Faces cut small, enrolled at their own size, against strangers.

    python bench/small_enrolment.py [--people 400] [--sizes 48 40 32 28 24 20]

`facebank.enrol.MIN_FACE_PX` refuses a photo whose face is narrower than the bar. A face enlarged is taken however
small it was (enlarging adds no information), so the bar should say what a small face costs, measured: here on LFW
(deepfunneled) people with two photos. The first photo's centre (150 px, so that LFW's edge faces are mostly cut
off) is shrunk until the face is `--sizes` px wide and enrolled through `Enroller.enrol` at that size, the way a
friend's face is cut from a group photo; the bar is lowered for the run so every size gets through it. Probes:
every person's second photo shrunk to street size (`--scale`, ~55 px), to a small face (half that, ~27 px), and
smeared 9 px along x (a pan). Per size: the photos taken (and why the others were refused), their sharpness, and
for each kind of probe the genuine pairs over the similarity threshold and the stranger pairs over it (every probe
against every enrolment but its own person's).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from collections import Counter
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import facebank.enrol as enrol  # noqa: E402
from bench.lfw_alignment import add_two_photo_args, lfw_present, two_photo_people  # noqa: E402
from bench.smear import smeared  # noqa: E402
from engine.config import Settings  # noqa: E402
from engine.recognition.recognize import align_face, create_embedder  # noqa: E402
from facebank.enrol import EnrolError, Enroller  # noqa: E402

log = logging.getLogger("small_enrolment")
DATA = Path(os.environ.get("BLURCAST_DATA", REPO.parent / "shared" / "data"))
CENTRE = slice(50, 200)  # LFW's 250 px photo: its centre face, most neighbours' faces cut off


def shrunk(image: np.ndarray, marks: np.ndarray, face_px: int) -> np.ndarray:
    """The photo's centre shrunk so that its face is `face_px` wide (a face box is ~2.2 eye spans wide)."""
    centre = image[CENTRE, CENTRE]
    eye_span = float(np.linalg.norm(marks[1] - marks[0]))
    factor = min(1.0, face_px / max(2.2 * eye_span, 1.0))
    return cv2.resize(centre, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_two_photo_args(parser, DATA, 400, "the street probes' size against LFW's (~55 px)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[48, 40, 32, 28, 24, 20])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not lfw_present(args.lfw):
        return 2
    bar = enrol.MIN_FACE_PX
    enrol.MIN_FACE_PX = min(args.sizes) // 2  # every size measured; the photos under today's bar are counted apart
    enroller = Enroller(Settings())
    found = two_photo_people(enroller, args.lfw, args.people)
    log.info("%d people", len(found))
    embedder = create_embedder(Settings())
    probes = {}
    for name, scale in (("street", args.scale), ("small", args.scale / 2)):
        faces = [align_face(cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA), marks * scale)
                 for _, (_, (image, marks)) in found]
        probes[name] = embedder.embed_aligned(np.stack(faces))
        if name == "street":
            probes["smeared"] = embedder.embed_aligned(np.stack([smeared(face, 9) for face in faces]))
    with tempfile.TemporaryDirectory() as work:
        for size in args.sizes:
            taken, refusals, sharpness = {}, Counter(), []
            for i, (_, ((image, marks), _)) in enumerate(found):
                photo = Path(work) / f"{i}.png"
                cv2.imwrite(str(photo), shrunk(image, marks, size))
                try:
                    enrolment = enroller.enrol(photo)
                except EnrolError as exc:
                    refusals[exc.reason.split(" (")[0].split(":")[0]] += 1
                    continue
                taken[i] = enrolment
                sharpness.append(enrolment.sharpness)
            rows = sorted(taken)
            vectors = np.stack([taken[i].embedding for i in rows])
            under_bar = sum(taken[i].face_px < bar for i in rows)
            print(f"{size:3d} px: taken {len(rows)} of {len(found)} (under today's bar of {bar} px: {under_bar}), "
                  f"sharpness median {np.median(sharpness):.0f} (p10 {np.percentile(sharpness, 10):.0f}); "
                  f"refused: {dict(refusals) or 'none'}")
            for kind, probe in probes.items():
                scores = vectors @ probe.T
                own = np.zeros_like(scores, bool)
                own[np.arange(len(rows)), rows] = True
                print(f"    {kind:8s} probes: genuine over {args.threshold}: "
                      f"{100 * (scores[own] >= args.threshold).mean():5.1f} %   strangers over it: "
                      f"{100 * (scores[~own] >= args.threshold).mean():.3f} % (highest {scores[~own].max():.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
