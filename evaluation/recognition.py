"""Recognition evaluation: how well the facebank's embeddings tell people apart, on identity-labelled photos.

Inputs, as found in the data folders:
- a folder of photos with identities from, in this order: a MANIFEST.tsv whose notes say `identity=NAME` or
  `probe: NAME` (photos of several people are left out); a CSV with `image,identity` columns; sub-folder
  names; or the file name without its trailing number ("lennon-2" -> "lennon", "Aaron_Peirsol_0001" ->
  "Aaron_Peirsol"). Every pair of photos is scored.
- a pair list: LFW's `pairs.txt` or deepface's `master.csv` (`file_x,file_y,Decision`).

Figures: ROC AUC, EER, TAR at FAR 1e-3 and 1e-4 with their thresholds, LFW-style 10-fold accuracy, and
ms per face. The default similarity threshold comes from the pooled impostor scores of all datasets: the
lowest threshold that keeps the false accept rate at or below 0.1 %. With n impostor pairs a FAR below 1/n
cannot be measured; such figures are flagged `measurable: False`.

    python -m facebank.evaluate [DATA_DIR]   (default: $BLURCAST_DATA or ../shared/data)
"""

from __future__ import annotations

import csv
import itertools
import json
import logging
import os
import re
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.progress import track

from engine.config import Settings
from engine.faces import Detections
from engine.media import IMAGE_SUFFIXES
from engine.stages.detect import merge
from facebank.enrol import Enroller
from facebank.images import ImageRejected, load_photo

log = logging.getLogger(__name__)

EVAL_MIN_SCORE = 0.5  # lower than enrolment: every photo the detector can find is evaluated
FARS = (1e-3, 1e-4)
REPO_ROOT = Path(__file__).resolve().parents[1]


def default_data_dir() -> Path:
    return Path(os.environ.get("BLURCAST_DATA") or REPO_ROOT.parent / "shared" / "data")


# --- labels --------------------------------------------------------------------------------------------------------
def identity_from_name(path: Path) -> str:
    """File name without trailing numbers and separators: "lennon-2" -> "lennon", "raj5" -> "raj"."""
    return re.sub(r"[-_ .]*\d+$", "", path.stem) or path.stem


