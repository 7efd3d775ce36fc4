"""Mixed precision end to end: per-layer sensitivity → the layers to keep fp32 → ONNX Runtime int8 with
those layers' nodes excluded, checked in the quantized graph.

    info = quantize_model(model, "model.int8.onnx", OrtStaticInt8Config(), example=x[:1],
                          calibration=calib_x, mixed_precision=MixedPrecisionConfig(max_fp32_layers=2))
    info["mixed_precision"]["fp32_layers"]   # {"net.3": {"sqnr_db": 17.2, "nodes": ["/net/net.3/Gemm"]}, ...}
    info["precision"]                        # {"net.1": "int8", "net.3": "fp32", ...}, read from the graph

The sensitivity pass quantizes one layer at a time the way the quantizer will (8-bit, or 7-bit weights
with ``reduce_range``; per channel or not; activations too for static int8) and measures the SQNR of the
logits on calibration inputs; the lowest-SQNR layers stay fp32.
"""

from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimtune.config import Config, check
from slimtune.errors import ConfigError, SlimtuneError
from slimtune.quantize.affine import QuantSpec
from slimtune.quantize.observers import OBSERVERS
from slimtune.quantize.sensitivity import LayerSensitivity, layer_sensitivity, mixed_precision_plan


@dataclass(frozen=True, kw_only=True)
class MixedPrecisionConfig(Config):
    """Keep in fp32 the layers whose logits SQNR with only that layer quantized is below ``min_sqnr_db``,
    at most ``max_fp32_layers`` of them (worst first); either alone works. ``examples``: calibration
    inputs the sensitivity pass runs on."""

    max_fp32_layers: int | None = None
    min_sqnr_db: float | None = None
    examples: int = 256

    def __post_init__(self) -> None:
        check(
            self.max_fp32_layers is not None or self.min_sqnr_db is not None,
            "mixed_precision needs max_fp32_layers, min_sqnr_db or both (e.g. {max_fp32_layers: 2})",
        )
        n = self.max_fp32_layers
        check(n is None or n >= 0, f"max_fp32_layers must be >= 0, got {n}")
        check(self.examples >= 1, f"examples must be >= 1, got {self.examples}")

    @property
    def criterion(self) -> str:
        parts = []
        if self.min_sqnr_db is not None:
            parts.append(f"SQNR < {self.min_sqnr_db:g} dB")
        if self.max_fp32_layers is not None:
            parts.append(f"at most the {self.max_fp32_layers} lowest-SQNR layers")
        return ", ".join(parts)


@dataclass(frozen=True)
class MixedPrecisionPlan:
    """The layers kept fp32 (worst first) with the sensitivity of every layer, and how it was measured."""

    fp32: tuple[str, ...]
    sensitivity: tuple[LayerSensitivity, ...]
    criterion: str
    scheme: dict[str, Any] = field(default_factory=dict)

    def reason(self, layer: str) -> str:
        r = next(s for s in self.sensitivity if s.name == layer)
        return f"SQNR {r.sqnr_db:.1f} dB with only this layer quantized ({self.criterion})"

    def to_dict(self) -> dict[str, Any]:
        by_name = {s.name: s for s in self.sensitivity}
        return {
            "criterion": self.criterion,
            "scheme": self.scheme,
            "fp32_layers": {n: {"sqnr_db": round(by_name[n].sqnr_db, 2), "why": self.reason(n)} for n in self.fp32},
            "sensitivity_db": {s.name: round(s.sqnr_db, 2) for s in self.sensitivity},
        }


def quantizer_scheme(config: Config) -> dict[str, Any]:
    """How an ORT quantizer config quantizes a layer: weight bits (7 with reduce_range), per channel,
    whether activations are calibrated (static) and with which observer."""
    from slimtune.quantize.ort_dynamic import OrtDynamicInt8Config, resolve_reduce_range
    from slimtune.quantize.ort_static import OrtStaticInt8Config

    reduce = getattr(config, "reduce_range", None)
    reduce_range = resolve_reduce_range(reduce)[0] if isinstance(reduce, bool | None) else False
    observer = getattr(config, "observer", "minmax")
    return {
        "weight_bits": 7 if reduce_range else 8,
        "per_channel": bool(getattr(config, "per_channel", True)),
        "activations": not isinstance(config, OrtDynamicInt8Config),  # dynamic: per-batch ranges, near exact
        "observer": observer if observer in OBSERVERS.names() else "minmax",
        "static": isinstance(config, OrtStaticInt8Config),
    }


