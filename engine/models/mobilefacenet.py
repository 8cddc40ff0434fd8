"""MobileFaceNet (sirius-ai, Apache-2.0) 192-D embedder in torch, weights read from the tflite2onnx file.

The TensorFlow original has BatchNorm folded into every conv and writes PReLU out as
`relu(x) + c * (x - |x|)` with c = alpha / 2 per channel (Relu, Abs, Sub, Mul, Add in the graph); x - |x| is
2*min(x, 0) exactly in floating point, so `nn.PReLU` with alpha = 2c computes the same numbers.
Stride-2 convs use TensorFlow "SAME" padding: nothing before, one row/column after.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from torch import Tensor, nn

from engine.models.onnx_weights import conv_nodes, convs_of, load_convs

# Bottleneck settings (expansion t, channels c, repeats n, first stride s), as in the MobileFaceNet paper.
SETTINGS = ((2, 64, 5, 2), (4, 128, 1, 2), (2, 128, 6, 1), (4, 128, 1, 2), (2, 128, 2, 1))
EMBEDDING = 192


class SameConv2d(nn.Conv2d):
    """Conv with TensorFlow SAME padding at stride 2 on even sizes (pad bottom/right by one only)."""

    onnx_pads = (0, 0, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(F.pad(x, (0, 1, 0, 1)))


def _conv3x3(cin: int, cout: int, stride: int, groups: int = 1) -> nn.Conv2d:
    if stride == 2:
        return SameConv2d(cin, cout, 3, stride=2, groups=groups)
    return nn.Conv2d(cin, cout, 3, padding=1, groups=groups)


class Bottleneck(nn.Module):
    """1x1 expand + PReLU -> depthwise 3x3 + PReLU -> 1x1 project (linear), residual at stride 1."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        self.expand = nn.Conv2d(cin, mid, 1)
        self.expand_act = nn.PReLU(mid)
        self.depthwise = _conv3x3(mid, mid, stride, groups=mid)
        self.depthwise_act = nn.PReLU(mid)
        self.project = nn.Conv2d(mid, cout, 1)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        y = self.project(self.depthwise_act(self.depthwise(self.expand_act(self.expand(x)))))
        return x + y if self.residual else y


class MobileFaceNet(nn.Module):
    """Input [N, 3, 112, 112] float RGB normalised as (x - 127.5) / 128; output [N, 192], not L2-normalised."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = _conv3x3(3, 64, 2)
        self.conv1_act = nn.PReLU(64)
        self.dw_conv = nn.Conv2d(64, 64, 3, padding=1, groups=64)
        self.dw_act = nn.PReLU(64)
        self.pw_conv = nn.Conv2d(64, 64, 1)  # linear, no activation
        blocks, cin = [], 64
        for t, c, n, s in SETTINGS:
            blocks += [Bottleneck(cin if i == 0 else c, c, s if i == 0 else 1, t) for i in range(n)]
            cin = c
        self.blocks = nn.Sequential(*blocks)
        self.conv_last = nn.Conv2d(128, 512, 1)
        self.conv_last_act = nn.PReLU(512)
        self.gdc = nn.Conv2d(512, 512, 7, groups=512)  # global depthwise conv over the 7x7 map, linear
        self.linear = nn.Conv2d(512, 512, 1)
        self.embedding = nn.Conv2d(512, EMBEDDING, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.dw_act(self.dw_conv(self.conv1_act(self.conv1(x))))
        x = self.blocks(self.pw_conv(x))
        x = self.gdc(self.conv_last_act(self.conv_last(x)))
        return self.embedding(self.linear(x)).flatten(1)

    @classmethod
    def from_onnx(cls, path: str | Path) -> MobileFaceNet:
        model = cls()
        load_convs(convs_of(model, ""), conv_nodes(path))
        prelus = [m for m in model.modules() if isinstance(m, nn.PReLU)]
        alphas = prelu_alphas(path)
        if len(prelus) != len(alphas):
            raise ValueError(f"architecture has {len(prelus)} PReLUs, the graph {len(alphas)}")
        with torch.no_grad():
            for module, alpha in zip(prelus, alphas, strict=True):
                module.weight.copy_(torch.from_numpy(alpha))
        # NHWC: oneDNN's depthwise kernels are several times faster in it; convs follow their weights' format.
        return model.to(memory_format=torch.channels_last).eval()


def prelu_alphas(path: str | Path) -> list[np.ndarray]:
    """PReLU slopes in graph order, from each `Mul(Reshape(c), Sub(x, Abs(x)))`: alpha = 2c."""
    graph = onnx.load(str(path)).graph
    inits = {init.name: init for init in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    alphas = []
    for node in graph.node:
        if node.op_type != "Mul":
            continue
        const, diff = (producer[name] for name in node.input)
        if const.op_type != "Reshape" or diff.op_type != "Sub":
            raise ValueError(f"{node.name}: not the PReLU pattern Mul(Reshape(c), Sub(x, Abs(x)))")
        x, absolute = diff.input[0], producer[diff.input[1]]
        if absolute.op_type != "Abs" or absolute.input[0] != x:
            raise ValueError(f"{node.name}: not the PReLU pattern Mul(Reshape(c), Sub(x, Abs(x)))")
        alphas.append(2.0 * numpy_helper.to_array(inits[const.input[0]]).astype(np.float32).reshape(-1))
    return alphas
