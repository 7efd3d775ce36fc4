"""Post-training dynamic int8 through ONNX Runtime's own quantizer: real int8 execution in ORT."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from slimtune._io import atomic_path
from slimtune.config import Config
from slimtune.env import int8_capability
from slimtune.quantize.api import register_quantizer


@dataclass(frozen=True, kw_only=True)
class OrtDynamicInt8Config(Config):
    """``reduce_range=None`` decides from the CPU: 7-bit weights on CPUs without VNNI (u8·s8 saturation).
    ``exclude_layers``: torch layer names (``net.3``) whose MatMul/Gemm nodes stay fp32. Conv layers always
    stay fp32: ONNX Runtime's dynamic ConvInteger (+ casts) ran 5–10× slower than fp32 convolutions
    (benchmarks/results/search_vs_peers.md); static int8 is the path for conv nets. With ``per_channel=False``
    and ``reduce_range=False`` the file is byte-identical to ``onnxruntime.quantization.quantize_dynamic``
    with its defaults (tested); ``per_channel=True`` was the only other difference behind slimtune's int8
    MiniLM trailing the library call (×1.36 vs ×1.48 at batch 1, benchmarks/results/minilm_int8.md)."""

    reduce_range: bool | None = None
    per_channel: bool = False  # ORT's default: per-column scales cost speed at batch 1 (#22, Deliver 3)
    weight_type: Literal["qint8", "quint8"] = "qint8"
    exclude_layers: tuple[str, ...] = ()


def resolve_reduce_range(reduce_range: bool | None) -> tuple[bool, str]:
    """``None`` decides from the CPU; returns the choice and the reason shown in reports."""
    if reduce_range is not None:
        return reduce_range, "set in the config"
    cap = int8_capability()
    if cap["vnni"]:
        return False, "CPU has VNNI: full 8-bit range is exact"
    return True, "CPU lacks VNNI: 7-bit weights avoid u8·s8 saturation"


@register_quantizer("ort-dynamic-int8", OrtDynamicInt8Config, help="ONNX Runtime dynamic int8 (int8 weights)")
def quantize_dynamic_onnx(
    src: str | Path, dst: str | Path, config: OrtDynamicInt8Config, calibration: Any = None
) -> dict[str, Any]:
    """Quantize the MatMul/Gemm weights of ``src`` to int8 into ``dst`` (Conv stays fp32); returns the
    settings used and why. Activations are quantized per batch at run time, so no calibration data is needed."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.registry import IntegerOpsRegistry

    from slimtune.quantize.precision import nodes_for_layers

    excluded = nodes_for_layers(src, config.exclude_layers) if config.exclude_layers else []
    # the dynamic quantizer first rewrites each Gemm as MatMul (+ Add) named "<gemm>_MatMul": exclude both
    to_exclude = [*excluded, *(f"{n}_MatMul" for n in excluded)]
    reduce_range, why = resolve_reduce_range(config.reduce_range)
    ops = [op for op in IntegerOpsRegistry if op != "Conv"]  # ORT's defaults, less ConvInteger
    weight_type = QuantType.QInt8 if config.weight_type == "qint8" else QuantType.QUInt8
    logging.getLogger("root").setLevel(logging.ERROR)  # ORT's quantizer logs hints at WARNING level
    with atomic_path(dst) as tmp:
        quantize_dynamic(
            str(src),
            str(tmp),
            weight_type=weight_type,
            per_channel=config.per_channel,
            reduce_range=reduce_range,
            nodes_to_exclude=to_exclude or None,
            op_types_to_quantize=ops,
        )
    info: dict[str, Any] = {
        "reduce_range": reduce_range,
        "reduce_range_reason": why,
        "per_channel": config.per_channel,
        "ops": ops,
    }
    if excluded:
        info["excluded_nodes"] = excluded
    return info