def plan_mixed_precision(
    model: nn.Module,
    inputs: torch.Tensor,
    config: MixedPrecisionConfig,
    *,
    scheme: dict[str, Any] | None = None,
) -> MixedPrecisionPlan:
    """Rank the layers of ``model`` by sensitivity on ``inputs`` (the first ``config.examples``) under
    ``scheme`` (``quantizer_scheme``; default 8-bit per-channel weights and 8-bit activations) and pick
    the ones to keep fp32."""
    scheme = scheme or {"weight_bits": 8, "per_channel": True, "activations": True, "observer": "minmax"}
    x = inputs[: config.examples]
    weight = dataclasses.replace(QuantSpec.weights(scheme["weight_bits"]), per_channel=scheme["per_channel"])
    results = layer_sensitivity(
        model, x, weight_spec=weight, activations=scheme["activations"], observer=scheme["observer"], calibration=x
    )
    keep = mixed_precision_plan(results, max_fp32_layers=config.max_fp32_layers, sqnr_threshold=config.min_sqnr_db)
    ordered = tuple(r.name for r in results if r.name in keep)
    return MixedPrecisionPlan(ordered, tuple(results), config.criterion, dict(scheme))


def quantize_model(
    model: nn.Module,
    dst: str | Path,
    config: Config,
    *,
    example: torch.Tensor,
    calibration: torch.Tensor | None = None,
    mixed_precision: MixedPrecisionConfig | None = None,
    opset: int = 17,
    verify: torch.Tensor | bool = True,
    min_argmax_agreement: float = 0.99,
) -> dict[str, Any]:
    """Export ``model`` to ONNX, plan mixed precision on ``calibration`` (if asked), quantize with the
    registered ORT method of ``config`` into ``dst``, and check the planned fp32 layers really are fp32
    in the graph. Returns the quantizer's info plus ``precision`` (per layer, from the graph) and, with
    mixed precision, ``mixed_precision`` (the plan, with each fp32 layer's SQNR and ONNX nodes).

    ``verify`` (default on): run the int8 model in ONNX Runtime on ``verify`` (a tensor of inputs; ``True``:
    the calibration inputs, else ``example``) and raise ``ParityError`` when its predictions agree with the
    PyTorch model's on fewer than ``min_argmax_agreement`` of them (near ties aside); the numbers are
    returned as ``parity``. ``False`` skips it (recipes check on the test split, with labels)."""
    from slimtune.export.onnx import check_parity, export_onnx, parity
    from slimtune.quantize.api import quantize_onnx
    from slimtune.quantize.precision import layer_modules, layer_nodes, onnx_precision

    dst = Path(dst)
    plan = None
    if mixed_precision is not None:
        if "exclude_layers" not in {f.name for f in dataclasses.fields(config)}:
            raise ConfigError(f"{type(config).__name__} cannot keep layers in fp32 (it has no exclude_layers)")
        if calibration is None or len(calibration) == 0:
            raise ConfigError("mixed precision needs calibration inputs to measure per-layer sensitivity")
        plan = plan_mixed_precision(model, calibration, mixed_precision, scheme=quantizer_scheme(config))
        before: tuple[str, ...] = getattr(config, "exclude_layers", ())
        kept = tuple(dict.fromkeys((*before, *plan.fp32)))
        config = dataclasses.replace(config, exclude_layers=kept)  # type: ignore[call-arg]
    with tempfile.TemporaryDirectory(prefix="slimtune-quant-") as tmp:
        fp32 = export_onnx(model, example, Path(tmp) / "model.fp32.onnx", opset=opset)
        nodes = layer_nodes(fp32)
        info = quantize_onnx(fp32, dst, config, calibration=calibration)
    precision = onnx_precision(dst, layer_modules(model))
    info["precision"] = precision
    if plan is not None:
        wrong = [n for n in plan.fp32 if precision.get(n) != "fp32"]
        if wrong:
            raise SlimtuneError(f"layers planned fp32 are quantized in the graph: {', '.join(wrong)}")
        report = plan.to_dict()
        for name, entry in report["fp32_layers"].items():
            entry["nodes"] = nodes.get(name, [])
        info["mixed_precision"] = report
    if verify is not False:
        x = verify if isinstance(verify, torch.Tensor) else calibration if calibration is not None else example
        info["parity"] = parity(model, dst, x[:512])
        agreement = min_argmax_agreement
        check_parity(info["parity"], what=f"int8 model '{dst}'", max_abs_diff=None, min_argmax_agreement=agreement)
    return info


__all__ = [
    "MixedPrecisionConfig",
    "MixedPrecisionPlan",
    "plan_mixed_precision",
    "quantize_model",
    "quantizer_scheme",
]
