"""LFW View 2 under variants of the embedding recipe: landmark source, warp, input convention, flip fusion.

    python bench/lfw_recipe.py [--lfw DIR] [--cache DIR] [--variant NAME ...] [--errors N]

The engine's recipe (`engine.recognition.recognize`): the centre face's box, YuNet `refine` at 160 px, then at
128, 192 and 224 px around the box found there, landmarks averaged; LMEDS similarity onto the ArcFace
template; bilinear warp, black border; RGB (x - 127.5) / 128; face and mirror image each L2-normalised and
summed. Each variant changes one of these. The slow part, finding each photo's face and every landmark pass
(YuNet at six scales, CenterFace at 1x and 2x), runs once and is cached outside the repo; each variant then
only warps and embeds the 7,701 photos (face and mirror) and is cached too. Prints per variant the 10-fold
accuracy (threshold picked on 9 folds, applied to the 10th, LFW's own folds), its worst fold, TAR at FAR 1e-3
and the pairs it gets wrong that the recipe gets right and vice versa; `--errors N` lists the recipe's N
worst-misclassified pairs (to look at).

Measured (LFW View 2, 6,000 pairs, every photo with a face; landmark passes 1,276 s and each variant's
embeddings 320-390 s on the 2 shared, heavily loaded cores): 10-fold accuracy / worst fold / TAR @ FAR 1e-3,
pairs fixed / broken against the recipe
    recipe (YuNet, 4 passes averaged)            99.267 / 98.50 / 98.37   (44 errors)
    flip: raw outputs summed, then normalised    99.267 / 98.50 / 98.37   0 / 0
    no mirror image                              99.250 / 98.67 / 98.13   10 / 11
    + CenterFace at 1x and 2x, all averaged      99.333 / 98.67 / 98.37   12 / 8
    + CenterFace at 1x                           99.333 / 98.83 / 98.57   10 / 6
    anti-aliasing blur before the warp           99.217 / 98.33 / 98.33   1 / 4
CenterFace's pass built into the engine's Landmarker (on the crop around the face, ~112 px, as the stream
would run it) gave 99.28 % in `blurcast eval-recognition`: the 1x variant's gain is 3 pairs of noise, for
60 % more time a face (`bench/bench_embedding.py`), so it was not kept.
Of the recipe's 20 worst errors, looked at by eye (face, landmarks and aligned crop): 18 are impostor pairs
at 0.37-0.53 with the right face and well-placed landmarks (similar age, build, hair; 2 of different sex),
and 2 are Colin_Montgomerie_0004, a face looking up under a cap that is likely another man (-0.14): no
wrong face picked, no bad landmarks. The gains above are landmark noise, a few pairs near the threshold.
The figures above are MobileFaceNet's (the recognizer until stop 22). SFace over the same cached landmarks
(docs/measurements.md, stop 22): face + mirror 99.550 / 99.00 / 99.17 (27 errors), one view (shipped) 99.400 /
98.67 / 99.07 (36), both networks' cosines averaged 99.567 (26).
Source check: MobileFaceNet_TF (sirius-ai) trains and tests on RGB, (x - 127.5) * 0.0078125, and sums the
two views' embeddings as this recipe does, so channel order and normalisation were not variants worth a run.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.lfw_alignment import centre_face  # noqa: E402
from engine.config import Settings  # noqa: E402
from engine.faces import box_iou  # noqa: E402
from engine.recognition import recognize  # noqa: E402
from engine.stages.detect import create_detector  # noqa: E402
from evaluation.recognition import Dataset, default_data_dir, tar_at_far  # noqa: E402
from facebank.enrol import Enroller  # noqa: E402
from facebank.images import load_photo  # noqa: E402

log = logging.getLogger("lfw_recipe")
# YuNet refine scales recorded after the first pass (at REFINE_PX from the centre face's box), all around the
# box that first pass found; the recipe averages the first pass with 128, 192 and 224.
SCALES = (96, 128, 160, 192, 224, 256)
RECIPE_SCALES = (128, 192, 224)


def landmark_sources(photos: list[Path]) -> dict[str, np.ndarray]:
    """Per photo: YuNet's first refine pass, its passes at SCALES, CenterFace at 1x and 2x (NaN: not found)."""
    enroller = Enroller()
    yunet = enroller.landmarker.detector
    centerface = create_detector(Settings().updated({"detector": "centerface"}))
    n = len(photos)
    out = {
        "first": np.full((n, 5, 2), np.nan, np.float32),
        "passes": np.full((n, len(SCALES), 5, 2), np.nan, np.float32),
        "centerface": np.full((n, 2, 5, 2), np.nan, np.float32),
        "box": np.full((n, 4), np.nan, np.float32),
    }
    for i, photo in enumerate(photos):
        if i % 500 == 0:
            log.info("landmarks %d/%d", i, n)
        if (centre := centre_face(enroller, photo)) is None:
            continue
        image, found, j = centre
        out["box"][i] = found.xyxy[j]
        first = yunet.refine(image, found.xyxy[j])
        if not len(first):
            out["first"][i] = found.landmarks[j]  # the recipe's fallback: the detector's own landmarks
            continue
        out["first"][i] = first.landmarks[0]
        for p, face_px in enumerate(SCALES):
            again = yunet.refine(image, first.xyxy[0], face_px=face_px)
            if len(again):
                out["passes"][i, p] = again.landmarks[0]
        for k, scale in enumerate((1.0, 2.0)):
            cf = centerface._detect_at(image, scale, 0.3)
            if len(cf):
                best = int(np.argmax([box_iou(b, first.xyxy[0]) for b in cf.xyxy]))
                if box_iou(cf.xyxy[best], first.xyxy[0]) >= 0.5:
                    out["centerface"][i, k] = cf.landmarks[best]
    return out


