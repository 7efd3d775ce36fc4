"""Per-layer quantization sensitivity: quantize one layer at a time and see how far the logits move.

results = layer_sensitivity(model, data.test, bits=4)   # worst layer first
print(format_sensitivity(results))
keep_fp32 = mixed_precision_plan(results, sqnr_threshold=20.0)
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from slimtune.config import check
from slimtune.data.core import Split
from slimtune.errors import ConfigError, DataError
from slimtune.quantize.affine import FakeQuantize, QuantSpec, fake_quantize
from slimtune.quantize.calibration import CalibrationDataset, as_calibration, quantizable_layers
from slimtune.quantize.observers import make_observer
from slimtune.train.loop import predict


@dataclass(frozen=True)
class LayerSensitivity:
    """``sqnr_db`` of the logits with only this layer quantized (higher is safer); ``accuracy_delta``
    is quantized minus fp32 accuracy (negative is worse; None without labels); ``params`` counts the
    layer's weight and bias."""

    name: str
    sqnr_db: float
    accuracy_delta: float | None
    params: int


def sqnr(ref: torch.Tensor, test: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio in dB: ``10·log10(‖ref‖² / ‖ref − test‖²)`` (inf if equal)."""
    if ref.shape != test.shape:
        raise ConfigError(f"sqnr needs tensors of one shape, got {tuple(ref.shape)} and {tuple(test.shape)}")
    ref, test = ref.double(), test.double()
    signal, noise = float(ref.pow(2).sum()), float((ref - test).pow(2).sum())
    if noise == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def _accuracy(logits: torch.Tensor, y: torch.Tensor | None) -> float | None:
    return None if y is None else float((logits.argmax(1) == y).float().mean())


@torch.no_grad()
def layer_sensitivity(
    model: nn.Module,
    data: Split | torch.Tensor,
    *,
    bits: int = 8,
    weight_spec: QuantSpec | None = None,
    activations: bool = False,
    activation_spec: QuantSpec | None = None,
    observer: str = "minmax",
    calibration: CalibrationDataset | Split | torch.Tensor | Iterable[Any] | None = None,
    batch_size: int = 512,
) -> list[LayerSensitivity]:
    """Quantize each Linear/Conv layer alone (weights to ``bits``, symmetric per channel unless
    ``weight_spec`` says otherwise; with ``activations`` also its input, calibrated with ``observer`` on
    ``calibration``, default the inputs of ``data``) and compare the logits on ``data`` with fp32.

    Returns one ``LayerSensitivity`` per layer, worst (lowest SQNR) first. ``model`` is left unchanged.
    """
    x, y = (data.x, data.y) if isinstance(data, Split) else (data, None)
    if not isinstance(x, torch.Tensor):
        raise DataError(
            "sensitivity needs tensor inputs; tokenize text first with slimtune.models.inputs.tokenize_splits "
            "(recipes and slimtune stage do it)"
        )
    if len(x) == 0:
        raise DataError("sensitivity needs at least one example; the split is empty")
    w_spec = weight_spec or QuantSpec.weights(bits)
    layers = quantizable_layers(model)
    if not layers:
        raise ConfigError("the model has no Linear or Conv layers to analyse")
    ref = predict(model, x, batch_size=batch_size)
    ref_acc = _accuracy(ref, y)
    input_fqs = (
        _calibrated_inputs(
            model,
            layers,
            activation_spec or QuantSpec.activations(bits),
            observer,
            calibration if calibration is not None else x,
        )
        if activations
        else {}
    )
    results = []
    for name, layer in layers.items():
        weight = layer.weight
        assert isinstance(weight, torch.Tensor)
        saved = weight.detach().clone()
        w_obs = make_observer("minmax", per_channel=w_spec.per_channel, channel_axis=w_spec.channel_axis)
        w_obs.update(saved)
        scale, zp = w_obs.qparams(w_spec)
        handle = None
        if name in input_fqs:
            fq = input_fqs[name]
            fq.enabled = True
            handle = layer.register_forward_pre_hook(lambda _m, args, fq=fq: (fq(args[0]), *args[1:]))
        try:
            weight.copy_(fake_quantize(saved, scale.reshape(-1), zp.reshape(-1), w_spec))
            out = predict(model, x, batch_size=batch_size)
        finally:
            weight.copy_(saved)
            if handle is not None:
                handle.remove()
                input_fqs[name].enabled = False
        acc = _accuracy(out, y)
        delta = None if acc is None or ref_acc is None else acc - ref_acc
        params = sum(p.numel() for p in layer.parameters(recurse=False))
        results.append(LayerSensitivity(name, sqnr(ref, out), delta, params))
    results.sort(key=lambda r: (r.sqnr_db, r.accuracy_delta or 0.0))
    return results


def _calibrated_inputs(
    model: nn.Module, layers: dict[str, nn.Module], spec: QuantSpec, observer: str, calibration: Any
) -> dict[str, FakeQuantize]:
    """One observing ``FakeQuantize`` per layer input, all fed by a single fp32 pass over ``calibration``."""
    dataset = as_calibration(calibration)
    fqs = {name: FakeQuantize(spec, observer) for name in layers}
    hooks = [
        layer.register_forward_pre_hook(lambda _m, args, fq=fqs[name]: fq.observer.update(args[0]))
        for name, layer in layers.items()
    ]
    device = next(model.parameters(), torch.empty(0)).device
    was_training = model.training
    model.eval()
    try:
        for batch in dataset:
            model(batch.to(device) if isinstance(batch, torch.Tensor) else batch)
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    out = {}
    for name, fq in fqs.items():
        if int(fq.observer.count) > 0:  # a layer that never ran keeps fp32 inputs
            fq.update_qparams()
            fq.observe = False
            out[name] = fq
    return out


def mixed_precision_plan(
    results: list[LayerSensitivity], *, max_fp32_layers: int | None = None, sqnr_threshold: float | None = None
) -> set[str]:
    """Names of the layers to keep in fp32: those below ``sqnr_threshold`` dB, at most the
    ``max_fp32_layers`` worst of them (either alone works too)."""
    if max_fp32_layers is None and sqnr_threshold is None:
        raise ConfigError("mixed_precision_plan needs max_fp32_layers, sqnr_threshold or both")
    check(max_fp32_layers is None or max_fp32_layers >= 0, f"max_fp32_layers must be >= 0, got {max_fp32_layers}")
    ranked = sorted(results, key=lambda r: (r.sqnr_db, r.accuracy_delta or 0.0))
    if sqnr_threshold is not None:
        ranked = [r for r in ranked if r.sqnr_db < sqnr_threshold]
    if max_fp32_layers is not None:
        ranked = ranked[:max_fp32_layers]
    return {r.name for r in ranked}


def format_sensitivity(results: list[LayerSensitivity]) -> str:
    """A plain-text table, one row per layer in the given order."""
    width = max([len("layer"), *(len(r.name) for r in results)])
    lines = [f"{'layer':<{width}}  {'SQNR dB':>8}  {'Δ acc':>7}  {'params':>9}"]
    for r in results:
        delta = "-" if r.accuracy_delta is None else f"{100 * r.accuracy_delta:+.2f}"
        lines.append(f"{r.name:<{width}}  {r.sqnr_db:8.2f}  {delta:>7}  {r.params:9d}")
    return "\n".join(lines)


__all__ = ["LayerSensitivity", "format_sensitivity", "layer_sensitivity", "mixed_precision_plan", "sqnr"]
