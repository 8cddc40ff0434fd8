"""Recognition stage helpers: align a detected face and turn it into a 128-D identity embedding.

The recognizer is SFace (OpenCV Zoo, Apache-2.0): LFW View 2 99.40 % with this module's recipe, where the
MobileFaceNet it replaced gave 99.27 % (`bench/lfw_recipe.py`, docs/measurements.md). Both were trained on faces
warped onto the ArcFace 112x112 template; the warp matters: an unaligned square crop of the same faces drops
TAR @ FAR 1e-3 from 97 % to 24 % (shared/notes/models.md). The network runs through `engine.models.backends`
like the detectors, the torch port on CUDA; on an x86 CPU OpenVINO (in bf16 where the CPU has it, a seventh of
onnxruntime's CPU; f32 on AVX2, under half of it; LFW the same either way), elsewhere onnxruntime.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import cv2
import numpy as np

from engine.config import RECOGNIZER, Settings
from engine.models.backends import NetworkRunner, make_runner, resolve_backend
from engine.models.cuda_plans import BATCH_SIZES
from engine.models.weights import model_path
from engine.noise import NOISY_SIGMA, face_noise_sigma, smoothed

SIZE = 112
EMBEDDING_DIM = 128
WARM_BATCH = 16  # on CUDA, batches of up to this many faces are planned at start (larger ones when they come)
# Extra landmark passes (face widths in px) after the first at the detector's REFINE_PX: see `Landmarker`.
LANDMARK_PASSES_PX = (128, 192, 224)
# The face's mirror image added to its embedding (LFW's standard protocol) is off: with SFace it gains 9 of LFW's
# 6,000 pairs (99.40 -> 99.55 %, bench/lfw_recipe.py) for twice the network's time a face, and in live mode the
# slower re-checks after a warning sign left the streamer visible in only 2-3 of 4-5 samples in 3 of 6 runs of
# the UI's "this is me" test (tests/test_tui.py asks 80 %; without the mirror 4 of 4 runs passed). Part of the
# facebank's model tag: embeddings made another way are re-made, never mixed.
FLIP = False
# Anti-aliased warp (`align_face`).
ANTIALIAS = True
ANTIALIAS_MIN_SIGMA = 0.1
# A grainy face smoothed before it is embedded (`ungrained`, stop 37): a facebank photo embedded before it was is
# embedded again at start (facebank/live.py `refresh_if_stale`), so a photo and the stream never differ in it.
DEGRAIN = True
RECIPE = "+".join(part for part, on in (("flip", FLIP), ("ms4", True), ("aa", ANTIALIAS), ("dg", DEGRAIN)) if on)
# ArcFace template: right eye, left eye, nose, right and left mouth corners (image left to right), in the
# order YuNet gives its landmarks.
ARCFACE_DST = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32,
)


def alignment_matrix(landmarks5: np.ndarray) -> np.ndarray:
    """2x3 similarity transform taking the 5 landmarks onto the template.

    LMEDS ignores one badly placed landmark (a half-turned face); on degenerate input it returns None, and
    then the plain least-squares similarity (Umeyama) is used, which always exists.
    """
    kps = np.asarray(landmarks5, dtype=np.float32).reshape(5, 2)
    matrix, _ = cv2.estimateAffinePartial2D(kps, ARCFACE_DST, method=cv2.LMEDS)
    if matrix is None or not np.isfinite(matrix).all():
        matrix = _umeyama(kps, ARCFACE_DST)
    return matrix


def _umeyama(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) from src to dst."""
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    s, d = src - src_mean, dst - dst_mean
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.diag([1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])
    rot = u @ sign @ vt
    var = (s**2).sum() / len(src)
    scale = (sig * np.diag(sign)).sum() / var if var > 1e-12 else 1.0
    matrix = np.zeros((2, 3), dtype=np.float64)
    matrix[:, :2] = scale * rot
    matrix[:, 2] = dst_mean - scale * rot @ src_mean
    return matrix