def _nanmean(stack: np.ndarray) -> np.ndarray:
    count = np.sum(~np.isnan(stack), axis=1)
    total = np.nansum(stack, axis=1)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def landmarks(src: dict[str, np.ndarray], how: str) -> np.ndarray:
    """(n, 5, 2) landmarks for a landmark variant; photos whose variant has nothing fall back to the recipe's."""
    idx = [SCALES.index(s) for s in RECIPE_SCALES]
    recipe = _nanmean(np.concatenate([src["first"][:, None], src["passes"][:, idx]], axis=1))
    if how == "recipe":
        return recipe
    if how == "first":
        out = src["first"].copy()
    elif how == "all-scales":
        out = _nanmean(np.concatenate([src["first"][:, None], src["passes"]], axis=1))
    elif how == "cf1":
        out = src["centerface"][:, 0].copy()
    elif how == "cf2":
        out = src["centerface"][:, 1].copy()
    elif how == "cf-mean":
        out = _nanmean(src["centerface"])
    elif how == "yunet+cf":  # the recipe's four YuNet passes and CenterFace's two, all weighted alike
        out = _nanmean(np.concatenate([src["first"][:, None], src["passes"][:, idx], src["centerface"]], axis=1))
    elif how in ("yunet+cf1", "yunet+cf2"):  # the recipe's four YuNet passes and one CenterFace pass
        cf = src["centerface"][:, int(how[-1]) - 1]
        out = _nanmean(np.concatenate([src["first"][:, None], src["passes"][:, idx], cf[:, None]], axis=1))
    elif how == "yunet|cf":  # the two detectors weighted alike
        out = _nanmean(np.stack([recipe, _nanmean(src["centerface"])], axis=1))
    else:
        raise ValueError(how)
    missing = np.isnan(out).any(axis=(1, 2))
    out[missing] = recipe[missing]
    return out


Warp = Callable[[np.ndarray, np.ndarray], np.ndarray]


def warp(kps: np.ndarray, image: np.ndarray, border: int = cv2.BORDER_CONSTANT, interp: int = cv2.INTER_LINEAR,
         scale: float = 1.0, prefilter: bool = False) -> np.ndarray:
    """The 112x112 crop for one warp variant: `scale` < 1 fits the template to a wider crop (more context);
    `prefilter` blurs the photo by its shrink factor first (anti-aliasing, as INTER_AREA would)."""
    dst = (recognize.ARCFACE_DST - 56.0) * scale + 56.0
    matrix, _ = cv2.estimateAffinePartial2D(np.asarray(kps, np.float32), dst, method=cv2.LMEDS)
    if matrix is None:
        matrix = recognize._umeyama(np.asarray(kps, np.float32), dst)
    if prefilter:
        shrink = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
        if shrink < 1.0:
            sigma = 0.5 * np.sqrt(max(1.0 / shrink**2 - 1.0, 0.0))
            image = cv2.GaussianBlur(image, (0, 0), sigma) if sigma > 0.1 else image
    return cv2.warpAffine(image, matrix, (recognize.SIZE, recognize.SIZE), flags=interp, borderMode=border)


