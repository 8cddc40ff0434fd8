"""Is YuNet on OpenVINO bf16 biased against faces, or only noisier? Per-face scores, bf16 against onnxruntime f32.

    python bench/bf16_bias.py [--sets wider,heldout,clips] [--clip-every 8] [--json out.json]

Both backends run the same letterboxed input (the detector's main pass, `YuNetDetector._detect_at`'s
preprocessing) and their raw outputs are compared, so nothing downstream (tracker, second look) blurs the
question. Three sets:
- `wider`: the 4 WIDER FACE val photos with their ground truth, at the scales the engine detects them (native
  and 1.5x). Per ground-truth face: the best score of any anchor whose box overlaps it at IoU >= 0.5, each
  backend (faces are chosen by the ground truth, not by either backend's score: no selection bias).
- `clips`: every `--clip-every`-th frame of the corpus's crowd clips (WIDER and group photos rendered to 1080p,
  ground truth per frame), at the 1080p main pass's scale (detect_width 1280). The same per-face figure.
- `heldout`: crowd photos NOT in the corpus (detection_unannotated: linzaer photos the corpus does not render,
  retinaface's test image, insightface's t1), no ground truth: anchor by anchor, binned by the mean of the two
  backends' scores (a symmetric choice: binning on one backend's score would regress the other towards the mean).
  This is the set a score offset for bf16 may be calibrated on.

Reported: mean, sd and sign counts of (bf16 - f32) per face, by face width in detector pixels; recall at
IoU 0.5 after NMS at the 0.1 / 0.3 / 0.5 bars (the second look's, low and start bars) and the faces found by one
backend only at each bar.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from engine.models.backends import OnnxRuntimeRunner, OpenVinoRunner  # noqa: E402
from engine.models.weights import model_path  # noqa: E402
from engine.stages.detect import detection_scale, letterbox, nms  # noqa: E402
from engine.stages.detectors.yunet import NMS_IOU, STRIDES, _anchor_grid  # noqa: E402

DATA = Path(os.environ.get("BLURCAST_DATA", REPO.parent / "shared" / "data"))
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "blurcast" / "corpus"
CORPUS = REPO / "bench" / "corpus"
BARS = (0.1, 0.3, 0.5)
SIZE_BUCKETS = ((0, 12), (12, 24), (24, 48), (48, 1e9))  # face width in detector input pixels
log = logging.getLogger("bf16_bias")


def raw_anchors(runner, image: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """(boxes in image pixels, score) of every anchor of one pass: YuNetDetector._decode without the bar."""
    padded = letterbox(image, scale)
    batch = np.ascontiguousarray(padded.transpose(2, 0, 1)[None], dtype=np.float32)
    out = runner.run(batch)
    cls, obj, bbox = out[0:3], out[3:6], out[6:9]
    boxes, scores = [], []
    for i, (stride, grid) in enumerate(zip(STRIDES, _anchor_grid(*padded.shape[:2]), strict=True)):
        scores.append(np.sqrt(np.clip(cls[i][0, :, 0], 0, 1) * np.clip(obj[i][0, :, 0], 0, 1)))
        b = bbox[i][0]
        centre, wh = (grid + b[:, :2]) * stride, np.exp(b[:, 2:4]) * stride
        boxes.append(np.concatenate([centre - wh / 2, centre + wh / 2], axis=1))
    return np.concatenate(boxes) / scale, np.concatenate(scores)


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in a (n,4) against every box in b (m,4)."""
    ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = ix * iy
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return inter / np.maximum(area(a)[:, None] + area(b)[None, :] - inter, 1e-9)


