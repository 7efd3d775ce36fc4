"""What a QDQ graph quantizes, read from its nodes: which ops ``ops: auto`` picks for an architecture,
and where an int8 chain drops to fp32 and back (the round trips that made slimtune's static int8 of a
ResNet slower than NNCF's: benchmarks/results/search_vs_peers.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

OpsChoice = Literal["weights", "chain", "all", "auto"]

# The ops ONNX Runtime runs in int8 when they sit between QuantizeLinear/DequantizeLinear pairs: Conv+Relu
# (the Relu folds into the Conv's output range), residual Add, pooling, Concat, and the reshapes between.
CHAIN_OPS = (
    "Conv",
    "Gemm",
    "MatMul",
    "Relu",
    "Clip",
    "Add",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "Concat",
    "Flatten",
    "Reshape",
)
# Ops that have an int8 kernel in ONNX Runtime (QLinear* or integer data movement); Relu/Clip are not here:
# quantized, they fold into the producer's output range and disappear from the graph.
INT8_KERNEL_OPS = frozenset(CHAIN_OPS) - {"Relu", "Clip"}
QDQ = ("QuantizeLinear", "DequantizeLinear")


def _graph(path: Path) -> Any:
    import onnx

    return onnx.load(str(path), load_external_data=False).graph


def weighted_ops(path: Path) -> set[str]:
    """Op types among the MatMul/Gemm/Conv nodes of ``path`` that multiply by a constant weight."""
    graph = _graph(path)
    constants = {i.name for i in graph.initializer}
    constants |= {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    ops = ("MatMul", "Gemm", "Conv")
    return {n.op_type for n in graph.node if n.op_type in ops and any(i in constants for i in n.input[:2])}


def resolve_ops(ops: OpsChoice, path: Path) -> tuple[Literal["weights", "chain", "all"], str]:
    """``auto`` → ``chain`` for conv nets (Conv with weights in the graph), ``weights`` otherwise; the choice
    and the reason shown in reports."""
    if ops != "auto":
        return ops, "set in the config"
    if "Conv" in weighted_ops(path):
        return "chain", "conv net: Conv, Relu, Add, pooling and Concat stay int8 end to end (NNCF's graph)"
    return "weights", "no Conv: weights-only (quantizing every op cost a fine-tuned MiniLM 12.75 pt)"


def fp32_round_trips(path: Path) -> list[str]:
    """Names of the nodes where a quantized chain drops to fp32 and is quantized again: a node fed by a
    DequantizeLinear that either has no int8 kernel (a Relu left between two pairs) or whose output goes on
    in fp32 to another compute op (an Add whose result a fp32 Relu reads). Empty for a fully int8 chain."""
    graph = _graph(path)
    initializers = {i.name for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    readers: dict[str, list[Any]] = {}
    for n in graph.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    outputs = {o.name for o in graph.output}
    found = []
    for n in graph.node:
        if n.op_type in QDQ:
            continue
        fed = [producer.get(i) for i in n.input if i and i not in initializers]
        from_dq = [p for p in fed if p is not None and p.op_type == "DequantizeLinear"]
        if not from_dq or not any(p.input[0] not in initializers for p in from_dq):
            continue  # not reading a quantized activation
        after = [r for o in n.output for r in readers.get(o, [])]
        reaches_q = any(r.op_type == "QuantizeLinear" for r in after) or bool(set(n.output) & outputs)
        fp32_next = any(r.op_type not in QDQ for r in after)
        if (n.op_type not in INT8_KERNEL_OPS and reaches_q) or fp32_next:
            found.append(n.name or n.op_type)
    return found


def op_counts(path: Path) -> dict[str, int]:
    """How many nodes of each type ``path`` has (QuantizeLinear, DequantizeLinear, Conv ...)."""
    counts: dict[str, int] = {}
    for n in _graph(path).node:
        counts[n.op_type] = counts.get(n.op_type, 0) + 1
    return counts
