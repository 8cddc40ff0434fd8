"""Recognition stage helpers: align a detected face and turn it into a 192-D identity embedding.

MobileFaceNet was trained on faces warped onto the ArcFace 112x112 template; the warp matters: an unaligned
square crop of the same faces drops TAR @ FAR 1e-3 from 97 % to 24 % (shared/notes/models.md). The network
runs through `engine.backends` like the detectors: onnxruntime on CPU, the torch port on CUDA.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import cv2
import numpy as np

from engine.backends import NetworkRunner, make_runner
from engine.config import Settings
from engine.weights import model_path

SIZE = 112
EMBEDDING_DIM = 192
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
    """The face warped onto the 112x112 ArcFace template (BGR uint8, like the frame)."""
    matrix = alignment_matrix(landmarks5)
    return cv2.warpAffine(frame_bgr, matrix, (SIZE, SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


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
    """(n, 112, 112, 3) BGR uint8 -> (n, 3, 112, 112) float32 RGB, (x - 127.5) / 128: the network's input."""
    rgb = faces_bgr[..., ::-1].astype(np.float32)
    return np.ascontiguousarray(((rgb - 127.5) / 128.0).transpose(0, 3, 1, 2))


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


class FaceEmbedder:
    """Faces in, L2-normalised 192-D embeddings out; cosine similarity is then a dot product."""

    dim = EMBEDDING_DIM

    def __init__(self, runner: NetworkRunner) -> None:
        self.runner = runner
        self.runner_name = runner.name
        self.faces_embedded = 0
        self.seconds = 0.0  # total time in the network, for telemetry and the evaluation's ms per face

    def embed(self, frame_bgr: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """(n, 5, 2) landmarks in `frame_bgr` -> (n, 192) float32, one batch through the network."""
        landmarks = np.asarray(landmarks, dtype=np.float32).reshape(-1, 5, 2)
        if not len(landmarks):
            return np.zeros((0, self.dim), np.float32)
        return self.embed_aligned(np.stack([align_face(frame_bgr, kps) for kps in landmarks]))

    def embed_aligned(self, faces_bgr: np.ndarray) -> np.ndarray:
        """(n, 112, 112, 3) aligned BGR crops -> (n, 192) float32, L2-normalised."""
        if not len(faces_bgr):
            return np.zeros((0, self.dim), np.float32)
        started = time.perf_counter()
        raw = self.runner.run(preprocess(np.asarray(faces_bgr)))[0]
        self.seconds += time.perf_counter() - started
        self.faces_embedded += len(faces_bgr)
        raw = np.asarray(raw, dtype=np.float32).reshape(len(faces_bgr), -1)
        if raw.shape[1] != self.dim or not np.isfinite(raw).all():
            raise ValueError(f"recognizer returned {raw.shape} with non-finite values or the wrong width")
        return l2_normalise(raw)


def _torch_module(path: Path):
    from engine.models.mobilefacenet import MobileFaceNet  # lazy: torch is not needed on the onnxruntime path

    return MobileFaceNet.from_onnx(path)


def create_embedder(settings: Settings, backend: str | None = None) -> FaceEmbedder:
    """The MobileFaceNet embedder on the settings' backend (or `backend`, to compare the two)."""
    runner = make_runner(backend or settings.backend, model_path("mobilefacenet"), _torch_module)
    return FaceEmbedder(runner)