def _manifest_identities(root: Path) -> dict[Path, str] | None:
    manifest = root / "MANIFEST.tsv"
    if not manifest.exists():
        return None
    found = {}
    with open(manifest, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            notes = row.get("notes") or ""
            match = re.search(r"(?:identity=|probe: )([\w-]+)", notes)
            if match and "+" not in notes:  # "probe: obama + biden": several people, not one identity
                found[root / row["file"]] = match.group(1)
    return found or None


def _csv_identities(root: Path) -> dict[Path, str] | None:
    for table in sorted(root.glob("*.csv")):
        with open(table, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or not {"image", "identity"} <= set(reader.fieldnames):
                continue
            rows = list(reader)
        return {_find_image(root, r["image"]): r["identity"] for r in rows}
    return None


def _find_image(root: Path, name: str) -> Path:
    for candidate in (root / name, root / "images" / Path(name).name):
        if candidate.exists():
            return candidate
    return root / "images" / Path(name).name


def labelled_images(root: Path) -> list[tuple[Path, str]]:
    """(photo, identity) for every single-identity photo under `root`, sorted by path."""
    labels = _manifest_identities(root) or _csv_identities(root)
    if labels is None:
        photos = [p for p in sorted(root.rglob("*")) if p.suffix.lower() in IMAGE_SUFFIXES]
        nested = any(p.parent != root for p in photos)
        labels = {p: (p.parent.name if nested else identity_from_name(p)) for p in photos}
    return sorted((p, name) for p, name in labels.items() if p.suffix.lower() in IMAGE_SUFFIXES and p.exists())


def read_pairs(path: Path, image_root: Path | None = None) -> list[tuple[Path, Path, bool]]:
    """deepface `master.csv` (file_x,file_y,Decision) or LFW `pairs.txt`, as (photo, photo, same person)."""
    if path.suffix.lower() == ".csv":
        root = image_root or path.parent
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        decision = next(k for k in rows[0] if k.lower() == "decision")
        return [(_find_image(root, r["file_x"]), _find_image(root, r["file_y"]), r[decision].strip() == "Yes")
                for r in rows]
    return _lfw_pairs(path, image_root or lfw_image_root(path.parent))


# LFW is distributed as pairs.txt beside one of these image folders (person/person_0001.jpg inside).
LFW_IMAGE_FOLDERS = ("lfw-deepfunneled", "lfw", "lfw_funneled", "lfw-funneled", "lfw_deepfunneled")


def lfw_image_root(folder: Path) -> Path:
    """The image folder beside LFW's pairs.txt, or `folder` itself when the person folders are there."""
    for name in LFW_IMAGE_FOLDERS:
        inner = folder / name
        if (inner / name).is_dir():  # the archive's own nesting: lfw-deepfunneled/lfw-deepfunneled/...
            return inner / name
        if inner.is_dir():
            return inner
    return folder


def lfw_folds(path: Path) -> list[int] | None:
    """Fold number of each pair of an LFW pairs.txt: its header says "folds pairs_per_class", then each fold
    holds that many same-person pairs followed by as many different-person pairs. None for other files."""
    lines = path.read_text().splitlines()
    head = lines[0].split() if lines else []
    if len(head) != 2 or not all(h.isdigit() for h in head):
        return None
    folds, per_class = int(head[0]), int(head[1])
    return [k for k in range(folds) for _ in range(2 * per_class)]


def _lfw_pairs(path: Path, root: Path) -> list[tuple[Path, Path, bool]]:
    """LFW: "name i j" (same person) or "name1 i name2 j"; photos at root/name/name_%04d.jpg."""
    def photo(name: str, number: str) -> Path:
        return root / name / f"{name}_{int(number):04d}.jpg"

    pairs = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 3:
            pairs.append((photo(parts[0], parts[1]), photo(parts[0], parts[2]), True))
        elif len(parts) == 4:
            pairs.append((photo(parts[0], parts[1]), photo(parts[2], parts[3]), False))
    return pairs


def all_pairs(labelled: Sequence[tuple[Path, str]]) -> list[tuple[Path, Path, bool]]:
    return [(a, b, ia == ib) for (a, ia), (b, ib) in itertools.combinations(labelled, 2)]


# --- embedding photos ------------------------------------------------------------------------------------------
@dataclass
class PhotoEncoder:
    """Embeds the main face (highest detection score) of each photo, once; remembers what failed."""

    enroller: Enroller = field(default_factory=Enroller)
    cache: dict[Path, np.ndarray | None] = field(default_factory=dict)
    failed: dict[Path, str] = field(default_factory=dict)
    network_s: float = 0.0
    faces: int = 0

    def encode(self, photos: Iterable[Path], label: str = "embedding") -> None:
        todo = sorted({Path(p) for p in photos} - set(self.cache))
        for photo in track(todo, description=label, transient=True, disable=not todo):
            self.cache[photo] = self._embed(photo)

    def _embed(self, photo: Path) -> np.ndarray | None:
        try:
            image = load_photo(photo).image
        except ImageRejected as exc:
            log.warning("%s left out: %s", photo, exc)
            self.failed[photo] = str(exc)
            return None
        found = merge([d.detect(image, EVAL_MIN_SCORE) for d in self.enroller.detectors], 0.3)
        if not len(found):
            log.warning("%s left out: no face found", photo)
            self.failed[photo] = "no face found"
            return None
        j = central_face(found, image.shape[1], image.shape[0])
        face = self.enroller.landmarker.align(image, found.xyxy[j], found.landmarks[j])  # as enrolment and stream
        started = time.perf_counter()
        embedding = self.enroller.embedder.embed_aligned(face[None])[0]
        self.network_s += time.perf_counter() - started
        self.faces += 1
        return embedding

    def scores(self, pairs: Sequence[tuple[Path, Path, bool]]) -> tuple[np.ndarray, np.ndarray, int]:
        """Cosine similarity and same-person label of every pair whose two photos have a face."""
        self.encode([p for a, b, _ in pairs for p in (a, b)])
        kept = [(self.cache[a], self.cache[b], same) for a, b, same in pairs
                if self.cache.get(a) is not None and self.cache.get(b) is not None]
        if not kept:
            return np.zeros(0, np.float32), np.zeros(0, bool), len(pairs)
        sims = np.array([float(x @ y) for x, y, _ in kept], dtype=np.float64)  # float32 would round thresholds
        return sims, np.array([same for _, _, same in kept]), len(pairs) - len(kept)

    @property
    def ms_per_face(self) -> float | None:
        """Network time per face (both views when the embedding adds the mirror image)."""
        return 1000 * self.network_s / self.faces if self.faces else None


def central_face(found: Detections, width: int, height: int) -> int:
    """The photo's subject: of its clear faces, the one nearest the image centre (LFW's protocol: its photos
    are centred on the labelled person, and a bystander may be bigger or score higher).

    Clear: scoring within 0.2 of the best face and at least a third of the biggest one's width, so a tiny
    false detection near the centre (8 px boxes on a shirt, measured) is never taken for the subject.
    """
    widths = found.xyxy[:, 2] - found.xyxy[:, 0]
    clear = np.flatnonzero((found.score >= found.score.max() - 0.2) & (3 * widths >= widths.max()))
    centres = (found.xyxy[clear, :2] + found.xyxy[clear, 2:]) / 2
    return int(clear[np.argmin(np.linalg.norm(centres - np.array([width / 2, height / 2]), axis=1))])


# --- metrics ----------------------------------------------------------------------------------------------------
def roc_auc(scores: np.ndarray, same: np.ndarray) -> float:
    """Probability that a genuine pair scores above an impostor pair (ties count half): Mann-Whitney U."""
    genuine, impostor = scores[same], scores[~same]
    if not len(genuine) or not len(impostor):
        return float("nan")
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    ranks = (ends - (counts - 1) / 2.0)[inverse]  # average 1-based rank of tied values
    u = ranks[same].sum() - len(genuine) * (len(genuine) + 1) / 2
    return float(u / (len(genuine) * len(impostor)))


def equal_error_rate(scores: np.ndarray, same: np.ndarray) -> tuple[float, float]:
    """(EER, threshold): where the false accept and false reject rates cross."""
    genuine, impostor = scores[same], scores[~same]
    best = (2.0, 0.0, 0.0)
    for t in np.unique(scores):
        far, frr = float((impostor >= t).mean()), float((genuine < t).mean())
        if abs(far - frr) < best[0]:
            best = (abs(far - frr), (far + frr) / 2, float(t))
    return best[1], best[2]


def threshold_at_far(impostor: np.ndarray, far: float) -> float:
    """Lowest threshold (accept when similarity >= it) whose false accept rate on `impostor` is <= far."""
    ordered = np.sort(np.asarray(impostor, dtype=np.float64))[::-1]
    allowed = int(np.floor(far * len(ordered)))  # impostors that may score at or above the threshold
    if allowed >= len(ordered):
        return float(ordered[-1])
    return float(np.nextafter(ordered[allowed], np.inf))


def tar_at_far(scores: np.ndarray, same: np.ndarray, far: float) -> dict:
    scores = np.asarray(scores, dtype=np.float64)  # compared in float32, the threshold would round back down
    impostor = scores[~same]
    threshold = threshold_at_far(impostor, far)
    return {
        "far": far,
        "threshold": round(threshold, 4),
        "tar": round(float((scores[same] >= threshold).mean()), 4),
        "measured_far": round(float((impostor >= threshold).mean()), 6),
        "measurable": far * len(impostor) >= 1.0,  # else it only says "above every impostor seen"
    }


def ten_fold_accuracy(scores: np.ndarray, same: np.ndarray, folds: int = 10, seed: int = 0,
                      fold_of: np.ndarray | None = None) -> tuple[float, float]:
    """LFW protocol: the threshold is picked on 9 folds and the accuracy measured on the 10th.

    `fold_of`: each pair's fold as the pair list defines it (LFW View 2); otherwise random folds.
    """
    if fold_of is not None:
        parts = [np.flatnonzero(fold_of == k) for k in np.unique(fold_of)]
    else:
        parts = np.array_split(np.random.default_rng(seed).permutation(len(scores)), folds)
    accuracies = []
    for k, test in enumerate(parts):
        if not len(test):
            continue
        train = np.concatenate([p for j, p in enumerate(parts) if j != k])
        candidates = np.unique(scores[train])
        train_acc = [((scores[train] >= t) == same[train]).mean() for t in candidates]
        threshold = candidates[int(np.argmax(train_acc))]
        accuracies.append(float(((scores[test] >= threshold) == same[test]).mean()))
    return float(np.mean(accuracies)), float(np.std(accuracies))


def verification_metrics(scores: np.ndarray, same: np.ndarray, folds: np.ndarray | None = None) -> dict:
    scores, same = np.asarray(scores, dtype=np.float64), np.asarray(same, dtype=bool)
    genuine, impostor = scores[same], scores[~same]
    eer, eer_threshold = equal_error_rate(scores, same)
    accuracy, accuracy_std = ten_fold_accuracy(scores, same, fold_of=folds)
    return {
        "pairs": len(scores),
        "genuine": int(same.sum()),
        "impostor": int((~same).sum()),
        "auc": round(roc_auc(scores, same), 5),
        "eer": round(eer, 4),
        "eer_threshold": round(eer_threshold, 4),
        "tar_at_far": {f"{far:g}": tar_at_far(scores, same, far) for far in FARS},
        "accuracy_10fold": round(accuracy, 4),
        "accuracy_10fold_std": round(accuracy_std, 4),
        "genuine_min": round(float(genuine.min()), 4) if len(genuine) else None,
        "impostor_max": round(float(impostor.max()), 4) if len(impostor) else None,
    }


# --- datasets ----------------------------------------------------------------------------------------------------
@dataclass
class Dataset:
    """A named evaluation set: a pair list, or identity-labelled photos scored all against all."""

    name: str
    pairs: list[tuple[Path, Path, bool]]
    labelled: list[tuple[Path, str]] = field(default_factory=list)
    folds: list[int] | None = None  # the pair list's own folds (LFW View 2); random folds when None

    @classmethod
    def from_pairs_file(cls, path: Path, name: str | None = None) -> Dataset:
        """A pair list as distributed: deepface's master.csv, or LFW's pairs.txt with its 10 folds."""
        pairs = read_pairs(path)
        folds = lfw_folds(path) if path.suffix.lower() == ".txt" else None
        return cls(name or path.parent.name, pairs, folds=folds if folds and len(folds) == len(pairs) else None)


def standard_datasets(data_dir: Path) -> list[Dataset]:
    """The recognition sets of the project's data folder that are present."""
    sets = []
    master = data_dir / "recognition_deepface" / "master.csv"
    if master.exists():
        sets.append(Dataset("deepface_master_pairs", read_pairs(master, master.parent / "images")))
    # LFW (recognition_lfw/pairs.txt, 7,701 photos, minutes on 2 cores) is evaluated when named:
    # `blurcast eval-recognition ../shared/data/recognition_lfw`.
    for folder in ("recognition_deepface", "recognition_face_recognition", "recognition_openface",
                   "recognition_faceapi_bbt"):
        root = data_dir / folder
        if root.is_dir():
            labelled = labelled_images(root)
            if labelled:
                sets.append(Dataset(folder.removeprefix("recognition_") + "_all_pairs", all_pairs(labelled), labelled))
    return sets


def evaluate_dataset(dataset: Dataset, encoder: PhotoEncoder) -> dict:
    scores, same, skipped = encoder.scores(dataset.pairs)
    folds = None
    if dataset.folds is not None:  # the folds of the pairs that were scored (both photos have a face)
        folds = np.array([k for k, (a, b, _) in zip(dataset.folds, dataset.pairs, strict=True)
                          if encoder.cache.get(a) is not None and encoder.cache.get(b) is not None])
    result = verification_metrics(scores, same, folds) if len(scores) else {"pairs": 0}
    result["pairs_without_face"] = skipped
    if dataset.labelled:
        result["photos"] = len(dataset.labelled)
        result["identities"] = len({name for _, name in dataset.labelled})
    return result


def pooled_impostors(datasets: Sequence[Dataset], encoder: PhotoEncoder) -> np.ndarray:
    """Impostor scores of every dataset (each photo pair once), plus every cross-dataset labelled pair.

    Different datasets hold different people (politicians and actors; sitcom characters; musicians), so
    their cross pairs are impostors too: they raise the count to where FAR 1e-3 is measurable. A hidden
    same-person pair would only raise the threshold, the safe direction.
    """
    impostor_pairs = {frozenset((a, b)) for ds in datasets for a, b, same in ds.pairs if not same}
    labelled = [(i, p) for i, ds in enumerate(datasets) for p, _ in ds.labelled]
    impostor_pairs |= {frozenset((a, b)) for (i, a), (j, b) in itertools.combinations(labelled, 2) if i != j}
    encoder.encode([p for pair in impostor_pairs for p in pair])
    vectors = [[encoder.cache.get(p) for p in pair] for pair in impostor_pairs if len(pair) == 2]
    scores = [float(x @ y) for x, y in vectors if x is not None and y is not None]
    return np.sort(np.array(scores, dtype=np.float64))


def pooled_genuine(datasets: Sequence[Dataset], encoder: PhotoEncoder) -> np.ndarray:
    pairs = {frozenset((a, b)) for ds in datasets for a, b, same in ds.pairs if same}
    vectors = [[encoder.cache.get(p) for p in pair] for pair in pairs if len(pair) == 2]
    return np.array([float(x @ y) for x, y in vectors if x is not None and y is not None], dtype=np.float64)


def _distribution(impostors: np.ndarray, genuine: np.ndarray, far: float) -> dict:
    """The pooled impostor scores, the threshold they give at `far`, and both thresholds' figures."""
    if not len(impostors):
        return {"pairs": 0}
    derived = threshold_at_far(impostors, far)
    configured = Settings().similarity_threshold

    def at(threshold: float) -> dict:
        return {"threshold": round(threshold, 4), "far": round(float((impostors >= threshold).mean()), 6),
                "tar": round(float((genuine >= threshold).mean()), 4) if len(genuine) else None}

    return {
        "pairs": len(impostors),
        "impostors": len(impostors),
        "genuine_pairs": len(genuine),
        "percentiles": {str(q): round(float(np.percentile(impostors, q)), 4) for q in (50, 99, 99.9)},
        "max": round(float(impostors.max()), 4),
        "far": far,
        "threshold_at_far": round(derived, 4),
        "measurable": far * len(impostors) >= 1.0,
        "at_derived_threshold": at(derived),
        "at_configured_threshold": at(configured),
    }


def evaluate(data_dir: Path | None = None, datasets: Sequence[Dataset] | None = None,
             encoder: PhotoEncoder | None = None, far: float = 1e-3) -> dict:
    """Every dataset's figures, the pooled impostor distribution and the threshold it gives at `far`."""
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    datasets = list(datasets) if datasets is not None else standard_datasets(data_dir)
    encoder = encoder or PhotoEncoder()
    encoder.encode([p for ds in datasets for a, b, _ in ds.pairs for p in (a, b)], label="embedding photos")
    results = {ds.name: evaluate_dataset(ds, encoder) for ds in datasets}
    impostors = pooled_impostors(datasets, encoder)
    genuine = pooled_genuine(datasets, encoder)
    return {
        "datasets": results,
        "impostor_distribution": _distribution(impostors, genuine, far),
        "ms_per_face": round(encoder.ms_per_face, 2) if encoder.ms_per_face else None,
        "embedder": encoder.enroller.embedder.runner_name,
        "photos_without_face": {str(p): why for p, why in encoder.failed.items()},
    }


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING)
    args = sys.argv[1:] if argv is None else argv
    report = evaluate(Path(args[0]) if args else None)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