def face_scores(boxes: np.ndarray, score: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Per gt face, the best score of an anchor overlapping it at IoU >= 0.5 (0 when none does)."""
    cand = score >= 0.01  # anchors below cannot matter at any bar; keeps the IoU matrix small
    if not cand.any():
        return np.zeros(len(gt))
    m = iou(gt, boxes[cand])
    return np.where(m >= 0.5, score[cand][None, :], 0).max(axis=1)


def found_at(boxes: np.ndarray, score: np.ndarray, gt: np.ndarray, bar: float) -> np.ndarray:
    """Which gt faces a detection kept by NMS at this bar overlaps at IoU >= 0.5 (the recall definition)."""
    keep = score >= bar
    if not keep.any():
        return np.zeros(len(gt), bool)
    b, s = boxes[keep].astype(np.float32), score[keep].astype(np.float32)
    kept = nms(b, s, NMS_IOU)
    return iou(gt, b[kept]).max(axis=1) >= 0.5


class Tally:
    """Per-face score pairs and recall flips of one set."""

    def __init__(self) -> None:
        self.pairs: list[tuple[float, float, float]] = []  # (f32, bf16, width in detector px)
        self.found = {bar: np.zeros((2, 2), int) for bar in BARS}  # [f32 found][bf16 found]

    def add(self, runners, image: np.ndarray, scale: float, gt: np.ndarray) -> None:
        if not len(gt):
            return
        (ba, sa), (bb, sb) = (raw_anchors(r, image, scale) for r in runners)
        fa, fb = face_scores(ba, sa, gt), face_scores(bb, sb, gt)
        width = (gt[:, 2] - gt[:, 0]) * scale
        self.pairs += list(zip(fa.tolist(), fb.tolist(), width.tolist(), strict=True))
        for bar in BARS:
            ra, rb = found_at(ba, sa, gt, bar), found_at(bb, sb, gt, bar)
            np.add.at(self.found[bar], (ra.astype(int), rb.astype(int)), 1)

    def summary(self) -> dict:
        p = np.array(self.pairs).reshape(-1, 3)
        out: dict = {"faces": len(p), "by_width": {}, "recall": {}}
        for lo, hi in ((0, 1e9), *SIZE_BUCKETS):
            sel = (p[:, 2] >= lo) & (p[:, 2] < hi) & ((p[:, 0] >= 0.05) | (p[:, 1] >= 0.05))
            out["by_width"][f"{lo:g}-{hi:g}px" if hi < 1e9 else (f">={lo:g}px" if lo else "all")] = diff_stats(
                p[sel, 0], p[sel, 1])
        # Faces near the bars: where a shift changes what is found.
        near = lambda lo, hi: ((p[:, 0] + p[:, 1]) / 2 >= lo) & ((p[:, 0] + p[:, 1]) / 2 < hi)  # noqa: E731
        out["near_bars"] = {f"{lo}-{hi}": diff_stats(p[near(lo, hi), 0], p[near(lo, hi), 1])
                            for lo, hi in ((0.05, 0.2), (0.2, 0.4), (0.4, 0.6), (0.6, 1.01))}
        for bar, m in self.found.items():
            out["recall"][str(bar)] = {"f32": int(m[1].sum()), "bf16": int(m[:, 1].sum()), "f32_only": int(m[1, 0]),
                                       "bf16_only": int(m[0, 1]), "of": int(m.sum())}
        return out


def diff_stats(f32: np.ndarray, bf16: np.ndarray) -> dict:
    d = bf16 - f32
    n = len(d)
    if not n:
        return {"n": 0}
    sd = float(d.std(ddof=1)) if n > 1 else 0.0
    return {"n": n, "mean": round(float(d.mean()), 5), "sd": round(sd, 5),
            "t": round(float(d.mean()) / (sd / np.sqrt(n)), 2) if sd > 0 else None,
            "bf16_higher": int((d > 0).sum()), "bf16_lower": int((d < 0).sum()),
            "abs_p95": round(float(np.percentile(np.abs(d), 95)), 4), "abs_max": round(float(np.abs(d).max()), 4)}


def wider(runners) -> Tally:
    root = DATA / "detection_widerface_val"
    gt = json.loads((root / "wider_face_val_gt_subset.json").read_text())
    tally = Tally()
    for name, info in gt.items():
        image = cv2.imread(str(root / "images" / name))
        boxes = np.array(info["boxes_xywh"], np.float32)
        boxes[:, 2:] += boxes[:, :2]
        valid = ~np.array(json.loads(str(info["invalid"])), bool)
        for scale in (1.0, 1.5):  # detect_width 1280 and 2048 on these 1024 px photos
            tally.add(runners, image, scale, boxes[valid])
    return tally


def clips(runners, every: int) -> Tally:
    """The corpus's crowd clips (rendered photos, 1080p, gt per frame) at the 1080p main pass's scale."""
    tally = Tally()
    for gt_path in sorted(CACHE.glob("*_48f.gt.json")):
        if "far" in gt_path.name:
            continue
        video = gt_path.with_name(gt_path.name.removesuffix(".gt.json") + ".mp4")
        gt = json.loads(gt_path.read_text())
        by_frame = defaultdict(list)
        for face in gt["faces"]:
            if not face.get("ignore"):
                by_frame[face["frame"]].append(face["box"])
        cap = cv2.VideoCapture(str(video))
        index = 0
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            if index % every == 0:
                tally.add(runners, frame, detection_scale(frame, 1280), np.array(by_frame[index], np.float32))
            index += 1
        cap.release()
        log.info("%s: %d faces so far", gt_path.name, len(tally.pairs))
    return tally


def heldout_images() -> list[Path]:
    """Crowd photos that no corpus clip renders (the corpus's own are named in bench/corpus/*.gt.json)."""
    used = {json.loads(p.read_text()).get("image") for p in CORPUS.glob("*.gt.json")}
    root = DATA / "detection_unannotated"
    photos = sorted((root / "linzaer_imgs").glob("*.jpg"))
    photos += [root / "retinaface_curve" / "test.jpg", root / "pypi_insightface" / "t1.jpg"]
    return [p for p in photos if p.exists() and str(p.relative_to(DATA)) not in used]


def heldout(runners) -> dict:
    """Anchor by anchor on held-out photos, binned by the two scores' mean (symmetric)."""
    pairs = []
    for path in heldout_images():
        image = cv2.imread(str(path))
        for scale in (1.0, 1.5):
            (_, sa), (_, sb) = (raw_anchors(r, image, scale) for r in runners)
            sel = (sa + sb) / 2 >= 0.05
            pairs.append(np.stack([sa[sel], sb[sel]], axis=1))
    p = np.concatenate(pairs)
    mean = p.mean(axis=1)
    band = lambda lo, hi: p[(mean >= lo) & (mean < hi)]  # noqa: E731
    return {"images": [str(x.relative_to(DATA)) for x in heldout_images()],
            "by_mean_score": {f"{lo}-{hi}": diff_stats(band(lo, hi)[:, 0], band(lo, hi)[:, 1])
                              for lo, hi in ((0.05, 0.1), (0.1, 0.2), (0.2, 0.3), (0.3, 0.4), (0.4, 0.5),
                                             (0.5, 0.6), (0.6, 0.8), (0.8, 1.01))}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", default="wider,heldout,clips")
    parser.add_argument("--clip-every", type=int, default=8, help="every n-th frame of each crowd clip")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    path = model_path("yunet")
    bf16 = OpenVinoRunner(path)
    bf16.background_compiles = False
    runners = (OnnxRuntimeRunner(path), bf16)
    log.info("backends: %s vs %s", runners[0].name, runners[1].name)
    sets = args.sets.split(",")
    report: dict = {}
    if "wider" in sets:
        report["wider"] = wider(runners).summary()
    if "heldout" in sets:
        report["heldout"] = heldout(runners)
    if "clips" in sets:
        report["clips"] = clips(runners, args.clip_every).summary()
    print(json.dumps(report, indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
