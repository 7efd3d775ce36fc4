"""Bits per layer, read from what a model really holds: a PyTorch model's layers (fake-quant wrappers,
binary/ternary or clustered weights) or an ONNX graph (which MatMul/Gemm/Conv nodes compute on
quantized weights), never from the config that asked for it.

    torch_precision(model)                       # {"net.1": "w4a8 fake-quant", "net.3": "fp32", ...}
    onnx_precision("model.int8.onnx", layers)    # {"net.1": "int8", "net.3": "fp32", ...}
    nodes_for_layers(graph, ["net.3"])           # the ONNX node names computing torch layer net.3

ONNX nodes are tied to torch module names by the scope the exporter writes into node names
(``/layers/layers.1/downsample/downsample.0/Conv`` → ``layers.1.downsample.0``), else by the name of
the weight initializer feeding the node (``net.1.weight`` → ``net.1``).
"""

from __future__ import annotations

import math
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimtune.errors import ConfigError
from slimtune.quantize.calibration import QUANTIZABLE, QuantizedLayer

FP32 = "fp32"
FLOAT_OPS = {"MatMul": 1, "Gemm": 1, "Conv": 1}  # op type -> index of the weight input
INTEGER_OPS = {
    "MatMulInteger": 1,
    "ConvInteger": 1,
    "QLinearConv": 3,
    "QLinearMatMul": 3,
    "QGemm": 3,
    "DynamicQuantizeMatMul": 1,
    "MatMulIntegerToFloat": 1,
    "MatMulNBits": 1,
}
PASS_THROUGH = {"Transpose", "Reshape", "Identity", "Cast", "Squeeze", "Unsqueeze", "Flatten"}
_ONNX_BITS = {2: 8, 3: 8, 21: 4, 22: 4}  # TensorProto UINT8, INT8, UINT4, INT4


def _fake_quant_label(layer: QuantizedLayer) -> str:
    from slimtune.quantize.affine import Int8Weight

    wfq, afq = layer.weight_fq, layer.input_fq
    if isinstance(wfq, Int8Weight):
        w: int | None = 8
    else:
        w = wfq.spec.bits if wfq is not None and wfq.enabled else None
    a = afq.spec.bits if afq is not None and afq.enabled else None
    if w is None and a is None:
        return FP32
    return "".join(f"{k}{b}" for k, b in (("w", w), ("a", a)) if b is not None) + " fake-quant"


@torch.no_grad()
def weight_label(w: torch.Tensor) -> str:
    """What a plain weight holds: binary/ternary (per-channel ±α), clustered b-bit (≤ 2^b shared
    non-zero values, b ≤ 8), else its float dtype (``fp32``, ``fp16``, ``bf16``)."""
    from slimtune.quantize.binary import weight_kind

    if w.dim() >= 2 and w.numel() >= 4 * len(w) and bool((w != 0).any()):  # a row of 1-3 values is not ±α
        kind = weight_kind(w)
        if kind != "float":
            return kind
        nonzero = w[w != 0]
        if 0 < nonzero.numel() <= 1_000_000:
            distinct = int(torch.unique(nonzero).numel())
            if distinct <= 256 and distinct * 4 <= nonzero.numel():
                return f"clustered {max(1, math.ceil(math.log2(distinct)))}-bit"
    return {torch.float16: "fp16", torch.bfloat16: "bf16"}.get(w.dtype, FP32)


