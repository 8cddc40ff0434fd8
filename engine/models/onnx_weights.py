"""Read weights out of ONNX files for the torch ports in `engine/models/` (no onnx2torch, no graph interpreter).

The ports are hand-written architectures. Their convolutions are listed in the graph's node order and filled
from the graph's Conv/ConvTranspose nodes by `load_convs`, which checks every shape and attribute (and every
weight name the exporter kept) so that a wrong architecture fails loudly at load time, not with bad boxes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn


def load_initializers(path: str | Path) -> dict[str, np.ndarray]:
    """Every initializer of the file, by name, as numpy arrays."""
    return _arrays(onnx.load(str(path)).graph)


def _arrays(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    return {init.name: numpy_helper.to_array(init) for init in graph.initializer}


@dataclass(frozen=True)
class ConvNode:
    """One Conv/ConvTranspose node with its (possibly BN-folded) weight and bias."""

    op: str
    weight_name: str
    weight: np.ndarray
    bias: np.ndarray | None
    strides: tuple[int, int]
    pads: tuple[int, int, int, int]  # ONNX order: top, left, bottom, right
    dilations: tuple[int, int]
    group: int
    folded_bn: bool


def conv_nodes(path: str | Path) -> list[ConvNode]:
    """The graph's Conv/ConvTranspose nodes in node order; a BatchNormalization right after one is folded in."""
    graph = onnx.load(str(path)).graph
    inits = _arrays(graph)
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    return [_conv_node(node, inits, consumers) for node in graph.node if node.op_type in ("Conv", "ConvTranspose")]


def _conv_node(
    node: onnx.NodeProto, inits: dict[str, np.ndarray], consumers: dict[str, list[onnx.NodeProto]]
) -> ConvNode:
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise ValueError(f"{node.name}: auto_pad is not supported")
    weight = inits[node.input[1]].astype(np.float32)
    bias = inits[node.input[2]].astype(np.float32) if len(node.input) > 2 and node.input[2] else None
    after = consumers.get(node.output[0], [])
    folded = len(after) == 1 and after[0].op_type == "BatchNormalization"
    if folded:
        weight, bias = _fold_bn(weight, bias, after[0], inits, transposed=node.op_type == "ConvTranspose")
    if node.op_type == "ConvTranspose" and any(attrs.get(k) for k in ("output_padding", "output_shape")):
        raise ValueError(f"{node.name}: output_padding/output_shape are not supported")
    return ConvNode(
        op=node.op_type,
        weight_name=node.input[1],
        weight=weight,
        bias=bias,
        strides=tuple(attrs.get("strides", (1, 1))),
        pads=tuple(attrs.get("pads", (0, 0, 0, 0))),
        dilations=tuple(attrs.get("dilations", (1, 1))),
        group=int(attrs.get("group", 1)),
        folded_bn=folded,
    )


def _fold_bn(
    weight: np.ndarray, bias: np.ndarray | None, bn: onnx.NodeProto, inits: dict[str, np.ndarray], transposed: bool
) -> tuple[np.ndarray, np.ndarray]:
    """conv -> BN(eval) as one conv: w' = w*s, b' = (b - mean)*s + beta with s = gamma/sqrt(var + eps)."""
    gamma, beta, mean, var = (inits[name].astype(np.float64) for name in bn.input[1:5])
    eps = next((a.f for a in bn.attribute if a.name == "epsilon"), 1e-5)
    scale = gamma / np.sqrt(var + eps)
    shape = (1, -1, 1, 1) if transposed else (-1, 1, 1, 1)  # ConvTranspose weights are [in, out/group, kh, kw]
    folded_w = (weight.astype(np.float64) * scale.reshape(shape)).astype(np.float32)
    base = bias.astype(np.float64) if bias is not None else np.zeros_like(mean)
    return folded_w, ((base - mean) * scale + beta).astype(np.float32)


ConvModule = nn.Conv2d | nn.ConvTranspose2d


def load_convs(modules: Sequence[tuple[str, ConvModule]], nodes: Sequence[ConvNode]) -> None:
    """Copy `nodes` into `modules` (pairs of qualified name and module, both in graph order), checking each pair.

    A module may declare `onnx_pads` (top, left, bottom, right) when it pads asymmetrically itself.
    """
    if len(modules) != len(nodes):
        raise ValueError(f"architecture has {len(modules)} convolutions, the graph {len(nodes)}")
    for (name, module), node in zip(modules, nodes, strict=True):
        _check(name, module, node)
        with torch.no_grad():
            module.weight.copy_(torch.from_numpy(node.weight))
            if node.bias is not None:
                module.bias.copy_(torch.from_numpy(node.bias))


def _check(name: str, module: ConvModule, node: ConvNode) -> None:
    pads = getattr(module, "onnx_pads", tuple(module.padding) * 2)
    ours = (
        "ConvTranspose" if isinstance(module, nn.ConvTranspose2d) else "Conv",
        tuple(module.weight.shape),
        module.bias is not None,
        tuple(module.stride),
        tuple(pads),
        tuple(module.dilation),
        module.groups,
    )
    theirs = (node.op, node.weight.shape, node.bias is not None, node.strides, node.pads, node.dilations, node.group)
    if ours != theirs:
        raise ValueError(f"{name} does not match ONNX {node.weight_name}: {ours} != {theirs}")
    # Exporters keep some parameter names (`neck.lateral_convs.0.conv1.weight`); where they did, ours must agree.
    if node.weight_name.endswith(".weight") and node.weight_name != f"{name}.weight":
        raise ValueError(f"{name} is matched with ONNX {node.weight_name}: architecture out of order")


def convs_of(module: nn.Module, prefix: str) -> list[tuple[str, ConvModule]]:
    """Convolutions under `module` in registration order, named as in the root module's state dict."""
    return [
        (".".join(part for part in (prefix, name) if part), m)
        for name, m in module.named_modules()
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)
    ]
