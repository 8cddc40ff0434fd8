"""The torch ports in `engine/models/` equal onnxruntime on the same ONNX files, on real images.

Tolerance: max abs diff 1e-4 plus rtol 1e-5. Both sides run float32 but sum in different orders (oneDNN vs MLAS
kernels, BN folded here), so differences grow with magnitude and depth: measured <= 4e-6 on YuNet (|x| < 8),
<= 2.3e-5 on CenterFace (scale maps, |x| < 5) and ~3e-6 on SFace embeddings (|x| up to ~2; MobileFaceNet's,
before it, ~2e-5 at |x| up to ~18, where one float32 ulp is already 2e-6); the rtol keeps the margin on the
largest values without loosening the small ones.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from engine.models.centerface import CenterFace
from engine.models.onnx_weights import conv_nodes, load_convs
from engine.models.sface import SFace
from engine.models.weights import model_path
from engine.models.yunet import YuNet

ATOL, RTOL = 1e-4, 1e-5
SIZES = [(640, 384), (320, 256)]  # (width, height), multiples of 32; the second proves dynamic input size
DETECTION_IMAGES = ["detection_unannotated/linzaer_imgs/1.jpg", "detection_widerface_val/images/*.jpg"]
FACE_CROPS = "recognition_faceapi_bbt/*/*1.png"  # one 150x150 face chip per identity


def _session(path: Path) -> ort.InferenceSession:
    """onnxruntime on the file with every input/output dim made symbolic (YuNet fixes 640x640, CenterFace 32x32)."""
    model = onnx.load(str(path))
    for value in [*model.graph.input, *model.graph.output]:
        for axis, dim in enumerate(value.type.tensor_type.shape.dim):
            dim.dim_param = f"{value.name}_{axis}"
    del model.graph.value_info[:]  # stale fixed-size shapes would clash with the new ones
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _image(data_dir: Path, pattern: str) -> np.ndarray:
    path = sorted(data_dir.glob(pattern))[0]
    image = cv2.imread(str(path))
    assert image is not None, path
    return image


def _letterbox(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize to fit, pad bottom/right with black: [1, 3, height, width] float32, channel order kept."""
    scale = min(width / image.shape[1], height / image.shape[0])
    resized = cv2.resize(image, (round(image.shape[1] * scale), round(image.shape[0] * scale)))
    canvas = np.zeros((height, width, 3), np.uint8)
    canvas[: resized.shape[0], : resized.shape[1]] = resized
    return np.ascontiguousarray(canvas.transpose(2, 0, 1)[None], dtype=np.float32)


def _torch(module: torch.nn.Module, batch: np.ndarray) -> list[np.ndarray]:
    with torch.inference_mode():
        out = module(torch.from_numpy(batch))
    return [o.numpy() for o in (out if isinstance(out, tuple) else (out,))]


def _assert_equal_outputs(ours: list[np.ndarray], ref: list[np.ndarray], names: list[str]) -> None:
    assert len(ours) == len(ref)
    for a, b, name in zip(ours, ref, names, strict=True):
        assert a.shape == b.shape, f"{name}: {a.shape} != {b.shape}"
        diff = float(np.abs(a - b).max())
        np.testing.assert_allclose(a, b, atol=ATOL, rtol=RTOL, err_msg=f"{name}: max abs diff {diff:.2e}")


@pytest.fixture(scope="module")
def yunet() -> tuple[YuNet, ort.InferenceSession]:
    path = model_path("yunet")
    return YuNet.from_onnx(path), _session(path)


@pytest.fixture(scope="module")
def centerface() -> tuple[CenterFace, ort.InferenceSession]:
    path = model_path("centerface")
    return CenterFace.from_onnx(path), _session(path)


@pytest.fixture(scope="module")
def sface() -> tuple[SFace, ort.InferenceSession]:
    path = model_path("sface")
    return SFace.from_onnx(path), _session(path)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("pattern", DETECTION_IMAGES)
def test_yunet_equals_onnxruntime(yunet, data_dir, pattern, size):
    module, session = yunet
    batch = _letterbox(_image(data_dir, pattern), *size)  # BGR, as YuNet takes it
    ref = session.run(None, {"input": batch})
    names = [o.name for o in session.get_outputs()]
    assert float(np.sqrt(ref[0] * ref[3]).max()) > 0.5, "no confident face: the comparison would be vacuous"
    _assert_equal_outputs(_torch(module, batch), ref, names)
    w, h = size
    assert [r.shape[1] for r in ref[:3]] == [(w // s) * (h // s) for s in (8, 16, 32)]


def test_yunet_batch_equals_per_image(yunet, data_dir):
    """The ONNX graph reshapes to batch 1; the port keeps the batch axis: item i equals a batch-1 run of image i."""
    module, session = yunet
    batch = np.concatenate([_letterbox(_image(data_dir, p), 320, 256) for p in DETECTION_IMAGES])
    ours = _torch(module, batch)
    for i in range(len(batch)):
        ref = session.run(None, {"input": batch[i : i + 1]})
        _assert_equal_outputs([o[i : i + 1] for o in ours], ref, [o.name for o in session.get_outputs()])


@pytest.mark.parametrize("size", SIZES)
def test_centerface_equals_onnxruntime(centerface, data_dir, size):
    module, session = centerface
    images = [_image(data_dir, p)[:, :, ::-1] for p in DETECTION_IMAGES]  # RGB, as CenterFace takes it
    batch = np.concatenate([_letterbox(image, *size) for image in images])
    ref = session.run(None, {"input.1": batch})
    assert float(ref[0].max()) > 0.5, "no confident face: the comparison would be vacuous"
    w, h = size
    assert [r.shape for r in ref] == [(2, c, h // 4, w // 4) for c in (1, 2, 2, 10)]
    _assert_equal_outputs(_torch(module, batch), ref, ["heatmap", "scale", "offset", "landmarks"])


def test_sface_equals_onnxruntime(sface, data_dir):
    module, session = sface
    paths = sorted(data_dir.glob(FACE_CROPS))
    assert len(paths) >= 4, f"expected face crops under {data_dir / FACE_CROPS}"
    crops = [cv2.resize(cv2.imread(str(p)), (112, 112))[:, :, ::-1] for p in paths]  # RGB
    batch = ((np.stack(crops).transpose(0, 3, 1, 2).astype(np.float32) - 127.5) / 128.0).copy()
    ref = session.run(None, {session.get_inputs()[0].name: batch})
    ours = _torch(module, batch)
    assert ours[0].shape == (len(paths), 128)
    _assert_equal_outputs(ours, ref, ["embeddings"])
    _assert_equal_outputs(_torch(module, batch[:1]), [ref[0][:1]], ["embeddings, batch 1"])


def test_misordered_architecture_fails_at_load():
    """Weights are matched to convs by graph order and checked: a wrong order must fail, not load garbage."""
    model = YuNet()
    convs = model.graph_order()
    convs[1], convs[2] = convs[2], convs[1]
    with pytest.raises(ValueError, match="does not match"):
        load_convs(convs, conv_nodes(model_path("yunet")))