def layer_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Linear/Conv layers by name, a fake-quant or binary/ternary wrapper standing for the layer it wraps
    (its name is the original layer's); layers a parent calls by weight (MultiheadAttention) are left out."""
    from slimtune.quantize.binary import LowBitLayer

    skip: set[str] = set()
    out: dict[str, nn.Module] = {}
    for name, m in model.named_modules():
        if any(name.startswith(s + ".") for s in skip):
            continue
        if isinstance(m, (QuantizedLayer, LowBitLayer)) or (isinstance(m, nn.MultiheadAttention) and name):
            skip.add(name)
        if isinstance(m, (QuantizedLayer, LowBitLayer, *QUANTIZABLE)):
            out[name] = m
    return out


def torch_precision(model: nn.Module) -> dict[str, str]:
    """The precision of every Linear/Conv layer of ``model``, by layer name."""
    from slimtune.quantize.binary import LowBitLayer

    out = {}
    for name, m in layer_modules(model).items():
        if isinstance(m, QuantizedLayer):
            out[name] = _fake_quant_label(m)
        elif isinstance(m, LowBitLayer):
            out[name] = m.kind
        else:
            weight = getattr(m, "weight", None)
            out[name] = weight_label(weight) if isinstance(weight, torch.Tensor) else FP32
    return out


def scope_name(node_name: str) -> str | None:
    """The torch module a legacy-exporter node name points at: ``/layers/layers.1/conv1/Conv`` →
    ``layers.1.conv1`` (a numbered child's scope repeats its parent's name)."""
    if not node_name.startswith("/"):
        return None
    parts: list[str] = []
    for seg in node_name.strip("/").split("/")[:-1]:
        if parts and seg.startswith(parts[-1] + "."):
            parts[-1] = seg
        else:
            parts.append(seg)
    return ".".join(parts) or None


def _weight_owner(initializer: str) -> str | None:
    """``net.1.weight`` (or a quantizer's ``net.1.weight_Transposed_quantized``) → ``net.1``."""
    match = re.match(r"^(.+?)\.weight(?:$|[._])", initializer)
    return match.group(1) if match else None


class GraphLayers:
    """The weighted compute nodes of an ONNX graph (MatMul/Gemm/Conv and their quantized forms whose
    weight input comes from an initializer), each with its candidate torch names and precision."""

    def __init__(self, graph: Any) -> None:
        self.inits = {t.name: t for t in graph.initializer}
        self.producer = {out: n for n in graph.node for out in n.output}
        for n in graph.node:
            if n.op_type == "Constant":
                for a in n.attribute:
                    if a.name == "value":
                        self.inits.setdefault(n.output[0], a.t)
        self.nodes: list[tuple[Any, str, tuple[str, ...]]] = []  # node, precision, candidate names
        for n in graph.node:
            index = FLOAT_OPS.get(n.op_type, INTEGER_OPS.get(n.op_type))
            if index is None or len(n.input) <= index:
                continue
            found = self._trace(n.input[index])
            if found is None:  # activation × activation (attention scores): not a layer
                continue
            initializer, dequantized = found
            label = self._label(n, initializer, dequantized)
            names = (scope_name(n.name), _weight_owner(initializer), n.name)
            self.nodes.append((n, label, tuple(dict.fromkeys(x for x in names if x))))

    def _trace(self, value: str) -> tuple[str, bool] | None:
        """The initializer a weight input comes from (through Transpose/Reshape/DequantizeLinear...), and
        whether a DequantizeLinear lies on the way."""
        dequantized = False
        for _ in range(8):
            if value in self.inits:
                return value, dequantized
            node = self.producer.get(value)
            if node is None or not node.input:
                return None
            if node.op_type == "DequantizeLinear":
                dequantized = True
            elif node.op_type not in PASS_THROUGH:
                return None
            value = node.input[0]
        return None

    def _bits(self, initializer: str) -> int | None:
        return _ONNX_BITS.get(int(self.inits[initializer].data_type))

    def _label(self, node: Any, initializer: str, dequantized: bool) -> str:
        if node.op_type == "MatMulNBits":
            bits = next((int(a.i) for a in node.attribute if a.name == "bits"), 4)
            return f"int{bits} weight-only"
        if node.op_type in INTEGER_OPS:
            return f"int{self._bits(initializer) or 8}"
        if not dequantized:
            return FP32
        bits = self._bits(initializer) or 8
        activation = self.producer.get(node.input[0])
        quantized_input = activation is not None and activation.op_type == "DequantizeLinear"
        return f"int{bits}" if quantized_input else f"int{bits} weight-only"


def _graph(model: str | Path | Any) -> Any:
    import onnx

    if isinstance(model, str | Path):
        return onnx.load(str(model), load_external_data=False).graph
    return getattr(model, "graph", model)


def loaded_graph(path: str | Path) -> Any:
    """The graph ONNX Runtime runs after loading ``path`` (basic optimisations, which may quantize more:
    e.g. a float-weight Gemm fed by DequantizeLinear gets its weight quantized at load time)."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="slimtune-ort-") as tmp:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(Path(tmp) / "loaded.onnx")
        options.log_severity_level = 3
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return onnx.load(options.optimized_model_filepath).graph


def onnx_precision(
    model: str | Path | Any, layers: Iterable[str] | None = None, *, as_loaded: bool = True
) -> dict[str, str]:
    """The precision of each weighted MatMul/Gemm/Conv of an ONNX model, keyed by torch layer name: the
    first candidate name found in ``layers`` (when given, every name in ``layers`` gets an entry, ``fp32``
    if no node computes it), else the scope name. A layer computed by several nodes that differ is shown
    as their labels joined by ``+``. For a path, ``as_loaded`` reads the graph as ONNX Runtime runs it
    (``loaded_graph``), else the file as written; a ModelProto/GraphProto is read as it is."""
    known = list(layers) if layers is not None else None
    graph = loaded_graph(model) if as_loaded and isinstance(model, str | Path) else _graph(model)
    found: dict[str, list[str]] = {}
    for _node, label, names in GraphLayers(graph).nodes:
        key = next((x for x in names if x in known), None) if known is not None else names[0]
        if key is None:
            key = names[0]
        found.setdefault(key, []).append(label)
    out = {name: FP32 for name in known} if known is not None else {}
    for key, labels in found.items():
        out[key] = "+".join(dict.fromkeys(labels))
    return out


def layer_nodes(model: str | Path | Any) -> dict[str, list[str]]:
    """Every candidate torch layer name of the graph's weighted compute nodes → those nodes' names."""
    out: dict[str, list[str]] = {}
    for node, _label, names in GraphLayers(_graph(model)).nodes:
        for name in names:
            out.setdefault(name, []).append(node.name)
    return out


def nodes_for_layers(model: str | Path | Any, layers: Iterable[str]) -> list[str]:
    """The ONNX node names computing the torch ``layers`` (for ONNX Runtime's ``nodes_to_exclude``); a
    layer no node computes is a ConfigError naming the layers the graph has."""
    index = layer_nodes(model)
    out: list[str] = []
    for layer in layers:
        if layer not in index:
            scoped = sorted({n for n in index if not n.startswith("/")})[:8]
            raise ConfigError(
                f"layer '{layer}' computes no MatMul/Gemm/Conv node of the ONNX graph; its layers: {', '.join(scoped)}"
            )
        out.extend(n for n in index[layer] if n not in out)
    return out


__all__ = [
    "FP32",
    "GraphLayers",
    "layer_modules",
    "layer_nodes",
    "loaded_graph",
    "nodes_for_layers",
    "onnx_precision",
    "scope_name",
    "torch_precision",
    "weight_label",
]