def align_face(frame_bgr: np.ndarray, landmarks5: np.ndarray) -> np.ndarray:
    """The face warped onto the 112x112 ArcFace template (BGR uint8, like the frame).

    A face shrunk more than 2x is blurred first (anti-aliasing): a bilinear warp reads only the 2x2 pixels
    around each sample, which covers a 2x shrink but skips pixels beyond it, so a 300 px face came out aliased
    and embedded differently from the same photo at 100 px (6 real photos, faces 238-446 px: cosine 0.974-0.994;
    anti-aliased 0.989-0.997, `tests/test_recognition.py`). The blur adds what a 2x shrink's bilinear
    footprint lacks (Gaussian sigma 0.5 px of the template, in frame pixels). A full blur at LFW's milder ~0.8x
    shrink cost 3 pairs of 6,000 (`bench/lfw_recipe.py`, variant prefilter). Only the region the warp reads is
    blurred, padded so the result equals a blur of the whole frame.
    """
    matrix = alignment_matrix(landmarks5)
    shrink = math.sqrt(abs(float(np.linalg.det(matrix[:, :2]))))  # template px per frame px
    if ANTIALIAS and shrink < 0.5:
        sigma = 0.5 * math.sqrt(1.0 / shrink**2 - 4.0)
        if sigma > ANTIALIAS_MIN_SIGMA:
            frame_bgr, matrix = _blurred_source(frame_bgr, matrix, sigma)
    return cv2.warpAffine(frame_bgr, matrix, (SIZE, SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


def _blurred_source(frame_bgr: np.ndarray, matrix: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """The part of the frame the warp reads, Gaussian-blurred, and the warp matrix moved onto it."""
    inverse = cv2.invertAffineTransform(matrix)
    corners = np.array([[0, 0, 1], [SIZE, 0, 1], [0, SIZE, 1], [SIZE, SIZE, 1]], np.float64) @ inverse.T
    margin = math.ceil(4 * sigma) + 2  # the kernel's reach (OpenCV: 3 sigma for 8-bit) + bilinear, with room
    h, w = frame_bgr.shape[:2]
    x1, y1 = (max(0, math.floor(v) - margin) for v in corners.min(0))
    x2, y2 = (math.ceil(v) + margin for v in corners.max(0))
    x2, y2 = min(w, x2), min(h, y2)
    if x2 - x1 < 2 or y2 - y1 < 2:
        return frame_bgr, matrix
    region = cv2.GaussianBlur(frame_bgr[y1:y2, x1:x2], (0, 0), sigma)
    moved = matrix.astype(np.float64).copy()
    moved[:, 2] += moved[:, :2] @ np.array([x1, y1], np.float64)
    return region, moved


# Eyes, nose and mouth on the template; sharpness is measured here only, because the black border that the
# warp adds around a face near the image edge has hard edges that read as "sharp" whatever the face.
_INNER = (slice(36, 100), slice(24, 88))


def sharpness(aligned_bgr: np.ndarray) -> float:
    """Variance of the Laplacian over the aligned face's inner region: low means too blurred to identify.

    Measured on the aligned crop, not the photo, so the figure does not depend on the face's size in the
    image; the enrolment bar is in `facebank.enrol`.
    """
    grey = cv2.cvtColor(np.ascontiguousarray(aligned_bgr[_INNER]), cv2.COLOR_BGR2GRAY)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


# Second differences along 0, 45, 90 and 135 degrees (x to the right, y down), and their shares of the whole in a
# sharp face: a face is not alike in every direction (eyes, brows and mouth run across it), so a smear is a
# direction that lost detail against this profile, not against the others. Geometric mean of 1,400 LFW faces.
_DIRECTIONAL = [np.array(k, np.float32) for k in (
    [[0, 0, 0], [1, -2, 1], [0, 0, 0]], [[0, 0, 1], [0, -2, 0], [1, 0, 0]],
    [[0, 1, 0], [0, -2, 0], [0, 1, 0]], [[1, 0, 0], [0, -2, 0], [0, 0, 1]])]
_SHARP_PROFILE = np.array([0.0916, 0.3652, 0.1803, 0.3630])


def smear(aligned_bgr: np.ndarray) -> float:
    """How much fine detail one direction of the aligned face has lost against the others, 0..1, taken against a
    sharp face's profile: a pan's or a turning head's smear is high (nothing left along it); a face out of focus or
    small is soft in every direction alike. LFW faces: median 0.28, at most 0.75; smeared 9 px (of 112) median
    0.69-0.88 by its direction (bench/soft_enrolment.py)."""
    grey = cv2.cvtColor(np.ascontiguousarray(aligned_bgr[_INNER]), cv2.COLOR_BGR2GRAY).astype(np.float32)
    energy = np.array([np.mean(cv2.filter2D(grey, -1, k)[1:-1, 1:-1] ** 2) for k in _DIRECTIONAL]) / _SHARP_PROFILE
    return float(1.0 - energy.min() / max(energy.max(), 1e-9))


def ungrained(aligned_bgr: np.ndarray, image: np.ndarray, box: np.ndarray, landmarks5: np.ndarray) -> np.ndarray:
    """The aligned face as the recognizer gets it: smoothed where the grain around `box` in `image` is still
    there at the template's scale.

    Grain moves a small face's embedding away from the streamer's clean photo; smoothed, it comes back nearer (LFW's
    genuine pairs with faces ~55 px, darkened x0.35 with sigma-8 grain: 84.5 -> 92.3 % over the threshold; sigma
    16: 92.8 -> 96.5 %), and strangers stay under the clean rate (0.07 % of impostor pairs against 0.10 %;
    bench/grain_recognition.py).
    A face shrunk onto the template has its grain averaged away by the shrink (sigma / the factor), and a clean
    face is left as it is: smoothed, it loses a little of its identity (LFW: 0.6 points; a sharp 259 px portrait
    0.435 -> 0.341 against its pair). One rule for every path (photo, stream, live worker), so the same pixels
    still embed the same.
    """
    grain = face_noise_sigma(image, box) if DEGRAIN else 0.0
    if grain <= NOISY_SIGMA:
        return aligned_bgr
    template_px_per_frame_px = math.sqrt(abs(float(np.linalg.det(alignment_matrix(landmarks5)[:, :2]))))
    return smoothed(aligned_bgr) if grain * min(1.0, template_px_per_frame_px) > NOISY_SIGMA else aligned_bgr


def face_size(landmarks5: np.ndarray) -> float:
    """Face scale in pixels from the landmarks: about the width of the detector's box (eye-to-mouth distance x 2).

    Landmarks, not the box, because they also come from the tracker's latest detection and do not depend on
    how loosely the detector draws its boxes. Plain floats: called for every face in every frame, where numpy's
    per-call overhead on 10 numbers would cost more than the arithmetic.
    """
    (ax, ay), (bx, by), _, (cx, cy), (dx, dy) = np.asarray(landmarks5, dtype=np.float64).reshape(5, 2).tolist()
    eye_to_mouth = math.hypot((cx + dx - ax - bx) / 2, (cy + dy - ay - by) / 2)
    return 2.0 * max(eye_to_mouth, 0.8 * math.hypot(bx - ax, by - ay))


def preprocess(faces_bgr: np.ndarray) -> np.ndarray:
    """(n, 112, 112, 3) BGR uint8 -> (n, 3, 112, 112) float32 RGB, (x - 127.5) / 128: the network's input (SFace's
    file normalised so itself; that step is taken out when it is provisioned, `engine.models.weights`)."""
    rgb = faces_bgr[..., ::-1].astype(np.float32)
    return np.ascontiguousarray(((rgb - 127.5) / 128.0).transpose(0, 3, 1, 2))


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


class FaceEmbedder:
    """Faces in, L2-normalised 128-D embeddings out; cosine similarity is then a dot product."""

    dim = EMBEDDING_DIM

    def __init__(self, runner: NetworkRunner) -> None:
        self.runner = runner
        self.runner_name = runner.name
        self.faces_embedded = 0
        self.seconds = 0.0  # total time in the network, for telemetry and the evaluation's ms per face
        if getattr(runner, "plans_per_shape", False):  # CUDA: the usual batch sizes planned while the engine starts
            sizes = [size for size in BATCH_SIZES if size <= WARM_BATCH]
            runner.warm([preprocess(np.zeros((size, SIZE, SIZE, 3), np.uint8)) for size in sizes], "recognizer")

    def embed(self, frame_bgr: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """(n, 5, 2) landmarks in `frame_bgr` -> (n, 128) float32, one batch through the network.

        The bare warp, for tests and benchmarks of the network: the engine's paths (photo, stream, live worker) go
        through `Landmarker.align`, which also refines the landmarks and smooths a grainy face (`ungrained`)."""
        landmarks = np.asarray(landmarks, dtype=np.float32).reshape(-1, 5, 2)
        if not len(landmarks):
            return np.zeros((0, self.dim), np.float32)
        return self.embed_aligned(np.stack([align_face(frame_bgr, kps) for kps in landmarks]))

    def embed_aligned(self, faces_bgr: np.ndarray) -> np.ndarray:
        """(n, 112, 112, 3) aligned BGR crops -> (n, 128) float32, L2-normalised."""
        if not len(faces_bgr):
            return np.zeros((0, self.dim), np.float32)
        faces_bgr = np.asarray(faces_bgr)
        n = len(faces_bgr)
        batch = np.concatenate([faces_bgr, faces_bgr[:, :, ::-1]]) if FLIP else faces_bgr
        started = time.perf_counter()
        raw = self.runner.run(preprocess(batch))[0]
        self.seconds += time.perf_counter() - started
        self.faces_embedded += n
        raw = np.asarray(raw, dtype=np.float32).reshape(len(batch), -1)
        if raw.shape[1] != self.dim or not np.isfinite(raw).all():
            raise ValueError(f"recognizer returned {raw.shape} with non-finite values or the wrong width")
        if FLIP:  # each half L2-normalised first, so neither view outweighs the other
            raw = l2_normalise(raw[:n]) + l2_normalise(raw[n:])
        return l2_normalise(raw)


class Landmarker:
    """The 5 landmarks a face is aligned on, the same way for photos, evaluation and the stream.

    One object for every path, so a face cannot be recognised worse in the stream than as a photo of the same
    pixels. The face is detected again in a crop around its box at recognition scale (`refine`), then at
    LANDMARK_PASSES_PX more scales around the box that first pass found, and the landmarks are averaged:
    YuNet's landmarks move with the crop and the scale it is given, so a single pass made the embedding of the
    same face depend on the box it started from (a box 10 % off: cosine 0.95 between the two embeddings, worst
    0.88, on the dev clip's performer); the averaged passes start from the face itself (0.985, worst 0.947).
    Its own YuNet, not the stream's detector: whichever detector finds faces, alignment stays the same.
    CenterFace's landmarks averaged in were measured and not kept (`bench/lfw_recipe.py`): within LFW's noise
    (99.28 %, 3 pairs either way), for 60 % more time a face.
    """

    def __init__(self, detector) -> None:
        self.detector = detector
        self.passes = 0  # telemetry: refine passes run

    def __call__(self, image: np.ndarray, box: np.ndarray, fallback: np.ndarray) -> np.ndarray:
        """(5, 2) landmarks of the face in `box`; `fallback` (the detector's own) when it is not found again."""
        first = self.detector.refine(image, np.asarray(box, np.float32))
        self.passes += 1
        if not len(first):
            return np.asarray(fallback, np.float32).reshape(5, 2)
        found = [first.landmarks[0]]
        for face_px in LANDMARK_PASSES_PX:
            again = self.detector.refine(image, first.xyxy[0], face_px=face_px)
            self.passes += 1
            if len(again):
                found.append(again.landmarks[0])
        return np.mean(found, axis=0).astype(np.float32)

    def align(self, image: np.ndarray, box: np.ndarray, fallback: np.ndarray) -> np.ndarray:
        """The face in `box` on the 112x112 template, aligned on `__call__`'s landmarks, as it is embedded."""
        return self.align_and_measure(image, box, fallback)[0]

    def align_and_measure(self, image: np.ndarray, box: np.ndarray,
                          fallback: np.ndarray) -> tuple[np.ndarray, float]:
        """`align`'s face (`ungrained`), and the `sharpness` of the face before any smoothing: the enrolment bar
        and the identifier's re-embedding rule keep the measure they were set with."""
        landmarks = self(image, box, fallback)
        face = align_face(image, landmarks)
        return ungrained(face, image, box, landmarks), sharpness(face)


def create_landmarker(settings: Settings) -> Landmarker:
    from engine.stages.detectors import yunet  # lazy: not needed to embed aligned crops

    # `auto` keeps its YuNet off OpenVINO (resolve_backend: not in OPENVINO_AUTO): its small crops are no faster
    # there (f32 twice onnxruntime's CPU, bench/landmarker_cpu.py), and bf16 landmarks would move every embedding of
    # the facebank and the stream. On onnxruntime it takes one thread (backends.ONNXRUNTIME_THREADS).
    backend = resolve_backend(settings.backend, "landmarker")
    return Landmarker(yunet.create(settings.updated({"detector": "yunet", "backend": backend}), network="landmarker"))


def recognizer_module(path: Path):
    """The recognizer's torch port (CUDA, or `--backend torch`)."""
    from engine.models.sface import SFace  # lazy: torch is not needed on the onnxruntime path

    return SFace.from_onnx(path)



def create_embedder(settings: Settings, backend: str | None = None) -> FaceEmbedder:
    """The recognizer on the settings' backend (or `backend`, to compare the two)."""
    runner = make_runner(backend or settings.backend, model_path(RECOGNIZER), recognizer_module, network=RECOGNIZER)
    return FaceEmbedder(runner)
