"""Where should enrolment's sharpness bar be? A soft enrolment photo against the strangers it lets through.

    python bench/soft_enrolment.py [--people 600] [--scale 0.5]

`facebank.enrol.MIN_SHARPNESS` refuses a photo whose aligned face is softer than the bar: a soft photo's embedding
may match the streamer poorly (blurred on stream), or strangers better (a bystander shown). This measures both on
LFW (deepfunneled) people with two photos. The first photo is the enrolment photo, degraded two ways an enrolment
photo is soft in practice: out of focus (Gaussian blur, sigma in px of LFW's ~110 px face) and small (a face cut
from a video frame, shrunk to `--small` px wide and enlarged back, as `bench/suite.py` crops its enrolment frames).
And smeared (a pan or a turning head: `bench/smear.py`'s line kernel, horizontal), the softness that a smeared
stream matches: smear-to-smear matching lets strangers through (stop 33, `bench/smear_templates.py`). Its sharpness
is `engine.recognition.recognize.sharpness` on the aligned face, as enrolment measures it, and its `smear`.
Probes: every person's second photo shrunk by `--scale` (a face in a street stream), clean, and smeared horizontally
too (SMEARED_PROBES, px of the aligned face). Per view, then per sharpness band of the
non-smeared views: the genuine pairs over the similarity threshold and the strangers over it (every probe against
every enrolment).
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
from bench.lfw_alignment import add_two_photo_args, lfw_present, two_photo_people  # noqa: E402
from bench.smear import smeared  # noqa: E402
from engine.config import Settings  # noqa: E402
from engine.recognition.recognize import align_face, create_embedder, sharpness, smear  # noqa: E402
from facebank.enrol import Enroller, softness_refusal  # noqa: E402

log = logging.getLogger("soft_enrolment")
DATA = Path(os.environ.get("BLURCAST_DATA", REPO.parent / "shared" / "data"))
BLURS = (0.0, 1.2, 2.0, 2.5, 3.0, 4.0)  # Gaussian sigma, px at LFW's size
SMALL_FACES = (40, 32, 24)  # px: the face's width in the frame it was cut from
SMEARS = ((5, 0), (7, 30), (9, 0), (9, 30), (9, 60), (9, 90), (13, 0), (13, 45))  # (px, degrees) at LFW's size
SMEARED_PROBES = (9, 13)
OLD_BAR = 50.0  # facebank.enrol's sharpness bar until stop 46
BANDS = (0, 5, 10, 15, 25, 35, 50, 100, 1e9)


def out_of_focus(image: np.ndarray, sigma: float) -> np.ndarray:
    return image if sigma == 0 else cv2.GaussianBlur(image, (0, 0), sigma)


def cut_small(image: np.ndarray, marks: np.ndarray, face_px: int) -> np.ndarray:
    """The photo as if its face had been `face_px` wide in a video frame, enlarged back to LFW's size."""
    eye_span = float(np.linalg.norm(marks[1] - marks[0]))
    factor = min(1.0, face_px / max(2.2 * eye_span, 1.0))  # a face box is ~2.2 eye spans wide
    small = cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_CUBIC)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_two_photo_args(parser, DATA, 600, "the probes' size against LFW's (0.5: ~55 px)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not lfw_present(args.lfw):
        return 2
    found = two_photo_people(Enroller(Settings()), args.lfw, args.people)
    log.info("%d people", len(found))
    embedder = create_embedder(Settings())

    def embed(faces: list[np.ndarray]) -> np.ndarray:
        stack = np.stack(faces)
        return np.concatenate([embedder.embed_aligned(stack[i:i + 64]) for i in range(0, len(stack), 64)])

    probe_faces = [align_face(cv2.resize(image, None, fx=args.scale, fy=args.scale, interpolation=cv2.INTER_AREA),
                              marks * args.scale) for _, ((_, _), (image, marks)) in found]
    probes = embed(probe_faces)
    smeared_probes = {px: embed([smeared(f, px) for f in probe_faces]) for px in SMEARED_PROBES}
    views = [("focus", s, lambda im, mk, s=s: out_of_focus(im, s)) for s in BLURS]
    views += [("small", px, lambda im, mk, px=px: cut_small(im, mk, px)) for px in SMALL_FACES]
    views += [("smear", f"{px}@{angle}", lambda im, mk, px=px, angle=angle: smeared(im, px, angle))
              for px, angle in SMEARS]
    sharp_all, genuine_all, strangers_all = [], [], []
    for kind, amount, degrade in views:
        faces = [align_face(degrade(image, marks), marks) for _, ((image, marks), _) in found]
        sharp = np.array([sharpness(f) for f in faces])
        smears = np.array([smear(f) for f in faces])
        enrolled = embed(faces)
        scores = enrolled @ probes.T  # enrolment x probe
        genuine = np.diag(scores)
        strangers = np.where(np.eye(len(scores), dtype=bool), -1.0, scores)
        pairs = len(scores) * (len(scores) - 1)
        against_smears = "  ".join(
            f"{px} px: {100 * (_strangers(enrolled @ smeared_probes[px].T) >= args.threshold).sum() / pairs:.3f} %"
            for px in SMEARED_PROBES)
        taken = np.array([softness_refusal(a, b) is None for a, b in zip(sharp, smears, strict=True)])
        # What enrolment lets through: the strangers over the threshold against smeared probes, taken photos only.
        taken_pairs = max(1, int(taken.sum()) * (len(scores) - 1))
        over = {px: _strangers(enrolled @ smeared_probes[px].T) >= args.threshold for px in SMEARED_PROBES}
        taken_smeared = "  ".join(f"{px} px: {100 * o[taken].sum() / taken_pairs:.3f} %" for px, o in over.items())
        old_taken = sharp >= OLD_BAR
        old_pairs = max(1, int(old_taken.sum()) * (len(scores) - 1))
        old_smeared = "  ".join(f"{px} px: {100 * o[old_taken].sum() / old_pairs:.3f} %" for px, o in over.items())
        print(f"{kind} {amount:>6}: sharpness median {np.median(sharp):6.1f}, smear p5/median "
              f"{np.percentile(smears, 5):.2f}/{np.median(smears):.2f}  genuine over {args.threshold}: "
              f"{100 * (genuine >= args.threshold).mean():5.1f} %"
              f"  strangers over it {100 * (strangers >= args.threshold).sum() / pairs:.3f} %, against smeared "
              f"strangers {against_smears}\n      taken by enrolment {100 * taken.mean():5.1f} % (by the bar of 50 "
              f"before stop 46: {100 * (sharp >= OLD_BAR).mean():5.1f} %), their strangers over it against smeared "
              f"strangers {taken_smeared} (the old bar's: {old_smeared})")
        if kind != "smear":
            sharp_all.append(sharp), genuine_all.append(genuine), strangers_all.append(strangers)
    sharp, genuine, strangers = (np.concatenate(a) for a in (sharp_all, genuine_all, strangers_all))
    print("\nby the enrolment photo's sharpness (every view but the smears pooled):")
    for low, high in itertools.pairwise(BANDS):
        band = (sharp >= low) & (sharp < high)
        if not band.any():
            continue
        over = (strangers[band] >= args.threshold).sum() / (band.sum() * (len(found) - 1))
        print(f"  {low:>4}-{high if high < 1e9 else 'up':<4}: {band.sum():5d} photos  genuine over "
              f"{100 * (genuine[band] >= args.threshold).mean():5.1f} % (median {np.median(genuine[band]):.3f})"
              f"  strangers over {100 * over:.3f} %  highest stranger {strangers[band].max():.3f}")
    return 0


def _strangers(scores: np.ndarray) -> np.ndarray:
    return np.where(np.eye(len(scores), dtype=bool), -1.0, scores)


if __name__ == "__main__":
    raise SystemExit(main())
