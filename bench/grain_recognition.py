"""Does smoothing a grainy face before embedding bring it back nearer the streamer's clean photo, and at what cost
in strangers let through? And how many faces of the photo sets does `ungrained`'s gate smooth?

    python bench/grain_recognition.py [--people 600] [--scale 0.5]   # the LFW probe
    python bench/grain_recognition.py --gate                          # faces over the gate, per photo set

The probe: LFW (deepfunneled) people with two photos; the first photo is the facebank's, clean; the second is shrunk
(`--scale`: LFW's ~110 px faces to ~55 px, a face in a street stream), degraded, and aligned on its clean landmarks
(grain's effect on landmarks is not what this measures). Every probe against every person: the genuine score and
N x (N-1) impostor scores. Conditions: clean, sigma 8 and 16 Gaussian grain, night (x0.35 then sigma 8); each
embedded as aligned and with the aligned crop smoothed (`engine.noise.smoothed`). docs/measurements.md, stop 37.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.lfw_alignment import two_photo_people  # noqa: E402
from engine.config import Settings  # noqa: E402
from engine.noise import NOISY_SIGMA, face_noise_sigma, smoothed  # noqa: E402
from engine.recognition.recognize import align_face, alignment_matrix, create_embedder  # noqa: E402
from facebank.enrol import Enroller  # noqa: E402

log = logging.getLogger("grain_recognition")
DATA = Path(os.environ.get("BLURCAST_DATA", REPO.parent / "shared" / "data"))
CONDITIONS = {"clean": (1.0, 0.0), "grain 8": (1.0, 8.0), "grain 16": (1.0, 16.0), "night": (0.35, 8.0)}
PHOTO_SETS = ("recognition_lfw/lfw-deepfunneled", "recognition_openface", "recognition_face_recognition",
              "recognition_faceapi_bbt", "recognition_deepface")


def pairs(folder: Path, people: int) -> tuple[list[np.ndarray], list[tuple[np.ndarray, np.ndarray]]]:
    """Each person's first photo aligned (clean), and their second photo with its landmarks."""
    found = two_photo_people(Enroller(Settings()), folder, people)
    return [align_face(*photos[0]) for _, photos in found], [photos[1] for _, photos in found]


def degraded(image: np.ndarray, gain: float, sigma: float, rng: np.random.Generator) -> np.ndarray:
    return np.clip(image * gain + rng.normal(0.0, sigma, image.shape), 0, 255).astype(np.uint8)


def report(probes: np.ndarray, gallery: np.ndarray, threshold: float) -> str:
    scores = probes @ gallery.T
    genuine, impostors = np.diag(scores), scores[~np.eye(len(scores), dtype=bool)]
    return (f"genuine over {threshold}: {100 * (genuine >= threshold).mean():5.1f} %  median {np.median(genuine):.3f}"
            f"  strangers over it: {100 * (impostors >= threshold).mean():.3f} % of {len(impostors):,} pairs")


def probe(args: argparse.Namespace) -> None:
    first, second = pairs(args.lfw, args.people)
    log.info("%d people", len(first))
    embedder = create_embedder(Settings())

    def embed(faces: list[np.ndarray]) -> np.ndarray:
        faces = np.stack(faces)
        return np.concatenate([embedder.embed_aligned(faces[i:i + 64]) for i in range(0, len(faces), 64)])

    gallery = embed(first)
    rng = np.random.default_rng(0)
    for name, (gain, sigma) in CONDITIONS.items():
        small = [(cv2.resize(image, None, fx=args.scale, fy=args.scale, interpolation=cv2.INTER_AREA),
                  marks * args.scale) for image, marks in second]
        aligned = [align_face(degraded(image, gain, sigma, rng), marks) for image, marks in small]
        print(f"{name:9s} as aligned  {report(embed(aligned), gallery, args.threshold)}")
        print(f"{name:9s} smoothed    {report(embed([smoothed(f) for f in aligned]), gallery, args.threshold)}")


def gate() -> None:
    landmarker = Enroller(Settings()).landmarker
    for folder in PHOTO_SETS:
        photos = sorted(p for p in (DATA / folder).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        faces = smoothed_faces = 0
        worst = (0.0, "")
        for photo in photos:
            if (image := cv2.imread(str(photo))) is None:
                continue
            found = landmarker.detector.detect(image, 0.5)
            for box, marks in zip(found.xyxy, found.landmarks, strict=True):
                shrink = math.sqrt(abs(float(np.linalg.det(alignment_matrix(marks)[:, :2]))))
                grain = face_noise_sigma(image, box) * min(1.0, shrink)  # as `ungrained` counts it
                faces += 1
                smoothed_faces += grain > NOISY_SIGMA
                worst = max(worst, (grain, photo.name))
        print(f"{folder}: {smoothed_faces} of {faces} faces smoothed; highest {worst[0]:.2f} ({worst[1]})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lfw", type=Path, default=DATA / "recognition_lfw" / "lfw-deepfunneled")
    parser.add_argument("--people", type=int, default=600)
    parser.add_argument("--scale", type=float, default=0.5)
    parser.add_argument("--threshold", type=float, default=Settings().similarity_threshold)
    parser.add_argument("--gate", action="store_true", help="count the photo sets' faces over the gate instead")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    gate() if args.gate else probe(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
