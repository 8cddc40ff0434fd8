"""Does a facebank photo embedded again under motion smear keep a panning streamer recognised, and at what
cost in strangers let through?

    python bench/smear_templates.py [--lfw DIR] [--people N] [--threshold 0.37]

A camera pan smears every face along its direction; SFace's embedding of a smeared face drifts away from the
sharp photo it was enrolled from (the dev clip under `bench/suite.py --degrade motion`: 0.6 -> 0.2-0.45, the
streamer blurred in 46 % of his frames). Each facebank photo can be embedded again smeared ("templates"),
and a face matched against the best of them. That can also raise strangers' scores: a smear removes detail
that tells people apart. This measures both on LFW (deepfunneled), people with two photos or more: the
first photo is the facebank's, the second a probe; every probe is compared with every person's templates,
so a person's own probe gives the genuine score and every other person's probe an impostor score
(N x (N-1) pairs). Probes are tested sharp and smeared along several directions and lengths (in pixels of the
112 px aligned face, where a face's eyes are 35 px apart), smeared after the warp: a probe's landmarks are
its sharp photo's (the smear's effect on landmarks is not what this measures).

Prints per gallery variant and probe condition: genuine accepted at the threshold, strangers accepted at
the threshold (share of all impostor pairs, and how many probes had any stranger accepted), and the
cosine that lets 0.1 % of impostor pairs through.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.lfw_alignment import two_photo_people  # noqa: E402
from bench.smear import smeared  # noqa: E402
from engine.config import Settings  # noqa: E402
from engine.recognition.recognize import align_face, create_embedder, sharpness  # noqa: E402
from facebank.enrol import Enroller  # noqa: E402

log = logging.getLogger("smear_templates")
DEFAULT_LFW = REPO.parent / "shared" / "data" / "recognition_lfw" / "lfw-deepfunneled"

GALLERIES = {
    "photo only": [],
    "+ horizontal 9, 15": [(9, 0), (15, 0)],
    "+ 4 directions x 9, 15": [(length, angle) for length in (9, 15) for angle in (0, 45, 90, 135)],
}
PROBES = {
    "sharp": None,
    "smear 9 px horizontal": (9, 0),
    "smear 13 px horizontal": (13, 0),
    "smear 17 px horizontal": (17, 0),
    "smear 13 px at 30 deg": (13, 30),
    "smear 13 px vertical": (13, 90),
}


def aligned_pairs(folder: Path, people: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Names, and the first and second photo of each person aligned as the engine aligns a face."""
    found = two_photo_people(Enroller(Settings()), folder, people)
    log.info("aligned %d people", len(found))
    return ([name for name, _ in found], np.stack([align_face(*photos[0]) for _, photos in found]),
            np.stack([align_face(*photos[1]) for _, photos in found]))


def embed(embedder, faces: np.ndarray, smear: tuple[int, float] | None) -> np.ndarray:
    if smear is not None:
        faces = np.stack([smeared(face, *smear) for face in faces])
    return np.concatenate([embedder.embed_aligned(faces[i:i + 64]) for i in range(0, len(faces), 64)])


def report(gallery: np.ndarray, probes: np.ndarray, threshold: float) -> str:
    """gallery: (templates, people, dim); probes: (people, dim)."""
    scores = np.einsum("tpd,qd->tqp", gallery, probes).max(axis=0)  # probe x person, best template
    genuine = np.diag(scores)
    impostor_mask = ~np.eye(len(scores), dtype=bool)
    impostors = scores[impostor_mask]
    any_stranger = (np.where(impostor_mask, scores, -1) >= threshold).any(axis=1).mean()
    return (f"genuine {100 * (genuine >= threshold).mean():5.1f} %  "
            f"strangers {100 * (impostors >= threshold).mean():6.3f} % of pairs ({100 * any_stranger:4.1f} % of "
            f"probes)  FAR 0.1 % at {np.quantile(impostors, 0.999):.3f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lfw", type=Path, default=DEFAULT_LFW)
    parser.add_argument("--people", type=int, default=800)
    parser.add_argument("--threshold", type=float, default=Settings().similarity_threshold)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    started = time.monotonic()
    names, first, second = aligned_pairs(args.lfw, args.people)
    log.info("%d people aligned in %.0f s", len(names), time.monotonic() - started)
    embedder = create_embedder(Settings())
    sharp_gallery = embed(embedder, first, None)
    templates = {spec: embed(embedder, first, spec) for specs in GALLERIES.values() for spec in specs}
    probes = {name: embed(embedder, second, spec) for name, spec in PROBES.items()}
    for name, spec in PROBES.items():
        if spec is not None:
            aligned = np.stack([smeared(face, *spec) for face in second[:200]])
            log.info("%s: probe sharpness median %.0f (sharp %.0f)", name,
                     np.median([sharpness(f) for f in aligned]), np.median([sharpness(f) for f in second[:200]]))
    print(f"LFW, {len(names)} people, threshold {args.threshold}: {len(names) * (len(names) - 1):,} impostor pairs")
    for gallery_name, specs in GALLERIES.items():
        gallery = np.stack([sharp_gallery] + [templates[spec] for spec in specs])
        print(f"gallery: {gallery_name}")
        for probe_name, probe in probes.items():
            print(f"  {probe_name:24s} {report(gallery, probe, args.threshold)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