# name: (landmark variant, warp keyword arguments, channel order into the network, flip fusion)
VARIANTS: dict[str, tuple[str, dict, str, str]] = {
    "recipe": ("recipe", {}, "rgb", "sum-normalised"),
    "flip-raw-sum": ("recipe", {}, "rgb", "sum-raw"),
    "no-flip": ("recipe", {}, "rgb", "none"),
    "bgr-input": ("recipe", {}, "bgr", "sum-normalised"),
    "first-pass": ("first", {}, "rgb", "sum-normalised"),
    "all-scales": ("all-scales", {}, "rgb", "sum-normalised"),
    "centerface-1x": ("cf1", {}, "rgb", "sum-normalised"),
    "centerface-2x": ("cf2", {}, "rgb", "sum-normalised"),
    "centerface-mean": ("cf-mean", {}, "rgb", "sum-normalised"),
    "yunet+centerface": ("yunet+cf", {}, "rgb", "sum-normalised"),
    "yunet|centerface": ("yunet|cf", {}, "rgb", "sum-normalised"),
    "yunet+centerface-1x": ("yunet+cf1", {}, "rgb", "sum-normalised"),
    "yunet+centerface-2x": ("yunet+cf2", {}, "rgb", "sum-normalised"),
    "yunet+centerface+prefilter": ("yunet+cf", {"prefilter": True}, "rgb", "sum-normalised"),
    "border-replicate": ("recipe", {"border": cv2.BORDER_REPLICATE}, "rgb", "sum-normalised"),
    "cubic": ("recipe", {"interp": cv2.INTER_CUBIC}, "rgb", "sum-normalised"),
    "prefilter": ("recipe", {"prefilter": True}, "rgb", "sum-normalised"),
    "scale-0.95": ("recipe", {"scale": 0.95}, "rgb", "sum-normalised"),
    "scale-1.05": ("recipe", {"scale": 1.05}, "rgb", "sum-normalised"),
}


def raw_views(embedder, photos: list[Path], kps: np.ndarray, warp_kwargs: dict, order: str) -> np.ndarray:
    """(n, 2, 192) the network's raw outputs for each face and its mirror (NaN where no face)."""
    out = np.full((len(photos), 2, recognize.EMBEDDING_DIM), np.nan, np.float32)
    batch, rows = [], []
    for i, photo in enumerate(photos):
        if np.isnan(kps[i]).any():
            continue
        batch.append(warp(kps[i], load_photo(photo).image, **warp_kwargs))
        rows.append(i)
        if len(batch) == 64 or i == len(photos) - 1:
            _flush(embedder, batch, rows, out, order)
            batch, rows = [], []
    _flush(embedder, batch, rows, out, order)
    return out


def _flush(embedder, batch: list, rows: list, out: np.ndarray, order: str) -> None:
    if not batch:
        return
    faces = np.stack(batch)
    both = np.concatenate([faces, faces[:, :, ::-1]])
    if order == "bgr":  # preprocess swaps BGR -> RGB; swapping first hands the network BGR
        both = both[..., ::-1]
    raw = np.asarray(embedder.runner.run(recognize.preprocess(both))[0], np.float32).reshape(len(both), -1)
    out[rows, 0], out[rows, 1] = raw[: len(batch)], raw[len(batch):]


def fuse(raw: np.ndarray, how: str) -> np.ndarray:
    a, b = recognize.l2_normalise(raw[:, 0]), recognize.l2_normalise(raw[:, 1])
    if how == "none":
        return a
    if how == "sum-raw":  # insightface's verification: raw outputs summed, then normalised
        return recognize.l2_normalise(raw[:, 0] + raw[:, 1])
    return recognize.l2_normalise(a + b)


def pair_scores(vectors: np.ndarray, index: dict[Path, int], dataset: Dataset) -> tuple[np.ndarray, ...]:
    a = np.array([index[p] for p, _, _ in dataset.pairs])
    b = np.array([index[p] for _, p, _ in dataset.pairs])
    sims = np.einsum("ij,ij->i", vectors[a], vectors[b]).astype(np.float64)
    return sims, np.array([s for _, _, s in dataset.pairs]), np.array(dataset.folds)


