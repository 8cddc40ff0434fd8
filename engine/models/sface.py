"""SFace (OpenCV Zoo, Apache-2.0) 128-D face embedder in torch, weights read from the cleaned ONNX file.

A MobileNet-v1 chain on the 112x112 ArcFace crop: a 3x3 stem, 13 depthwise-separable blocks (each conv followed
by BatchNorm and PReLU), a BatchNorm over the 1024x7x7 map, then one fully connected layer to 128 values and a
BatchNorm. Every BatchNorm after a conv or the fully connected layer is folded into it at load time. The file's
own input normalisation is taken out when it is provisioned (`engine.models.weights._clean_sface`): the input is
RGB (x - 127.5) / 128, the same as `engine.recognition.recognize.preprocess` gives.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import Tensor, nn

from engine.models.onnx_weights import conv_nodes, convs_of, load_convs

EMBEDDING = 128
# Depthwise-separable blocks: (channels in, channels out, depthwise stride); 112 px in, a 7x7 map out.
BLOCKS = ((32, 64, 1), (64, 128, 2), (128, 128, 1), (128, 256, 2), (256, 256, 1), (256, 512, 2),
          *((512, 512, 1),) * 5, (512, 1024, 2), (1024, 1024, 1))


def _conv(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    # bias=True: the BatchNorm after each conv is folded into it
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups), nn.PReLU(cout))


class SFace(nn.Module):
    """Input [N, 3, 112, 112] float RGB normalised as (x - 127.5) / 128; output [N, 128], not L2-normalised."""

    def __init__(self) -> None:
        super().__init__()
        layers = [_conv(3, 32, 3)]
        for cin, cout, stride in BLOCKS:
            layers += [_conv(cin, cin, 3, stride, groups=cin), _conv(cin, cout, 1)]
        self.features = nn.Sequential(*layers)
        self.norm = nn.BatchNorm2d(1024, eps=2e-5)
        self.fc = nn.Linear(1024 * 7 * 7, EMBEDDING)  # the final BatchNorm folded in

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.norm(self.features(x)).flatten(1))

    @classmethod
    def from_onnx(cls, path: str | Path) -> SFace:
        model = cls()
        nodes = conv_nodes(path)
        if not all(node.folded_bn for node in nodes):
            raise ValueError("SFace: every conv should be followed by a BatchNorm")
        load_convs(convs_of(model, ""), nodes)
        graph = onnx.load(str(path)).graph
        arrays = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
        prelus = [m for m in model.modules() if isinstance(m, nn.PReLU)]
        slopes = [arrays[node.input[1]].reshape(-1) for node in graph.node if node.op_type == "PRelu"]
        if len(prelus) != len(slopes):
            raise ValueError(f"architecture has {len(prelus)} PReLUs, the graph {len(slopes)}")
        norms = [node for node in graph.node if node.op_type == "BatchNormalization"]
        gemms = [node for node in graph.node if node.op_type == "Gemm"]
        if len(gemms) != 1 or len(norms) != len(nodes) + 2:
            raise ValueError("SFace: expected one Gemm and a BatchNorm before and after it")
        with torch.no_grad():
            for module, slope in zip(prelus, slopes, strict=True):
                module.weight.copy_(torch.from_numpy(slope.astype(np.float32)))
            _load_bn(model.norm, norms[-2], arrays)
            weight, bias = _fold_linear_bn(gemms[0], norms[-1], arrays)
            model.fc.weight.copy_(torch.from_numpy(weight))
            model.fc.bias.copy_(torch.from_numpy(bias))
        return model.eval()


def _bn_attr(node: onnx.NodeProto) -> float:
    return next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)


def _load_bn(module: nn.BatchNorm2d, node: onnx.NodeProto, arrays: dict[str, np.ndarray]) -> None:
    gamma, beta, mean, var = (torch.from_numpy(arrays[name].astype(np.float32)) for name in node.input[1:5])
    module.weight.copy_(gamma)
    module.bias.copy_(beta)
    module.running_mean.copy_(mean)
    module.running_var.copy_(var)
    module.eps = _bn_attr(node)


def _fold_linear_bn(gemm: onnx.NodeProto, bn: onnx.NodeProto, arrays: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
    """Gemm (y = x W^T + b, transB=1) then BatchNorm(eval) as one linear layer."""
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in gemm.attribute}
    if attrs.get("transB", 0) != 1 or attrs.get("transA", 0) != 0 or attrs.get("alpha", 1.0) != 1.0:
        raise ValueError("SFace: unexpected Gemm attributes")
    weight, bias = arrays[gemm.input[1]].astype(np.float64), arrays[gemm.input[2]].astype(np.float64)
    gamma, beta, mean, var = (arrays[name].astype(np.float64) for name in bn.input[1:5])
    scale = gamma / np.sqrt(var + _bn_attr(bn))
    return (weight * scale[:, None]).astype(np.float32), ((bias - mean) * scale + beta).astype(np.float32)
