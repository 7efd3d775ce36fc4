"""Post-training static int8 through ONNX Runtime: activations calibrated on real data, weights
per channel, QDQ format — real int8 kernels in ORT, exportable by construction."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from slimtune._io import atomic_path
from slimtune.config import Config, check
from slimtune.errors import ConfigError
from slimtune.quantize.api import register_quantizer
from slimtune.quantize.ort_dynamic import resolve_reduce_range

CALIBRATION_METHODS = {
    "minmax": "MinMax",
    "entropy": "Entropy",
    "percentile": "Percentile",
    "distribution": "Distribution",
}


@dataclass(frozen=True, kw_only=True)
class OrtStaticInt8Config(Config):
    """Static int8: ``calibration_size`` examples set the activation ranges with ``observer``."""

    observer: Literal["minmax", "entropy", "percentile", "distribution"] = "minmax"
    calibration_size: int = 256
    calibration_batch: int = 32
    per_channel: bool = True
    reduce_range: bool | None = None
    activation_type: Literal["quint8", "qint8"] = "quint8"
    exclude_nodes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
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


@register_quantizer("ort-static-int8", OrtStaticInt8Config, help="ONNX Runtime static int8 (QDQ, calibrated)")
def quantize_static_onnx(
    src: Path, dst: Path, config: OrtStaticInt8Config, calibration: torch.Tensor | None
) -> dict[str, Any]:
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if calibration is None or len(calibration) == 0:
        raise ConfigError("static int8 needs a calibration set: pass calibration examples (at least one)")
    x = calibration[: config.calibration_size].numpy()
    input_name = onnx.load(str(src), load_external_data=False).graph.input[0].name
    reduce_range, why = resolve_reduce_range(config.reduce_range)
    logging.getLogger("root").setLevel(logging.ERROR)
    pre = _preprocess(src, dst.with_suffix(".pre.onnx"))
    try:
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
                nodes_to_exclude=list(config.exclude_nodes) or None,
            )
    finally:
        if pre != src:
            pre.unlink(missing_ok=True)
    return {
        "reduce_range": reduce_range,
        "reduce_range_reason": why,
        "per_channel": config.per_channel,
        "observer": config.observer,
        "calibration_examples": len(x),
        "activation_type": config.activation_type,
    }
