"""ONNX Runtime int8 of a (smoothed) causal LM's KV-cache export, and its parity check.

``dynamic``: ``quantize_dynamic`` turns every MatMul/Gemm with a constant weight into ``DynamicQuantizeLinear`` +
``MatMulInteger`` (int8 weights per output channel, uint8 activations quantized per call). ``static``: QDQ with
the activation ranges of prefill calibration windows (``calibrate``: MinMax, Percentile or Entropy), int8
per-channel weights; the fused graph's MatMul inputs are typed fp32 first (``_float_typed``) so the calibrator sees
them. The fp32 export is parity-checked first (the smoothing is exact), then the int8 file's logits and greedy
tokens are measured against the PyTorch model (int8 rounding moves them; only the top-1 agreement is held to a
floor).

An fp32 fallback (``fallback`` in the model's SmoothQuant settings: Linear names) becomes ONNX Runtime's
``nodes_to_exclude``. The node of each Linear is found in the exported file itself (``linear_nodes``: the MatMul
/ Gemm whose constant weight holds that Linear's weight, bit for bit — a fused q/k/v or gate/up MatMul holds
several), never guessed from names.
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
CALIBRATE = {"minmax": "MinMax", "percentile": "Percentile", "entropy": "Entropy"}


def linear_nodes(model: torch.nn.Module, path: str | Path) -> dict[str, list[str]]:
    """``{node name: [Linear names]}`` for every MatMul / Gemm of the ONNX file ``path`` whose constant weight
    (columns, in order) is the weights of ``model``'s Linears — matched on the exact fp32 values."""
    import onnx
    from onnx import numpy_helper

    from slimtune.models.blocks import is_conv1d, linear_weight

    graph = onnx.load(str(path)).graph
    inits = {t.name: t for t in graph.initializer}
    rows: dict[bytes, list[tuple[str, np.ndarray]]] = {}  # a Linear's first weight row -> (name, (out, in) weight)
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.Linear) or is_conv1d(m):
            w = linear_weight(m).detach().float().numpy()
            rows.setdefault(w[0].tobytes(), []).append((name, w))
    out: dict[str, list[str]] = {}
    for node in graph.node:
        if node.op_type not in OPS or len(node.input) < 2 or node.input[1] not in inits:
            continue
        b = numpy_helper.to_array(inits[node.input[1]])
        if b.ndim != 2 or b.dtype != np.float32:
            continue
        cols = b.T if node.op_type == "MatMul" or not any(a.name == "transB" and a.i for a in node.attribute) else b
        found, offset = [], 0  # cols: (out, in), the Linears' weights stacked by rows
        while offset < len(cols):
            match = next(((n, len(w)) for n, w in rows.get(cols[offset].tobytes(), [])
                          if np.array_equal(cols[offset : offset + len(w)], w)), None)  # fmt: skip
            if match is None:
                break
            found.append(match[0])
            offset += match[1]
        if found and offset == len(cols):
            out[node.name] = found
    return out


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
            names = {inp.name for inp in graph.input}  # the fused graph has no position_ids
            self.items.append({k: v for k, v in feed.items() if k in names})
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
    exclude: list[str] | None = None,
    calibrate: str = "minmax",
) -> dict[str, Any]:
    """Write the int8 version of the KV-cache ONNX ``src`` to ``dst`` (see the module docstring); the nodes in
    ``exclude`` stay fp32; ``calibrate``: the static activation-range method (minmax | percentile | entropy)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static

    src, dst = Path(src), Path(dst)
    logging.getLogger("root").setLevel(logging.ERROR)  # ORT's quantizer logs hints at WARNING level
    # the fused KV-cache graph has com.microsoft ops ORT's shape inference cannot type: weights are fp32
    extra = {"MatMulConstBOnly": True, "DefaultTensorType": 1}  # onnx.TensorProto.FLOAT
    fp32_bytes = _bytes(src)
    with atomic_path(dst) as tmp:
        if mode == "dynamic":
            quantize_dynamic(str(src), str(tmp), weight_type=QuantType.QInt8, per_channel=per_channel,
                             reduce_range=reduce_range, op_types_to_quantize=OPS, extra_options=extra,
                             nodes_to_exclude=list(exclude or []))  # fmt: skip
        else:
            if calibration is None or len(calibration) == 0:
                raise ParityError("static int8 needs calibration windows; give calibration token ids")
            reader = _PrefillReader(src, calibration.long().numpy())
            typed = _float_typed(src)
            extra_static = {
                **extra,
                "ActivationSymmetric": False,
                "WeightSymmetric": True,
                "OpTypesToExcludeOutputQuantization": OPS,
            }  # a MatMul output feeds fp32 ops
            try:
                quantize_static(str(typed), str(tmp), reader, quant_format=QuantFormat.QDQ,  # type: ignore[arg-type]
                                op_types_to_quantize=OPS, per_channel=per_channel, reduce_range=reduce_range,
                                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                                calibrate_method=getattr(CalibrationMethod, CALIBRATE[calibrate]),
                                extra_options=extra_static, nodes_to_exclude=list(exclude or []),
                                calibration_providers=["CPUExecutionProvider"])  # fmt: skip
            finally:
                typed.unlink(missing_ok=True)
    return {"mode": mode, "per_channel": per_channel, "reduce_range": reduce_range, "ops": OPS,
            "bytes_fp32": fp32_bytes, "bytes_int8": _bytes(dst), "fp32_nodes": list(exclude or []),
            **({"calibrate": calibrate} if mode == "static" else {})}  # fmt: skip


def fallback_nodes(model: torch.nn.Module, path: str | Path, names: list[str]) -> list[str]:
    """The nodes of ``path`` that compute the Linears ``names`` (every one must be found in the file)."""
    if not names:
        return []
    nodes = linear_nodes(model, path)
    owner = {linear: node for node, linears in nodes.items() for linear in linears}
    missing = [n for n in names if n not in owner]
    if missing:
        raise ParityError(
            f"fallback: no MatMul of {Path(path).name} holds the weight of {missing[0]} ({len(missing)} Linears "
            "unmatched); the export changed the weights — keep fallback for an fp32 SmoothQuant export"
        )
    return sorted({owner[n] for n in names})


def _float_typed(src: Path) -> Path:
    """A copy of the graph of ``src`` (beside it, sharing its external weights) in which every MatMul / Gemm input
    and output is typed fp32: ONNX shape inference cannot type the outputs of the fused graph's com.microsoft ops
    (SkipSimplifiedLayerNormalization, GroupQueryAttention), and ONNX Runtime's calibrator skips untyped tensors —
    a static file would then quantize the weights only, never the activations."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(src), load_external_data=False)
    graph = model.graph
    known = {v.name for v in [*graph.value_info, *graph.input, *graph.output]} | {t.name for t in graph.initializer}
    for node in graph.node:
        if node.op_type in OPS:
            for name in [*node.input, *node.output]:
                if name and name not in known:
                    graph.value_info.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
                    known.add(name)
    out = src.with_name(f"{src.stem}.typed.onnx")
    onnx.save(model, str(out))
    return out


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
    exclude = fallback_nodes(model, path, list(sq.get("fallback") or []))
    info = quantize_lm_onnx(path, path, mode=sq.get("mode", "dynamic"), per_channel=bool(sq.get("per_channel", True)),
                            reduce_range=bool(sq.get("reduce_range", False)), exclude=exclude,
                            calibration=sq.get("calibration_windows"),
                            calibrate=str(sq.get("calibrate", "minmax")))  # fmt: skip
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
