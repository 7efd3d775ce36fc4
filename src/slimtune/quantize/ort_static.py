"""Post-training static int8 through ONNX Runtime: activations calibrated on real data, weights
per channel, QDQ format — real int8 kernels in ORT, exportable by construction."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import torch

from slimtune._io import atomic_path
from slimtune.config import Config, check
from slimtune.errors import ConfigError, UnsupportedModelError
from slimtune.quantize.api import register_quantizer
from slimtune.quantize.observers import OBSERVERS
from slimtune.quantize.ort_dynamic import resolve_reduce_range
from slimtune.quantize.qdq_graph import CHAIN_OPS, OpsChoice, resolve_ops

CALIBRATION_METHODS = {
    "minmax": "MinMax",
    "entropy": "Entropy",
    "percentile": "Percentile",
    "distribution": "Distribution",
}


@dataclass(frozen=True, kw_only=True)
class OrtStaticInt8Config(Config):
    """Static int8: ``calibration_size`` examples set the activation ranges with ``observer``.
    ``exclude_layers``: torch layer names (``net.3``) whose MatMul/Gemm/Conv nodes stay fp32;
    ``exclude_nodes``: ONNX node names, as ONNX Runtime's ``nodes_to_exclude``. ``range_observer``: a
    registered slimtune observer (``moving-average``, ``mse``...) that sets every activation range instead
    of ORT's calibrator (see ``slimtune.quantize.ort_observe``). ``ops``: ``weights`` quantizes the layers
    that hold weights (MatMul/Gemm/Conv with a constant weight) and leaves activation-only ops (residual
    adds, softmax inputs, attention score matmuls) in float; ``all`` lets ONNX Runtime quantize every op it
    can, which collapsed a fine-tuned MiniLM by 12.75 points (benchmarks/results/minilm_int8.md); ``chain``
    quantizes the ops ONNX Runtime runs in int8 end to end (Conv+Relu, Add, pooling, Concat: no fp32 round
    trips between convolutions, NNCF's graph); ``auto`` picks ``chain`` for conv nets and ``weights``
    otherwise (see ``slimtune.quantize.qdq_graph``)."""

    observer: Literal["minmax", "entropy", "percentile", "distribution"] = "minmax"
    calibration_size: int = 256
    calibration_batch: int = 32
    per_channel: bool = True
    reduce_range: bool | None = None
    activation_type: Literal["quint8", "qint8"] = "quint8"
    exclude_nodes: tuple[str, ...] = ()
    exclude_layers: tuple[str, ...] = ()
    range_observer: str | None = None
    ops: OpsChoice = "auto"

    def __post_init__(self) -> None:
        choices = get_args(OpsChoice)
        check(self.ops in choices, f"ops must be one of {', '.join(map(repr, choices))}, got {self.ops!r}")
        if self.range_observer is not None:
            OBSERVERS.get(self.range_observer)  # unknown names fail here, with a suggestion
        check(self.calibration_size >= 1, f"calibration_size must be >= 1, got {self.calibration_size}")
        check(self.calibration_batch >= 1, f"calibration_batch must be >= 1, got {self.calibration_batch}")


class _Reader:
    """ONNX Runtime's CalibrationDataReader protocol over a tensor of examples."""

    def __init__(self, input_name: str, x: np.ndarray, batch: int) -> None:
        self._batches = iter([{input_name: x[i : i + batch]} for i in range(0, len(x), batch)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def _preprocess(src: Path, dst: Path) -> Path:
    """ORT's recommended pre-processing (shape inference + graph optimisation); skipped if it fails."""
    from onnxruntime.quantization import quant_pre_process

    try:
        quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)
        return dst
    except Exception:  # the optimiser rejects some graphs; quantizing the raw export still works
        return src


def weight_nodes(path: Path) -> list[str]:
    """Names of the MatMul/Gemm/Conv nodes of ``path`` that multiply by a constant weight."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    constants = {i.name for i in graph.initializer}
    constants |= {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    ops = ("MatMul", "Gemm", "Conv")
    return [n.name for n in graph.node if n.op_type in ops and any(i in constants for i in n.input[:2])]


def _float_inputs(path: Path, excluded: list[str]) -> None:
    """Feed each excluded node the float tensor its QuantizeLinear→DequantizeLinear pair came from, and drop
    pairs nothing reads any more. Otherwise ONNX Runtime (≥ 1.2x) sees DequantizeLinear → Gemm/Conv with a
    float weight when it loads the model and quantizes that weight itself: the layer would not stay fp32."""
    import onnx

    model = onnx.load(str(path))
    graph = model.graph
    producer = {out: n for n in graph.node for out in n.output}
    for node in graph.node:
        if node.name not in excluded:
            continue
        for i, value in enumerate(node.input):
            dq = producer.get(value)
            q = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
            if q is not None and q.op_type == "QuantizeLinear":
                node.input[i] = q.input[0]
    outputs = {o.name for o in graph.output}
    while True:
        read = {i for n in graph.node for i in n.input} | outputs
        qdq = ("QuantizeLinear", "DequantizeLinear")
        dead = [n for n in graph.node if n.op_type in qdq and n.output[0] not in read]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)
    onnx.save(model, str(path))


@register_quantizer("ort-static-int8", OrtStaticInt8Config, help="ONNX Runtime static int8 (QDQ, calibrated)")
def quantize_static_onnx(
    src: Path, dst: Path, config: OrtStaticInt8Config, calibration: torch.Tensor | None
) -> dict[str, Any]:
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from slimtune.quantize.precision import nodes_for_layers

    if calibration is None or len(calibration) == 0:
        raise ConfigError("static int8 needs a calibration set: pass calibration examples (at least one)")
    x = calibration[: config.calibration_size].numpy()
    input_name = onnx.load(str(src), load_external_data=False).graph.input[0].name
    reduce_range, why = resolve_reduce_range(config.reduce_range)
    logging.getLogger("root").setLevel(logging.ERROR)
    pre = _preprocess(src, dst.with_suffix(".pre.onnx"))
    try:
        excluded = list(config.exclude_nodes)  # node names of the pre-processed graph, which ORT quantizes
        excluded += [n for n in nodes_for_layers(pre, config.exclude_layers) if n not in excluded]
        # a Relu folded into a QuantizeLinear would be lost when _float_inputs bypasses that pair
        extra: dict[str, Any] = {"QDQKeepRemovableActivations": bool(excluded)}
        if config.range_observer is not None:
            from slimtune.quantize.ort_observe import observed_ranges

            extra["TensorQuantOverrides"] = observed_ranges(
                pre, x, observer=config.range_observer, batch_size=config.calibration_batch
            )
        ops, ops_why = resolve_ops(config.ops, pre)
        weighted = weight_nodes(pre) if ops == "weights" else None
        if weighted == []:
            raise UnsupportedModelError("static int8: the graph has no MatMul/Gemm/Conv with weights to quantize")
        with atomic_path(dst) as tmp:
            quantize_static(
                str(pre),
                str(tmp),
                _Reader(input_name, x, config.calibration_batch),
                quant_format=QuantFormat.QDQ,
                per_channel=config.per_channel,
                reduce_range=reduce_range,
                activation_type=QuantType.QUInt8 if config.activation_type == "quint8" else QuantType.QInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=getattr(CalibrationMethod, CALIBRATION_METHODS[config.observer]),
                nodes_to_exclude=excluded or None,
                nodes_to_quantize=weighted,
                op_types_to_quantize=list(CHAIN_OPS) if ops == "chain" else None,
                extra_options=extra,
            )
            if excluded:
                _float_inputs(tmp, excluded)
    finally:
        if pre != src:
            pre.unlink(missing_ok=True)
    info: dict[str, Any] = {
        "reduce_range": reduce_range,
        "reduce_range_reason": why,
        "per_channel": config.per_channel,
        "observer": config.observer if config.range_observer is None else f"{config.range_observer} (slimtune)",
        "calibration_examples": len(x),
        "activation_type": config.activation_type,
        "ops": ops,
        "ops_reason": ops_why,
    }
    if excluded:
        info["excluded_nodes"] = excluded
    return info
