"""YuNet 2023mar (libfacedetection.train, MIT) in torch, weights read from the OpenCV Zoo ONNX file.

Layout and names follow the exporter's (`backbone.model0..5`, `neck.lateral_convs`, `bbox_head.multi_level_*`):
every block is a "ConvDPUnit", a 1x1 conv then a depthwise 3x3 (BN already folded into it), ReLU in the
backbone/neck, none in the heads. The neck is a top-down FPN with nearest 2x upsampling; the heads predict
per anchor point (one per cell, row-major) with sigmoid on cls/obj, raw bbox/kps offsets.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.models.onnx_weights import conv_nodes, convs_of, load_convs

STRIDES = (8, 16, 32)
WIDTH = 64  # channels of every pyramid level


class ConvDPUnit(nn.Module):
    """1x1 conv, depthwise 3x3 conv, optional ReLU."""

    def __init__(self, cin: int, cout: int, relu: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 1)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, groups=cout)
        self.relu = relu

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv2(self.conv1(x))
        return F.relu(x, inplace=True) if self.relu else x


class Stage(nn.Module):
    """Two ConvDPUnits (the exporter's `modelN.conv1/conv2`)."""

    def __init__(self, cin: int, cmid: int, cout: int) -> None:
        super().__init__()
        self.conv1 = ConvDPUnit(cin, cmid)
        self.conv2 = ConvDPUnit(cmid, cout)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2(self.conv1(x))


class Stem(nn.Module):
    """3x3 stride-2 conv + ReLU, then one ConvDPUnit."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=2, padding=1)
        self.conv2 = ConvDPUnit(cout, cout)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2(F.relu(self.conv1(x), inplace=True))


class Backbone(nn.Module):
    """Strides 2 (model0), 4 (model1-2), 8 (model3), 16 (model4), 32 (model5); 2x2 max-pools in between."""

    def __init__(self) -> None:
        super().__init__()
        self.model0 = Stem(3, 16)
        self.model1 = Stage(16, 16, 32)
        self.model2 = Stage(32, 32, WIDTH)
        self.model3 = Stage(WIDTH, WIDTH, WIDTH)
        self.model4 = Stage(WIDTH, WIDTH, WIDTH)
        self.model5 = Stage(WIDTH, WIDTH, WIDTH)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x = _max_pool2(self.model0(x))
        x = _max_pool2(self.model2(self.model1(x)))
        p8 = self.model3(x)
        p16 = self.model4(_max_pool2(p8))
        p32 = self.model5(_max_pool2(p16))
        return p8, p16, p32


def _max_pool2(x: Tensor) -> Tensor:
    """2x2/2 max-pool. On even sizes, the max of the four strided views: equal, and 3x faster than max_pool2d on
    channels_last CPU tensors (which also computes indices)."""
    if x.shape[-2] % 2 or x.shape[-1] % 2:
        return F.max_pool2d(x, 2)
    top = torch.maximum(x[..., 0::2, 0::2], x[..., 0::2, 1::2])
    return torch.maximum(top, torch.maximum(x[..., 1::2, 0::2], x[..., 1::2, 1::2]))


class Neck(nn.Module):
    """Top-down FPN: level i = lateral_i(backbone_i + up2(level i+1)); the top level has no sum."""

    def __init__(self) -> None:
        super().__init__()
        self.lateral_convs = nn.ModuleList(ConvDPUnit(WIDTH, WIDTH) for _ in STRIDES)

    def forward(self, p8: Tensor, p16: Tensor, p32: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        # ONNX Resize nearest/asymmetric/floor at scale 2 is exactly interpolate(mode="nearest").
        n32 = self.lateral_convs[2](p32)
        n16 = self.lateral_convs[1](p16 + F.interpolate(n32, scale_factor=2.0, mode="nearest"))
        n8 = self.lateral_convs[0](p8 + F.interpolate(n16, scale_factor=2.0, mode="nearest"))
        return n8, n16, n32


def _head(cout: int) -> nn.ModuleList:
    return nn.ModuleList(ConvDPUnit(WIDTH, cout, relu=False) for _ in STRIDES)


def _per_anchor(x: Tensor) -> Tensor:
    """[N, C, H, W] -> [N, H*W, C], anchors row-major (the graph's Transpose + Reshape)."""
    n, c = x.shape[:2]
    return x.permute(0, 2, 3, 1).reshape(n, -1, c)


_HEAD_CHANNELS = (1, 4, 1, 10)  # cls, bbox, obj, kps: the heads' registration order


class Head(nn.Module):
    """Per level: cls (1), bbox (4: dx, dy, log w, log h), obj (1), kps (10: 5 x (dx, dy)), all in stride units."""

    def __init__(self) -> None:
        super().__init__()
        # Registration order = the graph's node order (load_convs relies on it).
        self.multi_level_cls = _head(1)
        self.multi_level_bbox = _head(4)
        self.multi_level_obj = _head(1)
        self.multi_level_kps = _head(10)

    def forward(self, feats: tuple[Tensor, Tensor, Tensor]) -> tuple[Tensor, ...]:
        levels = [self._level(i, x) for i, x in enumerate(feats)]
        return tuple(level[k] for k in range(4) for level in levels)

    def _level(self, i: int, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(cls, obj, bbox, kps) of one level.

        The four heads read the same map, so their 1x1 convs stacked are one 1x1 conv and their depthwise 3x3s
        (cls/obj's single-channel 3x3 included) one depthwise conv: the same arithmetic in 2 conv calls instead
        of 8 (CPU time here is mostly per-call overhead on these small maps).
        """
        units = [self.multi_level_cls[i], self.multi_level_bbox[i], self.multi_level_obj[i], self.multi_level_kps[i]]
        w1, b1 = torch.cat([u.conv1.weight for u in units]), torch.cat([u.conv1.bias for u in units])
        w2, b2 = torch.cat([u.conv2.weight for u in units]), torch.cat([u.conv2.bias for u in units])
        y = _per_anchor(F.conv2d(F.conv2d(x, w1, b1), w2, b2, padding=1, groups=w2.shape[0]))
        cls, bbox, obj, kps = y.split(_HEAD_CHANNELS, dim=2)
        return torch.sigmoid(cls), torch.sigmoid(obj), bbox.contiguous(), kps.contiguous()


class YuNet(nn.Module):
    """Input [N, 3, H, W] float BGR 0..255, H and W multiples of 32.

    Output, in the ONNX output order: cls_8/16/32 [N, A, 1], obj_* [N, A, 1], bbox_* [N, A, 4], kps_* [N, A, 10]
    with A = (H/s) * (W/s).
    """

    def __init__(self) -> None:
        super().__init__()
        self.backbone = Backbone()
        self.neck = Neck()
        self.bbox_head = Head()

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        return self.bbox_head(self.neck(*self.backbone(x)))

    def graph_order(self) -> list[tuple[str, nn.Conv2d]]:
        """Convolutions in the ONNX graph's node order: the neck runs top-down, lateral 2 first."""
        lateral = self.neck.lateral_convs
        neck = [conv for i in (2, 1, 0) for conv in convs_of(lateral[i], f"neck.lateral_convs.{i}")]
        return [*convs_of(self.backbone, "backbone"), *neck, *convs_of(self.bbox_head, "bbox_head")]

    @classmethod
    def from_onnx(cls, path: str | Path) -> YuNet:
        model = cls()
        load_convs(model.graph_order(), conv_nodes(path))
        # NHWC: oneDNN's depthwise kernels are several times faster in it; convs follow their weights' format.
        return model.to(memory_format=torch.channels_last).eval()
