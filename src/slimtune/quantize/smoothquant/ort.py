"""ONNX Runtime int8 of a (smoothed) causal LM's KV-cache export, and its parity check.

``dynamic``: ``quantize_dynamic`` turns every MatMul/Gemm with a constant weight into ``DynamicQuantizeLinear`` +
``MatMulInteger`` (int8 weights per output channel, uint8 activations quantized per call). ``static``: QDQ with
the activation ranges of prefill calibration windows (MinMax), int8 per-channel weights. The fp32 export is
parity-checked first (the smoothing is exact), then the int8 file's logits and greedy tokens are measured
against the PyTorch model (int8 rounding moves them; only the top-1 agreement is held to a floor).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from slimtune._io import atomic_path
from slimtune.errors import ParityError

OPS = ["MatMul", "Gemm"]


class _PrefillReader:
    """CalibrationDataReader: prefill inputs (empty KV cache) of the KV-cache graph, one window at a time."""

    def __init__(self, path: Path, windows: np.ndarray) -> None:
        import onnx

        graph = onnx.load(str(path), load_external_data=False).graph
        self.items: list[dict[str, np.ndarray]] = []
        for row in windows:
            ids = row[None].astype(np.int64)
            feed: dict[str, np.ndarray] = {
                "input_ids": ids,
                "attention_mask": np.ones_like(ids),
                "position_ids": np.arange(ids.shape[1], dtype=np.int64)[None],
            }
            for inp in graph.input:
                if inp.name.startswith("past_key_values"):
                    dims = [d.dim_value for d in inp.type.tensor_type.shape.dim]
                    feed[inp.name] = np.zeros((1, dims[1], 0, dims[3]), dtype=np.float32)
            self.items.append(feed)
        self._it = iter(self.items)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


def quantize_lm_onnx(
    src: str | Path,
    dst: str | Path,
    *,
    mode: str = "dynamic",
    per_channel: bool = True,
    reduce_range: bool = False,
    calibration: torch.Tensor | None = None,
) -> dict[str, Any]:
    """Write the int8 version of the KV-cache ONNX ``src`` to ``dst`` (see the module docstring)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static

    src, dst = Path(src), Path(dst)
    logging.getLogger("root").setLevel(logging.ERROR)  # ORT's quantizer logs hints at WARNING level
    # the fused KV-cache graph has com.microsoft ops ORT's shape inference cannot type: weights are fp32
    extra = {"MatMulConstBOnly": True, "DefaultTensorType": 1}  # onnx.TensorProto.FLOAT
    fp32_bytes = _bytes(src)
    with atomic_path(dst) as tmp:
        if mode == "dynamic":
            quantize_dynamic(str(src), str(tmp), weight_type=QuantType.QInt8, per_channel=per_channel,
                             reduce_range=reduce_range, op_types_to_quantize=OPS, extra_options=extra)  # fmt: skip
        else:
            if calibration is None or len(calibration) == 0:
                raise ParityError("static int8 needs calibration windows; give calibration token ids")
            reader = _PrefillReader(src, calibration.long().numpy())
            extra_static = {**extra, "ActivationSymmetric": False, "WeightSymmetric": True}
            quantize_static(str(src), str(tmp), reader, quant_format=QuantFormat.QDQ,  # type: ignore[arg-type]
                            op_types_to_quantize=OPS, per_channel=per_channel, reduce_range=reduce_range,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax, extra_options=extra_static,
                            calibration_providers=["CPUExecutionProvider"])  # fmt: skip
    return {"mode": mode, "per_channel": per_channel, "reduce_range": reduce_range, "ops": OPS,
            "bytes_fp32": fp32_bytes, "bytes_int8": _bytes(dst)}  # fmt: skip


def _bytes(path: Path) -> int:
    data = path.with_name(f"{path.name}.data")
    return path.stat().st_size + (data.stat().st_size if data.is_file() else 0)


def export_int8_checked(
    model: Any, onnx_path: str | Path, *, windows: torch.Tensor | None, prompts: Any, config: Any
) -> dict[str, Any]:
    """The fp32 KV-cache export at ``onnx_path`` of the smoothed ``model`` is parity-checked, then replaced by
    its ONNX Runtime int8 version (settings from ``model.slimtune_smoothquant``), whose deviation from PyTorch is
    reported under ``int8``; its top-1 agreement must reach ``config.min_fast_top1_agreement``."""
    from slimtune.export.lm_parity import check_lm_parity, lm_parity

    path = Path(onnx_path)
    report = lm_parity(model, path, windows=windows, prompts=prompts, config=config)
    check_lm_parity(report, config, what="fp32 export of the smoothed model")
    sq = dict(model.slimtune_smoothquant)
    info = quantize_lm_onnx(path, path, mode=sq.get("mode", "dynamic"), per_channel=bool(sq.get("per_channel", True)),
                            reduce_range=bool(sq.get("reduce_range", False)),
                            calibration=sq.get("calibration_windows"))  # fmt: skip
    path.with_name(f"{path.name}.data").unlink(missing_ok=True)  # the int8 file holds its weights inline
    int8 = lm_parity(model, path, windows=windows, prompts=prompts, config=config)
    report["int8"] = {k: int8[k] for k in ("max_abs_diff", "top1_agreement", "greedy_identical")}
    if int8["top1_agreement"] < config.min_fast_top1_agreement:
        raise ParityError(
            f"int8 ({info['mode']}) agrees with the fp32 model on the top-1 token at only "
            f"{int8['top1_agreement']:.2%} of positions (< {config.min_fast_top1_agreement:.0%}); try a SmoothQuant "
            "alpha_grid, per_channel: true, or keep the model fp32"
        )
    report.update(precision="int8", smoothquant={"alpha": sq.get("alpha"), **info})
    return report
