"""Image operations on a frame held as a torch tensor (3, H, W) float32 BGR 0..255, on any device.

They mirror the OpenCV operations of the CPU path (`engine.stages.anonymize`, `engine.recognition.recognize.align_face`,
`engine.stages.detect.letterbox`) so that a frame uploaded once can be detected, aligned, embedded and anonymized
without leaving the GPU. Differences to OpenCV come from border handling and rounding only (measured in
tests/test_gpu_ops.py and bench/gpu_check.py), never from a weaker anonymization.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from engine.recognition.recognize import SIZE, alignment_matrix
from engine.stages.anonymize import MOSAIC_EDGE_SOFTENING, _soft_mask, whole_frame_blocks


def to_tensor(frame: np.ndarray, device: torch.device) -> Tensor:
    """HWC uint8 BGR (host) -> (3, H, W) float32 on `device`: one upload, converted there."""
    return torch.from_numpy(np.ascontiguousarray(frame)).to(device).permute(2, 0, 1).float()


def resize(image: Tensor, height: int, width: int, mode: str) -> Tensor:
    """(C, H, W) resized; `area` = cv2.INTER_AREA, `bilinear` = cv2.INTER_LINEAR (half-pixel centres)."""
    if image.shape[1:] == (height, width):
        return image
    if mode == "area":
        return F.adaptive_avg_pool2d(image[None], (height, width))[0]
    if mode == "nearest":
        return F.interpolate(image[None], size=(height, width), mode="nearest-exact")[0]
    return F.interpolate(image[None], size=(height, width), mode="bilinear", align_corners=False)[0]


@lru_cache(maxsize=32)
def _kernel(sigma: float, device: torch.device, dtype: torch.dtype) -> Tensor:
    radius = max(1, math.ceil(3 * sigma))  # cv2's kernel for 8-bit images reaches 3 sigma too
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return (k / k.sum()).to(device=device, dtype=dtype)


def gaussian_blur(image: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of (C, H, W), edges mirrored as cv2.BORDER_REFLECT does."""
    k = _kernel(float(sigma), image.device, image.dtype)
    r, c = k.numel() // 2, image.shape[0]
    x = F.conv2d(_mirror(image[None], r, 3), k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(_mirror(x, r, 2), k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)[0]


def _mirror(x: Tensor, r: int, dim: int) -> Tensor:
    """Pad `r` on both sides of `dim` mirrored as cv2.BORDER_REFLECT (fedcba|abcdef|fedcba), repeating the
    reflection where `r` exceeds the size (a strongly downscaled region can be 3 px for a 6 px radius)."""
    n = x.shape[dim]
    index = torch.arange(-r, n + r, device=x.device) % (2 * n)
    index = torch.where(index >= n, 2 * n - 1 - index, index)
    return x.index_select(dim, index)


def cover(roi: Tensor, mode: str, strength: float) -> Tensor:
    """What replaces a face region: the tensor twin of `Anonymizer._cover` (same sizes, same sigmas)."""
    _, h, w = roi.shape
    if mode == "fill":
        return roi.mean(dim=(1, 2), keepdim=True).expand_as(roi)
    if mode == "mosaic":
        blocks = max(2, round(12 - 9 * strength))
        bw, bh = blocks, max(1, round(blocks * h / w))
        blocky = resize(area_down(roi, bh, bw), bh * 8, bw * 8, "nearest")
        return resize(gaussian_blur(blocky, MOSAIC_EDGE_SOFTENING * 8), h, w, "bilinear")
    sigma = max(w, h) * (0.08 + 0.32 * strength)
    factor = max(1.0, sigma / 2.0)
    sw, sh = max(1, round(w / factor)), max(1, round(h / factor))
    return resize(gaussian_blur(area_down(roi, sh, sw), sigma / factor), h, w, "bilinear")


def area_down(roi: Tensor, height: int, width: int) -> Tensor:
    """The twin of `anonymize._area_down`: averages over whole blocks, the pixels past the last block left out."""
    _, h, w = roi.shape
    kx, ky = max(1, w // max(width, 1)), max(1, h // max(height, 1))
    if width * kx > w or height * ky > h:
        return resize(roi, height, width, "area")
    return resize(roi[:, : height * ky, : width * kx], height, width, "area")


def soft_alpha(shape: str, grown_h: int, grown_w: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """The CPU path's soft-edged mask template, resized to the grown region: (1, h, w)."""
    template = _mask_template(shape, device, dtype)
    return resize(template, grown_h, grown_w, "bilinear")


@lru_cache(maxsize=8)
def _mask_template(shape: str, device: torch.device, dtype: torch.dtype) -> Tensor:
    return torch.from_numpy(_soft_mask(shape)).to(device=device, dtype=dtype)[None]


def whole_frame(image: Tensor) -> Tensor:
    """The whole frame made unrecognisable, as `Anonymizer.whole` does: a few blocks across, blurred, scaled back."""
    _, h, w = image.shape
    columns, rows = whole_frame_blocks(w, h)
    small = resize(image, rows, columns, "area")
    return resize(gaussian_blur(small, 1.5), h, w, "bilinear")


def letterbox(image: Tensor, scale: float, multiple: int = 32,
              canvas: Callable[[int, int], tuple[int, int]] | None = None) -> Tensor:
    """`engine.stages.detect.letterbox` on the device: resized by `scale`, zero-padded right/bottom to `multiple`
    (or onto `canvas(height, width)`)."""
    _, h, w = image.shape
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    resized = resize(image, nh, nw, "bilinear")
    ph, pw = -(-nh // multiple) * multiple, -(-nw // multiple) * multiple
    if canvas is not None:
        ph, pw = canvas(ph, pw)
    return F.pad(resized, (0, pw - nw, 0, ph - nh))


def alignment_thetas(landmarks: np.ndarray, height: int, width: int) -> Tensor:
    """affine_grid's `theta` for each face: the same warp as `cv2.warpAffine(frame, alignment_matrix(kps))`.

    cv2 maps output pixel p to input pixel inv(M) p with pixel centres at integers; affine_grid works in
    [-1, 1] coordinates (align_corners=False: centres at (2i + 1) / n - 1), so theta = N_in inv(M) N_out^-1.
    """
    n_in = _normaliser(width, height)
    out_to_pixels = np.linalg.inv(_normaliser(SIZE, SIZE))
    thetas = []
    for kps in np.asarray(landmarks, np.float32).reshape(-1, 5, 2):
        m = np.vstack([alignment_matrix(kps), [0.0, 0.0, 1.0]])
        thetas.append((n_in @ np.linalg.inv(m) @ out_to_pixels)[:2])
    return torch.from_numpy(np.asarray(thetas, np.float32))


def _normaliser(width: int, height: int) -> np.ndarray:
    return np.array([[2.0 / width, 0.0, 1.0 / width - 1.0], [0.0, 2.0 / height, 1.0 / height - 1.0], [0, 0, 1]])


def align_batch(image: Tensor, landmarks: np.ndarray) -> Tensor:
    """Every face of one frame warped onto the 112x112 ArcFace template in one call: (n, 3, 112, 112)
    BGR 0..255, zeros outside the frame (cv2's BORDER_CONSTANT)."""
    thetas = alignment_thetas(landmarks, image.shape[1], image.shape[2]).to(image.device, image.dtype)
    n = thetas.shape[0]
    grid = F.affine_grid(thetas, [n, 3, SIZE, SIZE], align_corners=False)
    return F.grid_sample(image[None].expand(n, -1, -1, -1), grid, mode="bilinear", padding_mode="zeros",
                         align_corners=False)


def embedder_input(faces_bgr: Tensor) -> Tensor:
    """(n, 3, 112, 112) BGR 0..255 -> the recognizer's input: RGB, (x - 127.5) / 128 (`recognize.preprocess`)."""
    return (faces_bgr.flip(1) - 127.5) / 128.0