def fold_decisions(sims: np.ndarray, same: np.ndarray, folds: np.ndarray) -> tuple[np.ndarray, list[float]]:
    """Per pair: correct under the 10-fold protocol (threshold from the other 9 folds); per fold accuracy.
    A pair without a face on either side (NaN) counts as wrong."""
    correct = np.zeros(len(sims), bool)
    accs = []
    valid = ~np.isnan(sims)
    for k in np.unique(folds):
        train, test = (folds != k) & valid, folds == k
        cands = np.unique(sims[train])
        acc = [((sims[train] >= t) == same[train]).mean() for t in cands]
        t = cands[int(np.argmax(acc))]
        correct[test] = valid[test] & ((sims[test] >= t) == same[test])
        accs.append(float(correct[test].mean()))
    return correct, accs


def summary(sims: np.ndarray, same: np.ndarray, folds: np.ndarray, base: np.ndarray | None) -> dict:
    correct, accs = fold_decisions(sims, same, folds)
    valid = ~np.isnan(sims)
    out = {"acc": round(float(np.mean(accs)), 5), "worst_fold": round(min(accs), 4),
           "tar_1e-3": tar_at_far(sims[valid], same[valid], 1e-3)["tar"], "errors": int((~correct).sum())}
    if base is not None:
        out["fixed"], out["broken"] = int((correct & ~base).sum()), int((~correct & base).sum())
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lfw", type=Path, default=default_data_dir() / "recognition_lfw")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/blurcast_lfw_recipe"))
    parser.add_argument("--variant", action="append", choices=sorted(VARIANTS))
    parser.add_argument("--errors", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not (args.lfw / "pairs.txt").exists():
        log.error("no LFW at %s (pairs.txt beside lfw-deepfunneled/)", args.lfw)
        return 2
    args.cache.mkdir(parents=True, exist_ok=True)
    dataset = Dataset.from_pairs_file(args.lfw / "pairs.txt", "lfw")
    photos = sorted({p for a, b, _ in dataset.pairs for p in (a, b)})
    index = {p: i for i, p in enumerate(photos)}
    marks_file = args.cache / "landmarks.npz"
    if not marks_file.exists():
        started = time.perf_counter()
        np.savez(marks_file, **landmark_sources(photos))
        log.info("landmark passes: %.0f s", time.perf_counter() - started)
    src = dict(np.load(marks_file))
    embedder = recognize.create_embedder(Settings())
    results, base = {}, None
    for name in ["recipe", *[v for v in (args.variant or VARIANTS) if v != "recipe"]]:
        how, warp_kwargs, order, fusion = VARIANTS[name]
        key = f"{how}.{order}." + ".".join(f"{k}={v}" for k, v in sorted(warp_kwargs.items()))
        raw_file = args.cache / f"raw.{key}.npy"
        if raw_file.exists():
            raw = np.load(raw_file)
        else:
            started = time.perf_counter()
            raw = raw_views(embedder, photos, landmarks(src, how), warp_kwargs, order)
            np.save(raw_file, raw)
            log.info("%s: embedded in %.0f s", key, time.perf_counter() - started)
        sims, same, folds = pair_scores(fuse(raw, fusion), index, dataset)
        results[name] = summary(sims, same, folds, base)
        if name == "recipe":
            base = fold_decisions(sims, same, folds)[0]
            if args.errors:
                _list_errors(sims, same, base, dataset, args.errors)
        log.info("%-18s %s", name, json.dumps(results[name]))
    print(json.dumps(results, indent=2))
    return 0


def _list_errors(sims: np.ndarray, same: np.ndarray, correct: np.ndarray, dataset: Dataset, n: int) -> None:
    wrong = np.flatnonzero(~correct)
    wrong = wrong[np.argsort(np.where(same[wrong], sims[wrong], -sims[wrong]))]  # most wrong first
    for i in wrong[:n]:
        a, b, s = dataset.pairs[i]
        log.info("%s %.3f %s/%s %s/%s", "same" if s else "diff", sims[i], a.parent.name, a.name, b.parent.name, b.name)


if __name__ == "__main__":
    raise SystemExit(main())
