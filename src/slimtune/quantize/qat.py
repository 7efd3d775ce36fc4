"""Quantization-aware training: fake-quantize Linear/Conv weights and inputs while ``fit`` trains them
(straight-through gradients), then export a QDQ ONNX graph with the learnt int8 weights and qparams.

    prepare_qat_(model, config, calibration=data.calibration(256).x)
    fit(model, data, config=TrainConfig(...), callbacks=[QATCallback(config), *mask_callbacks])
    export_qat_onnx(model, data.test.x[:1], "model.int8.onnx")   # then parity(model, path, x, y)

``qat_(model, data, config, train=...)`` does the first two and keeps existing pruning zeros. Observers
watch in training mode only; weight ranges are those of the current weights. ``reduce_range`` (default:
from the CPU) trains 7-bit weights, which ORT's u8·s8 kernels compute without saturation lacking VNNI.
"""

from __future__ import annotations

import copy
import dataclasses
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimtune.config import Config, check
from slimtune.data.core import DataSplits, Split
from slimtune.errors import ConfigError
from slimtune.quantize.affine import FakeQuantize, Int8Weight, QuantSpec, fake_quantize
from slimtune.quantize.calibration import (
    CalibrationDataset,
    QuantizedLayer,
    calibrate,
    check_patterns,
    quantize_layers,
    select_layers,
)
from slimtune.quantize.observers import OBSERVERS
from slimtune.quantize.ort_dynamic import resolve_reduce_range
from slimtune.train.callbacks import Callback, LoopState
from slimtune.train.loop import FitResult, TrainConfig, fit

NOT_PREPARED = "the model has no fake-quant layers; prepare it with prepare_qat_(model, QATConfig()) first"


@dataclass(frozen=True, kw_only=True)
class QATConfig(Config):
    """Symmetric per-channel ``bits``-bit weights, asymmetric per-tensor ``activation_bits`` inputs whose
    ranges ``observer`` sets. ``freeze_observers_after_epoch=N`` fixes every range after N epochs (0: keep
    the calibrated ones). ``reduce_range`` caps weights at 7 bits (None: decide from the CPU). ``exclude``:
    layer-name regexes or ``<first>``/``<last>``, kept in float. ONNX export needs ``activation_bits=8``."""

    bits: int = 8
    activation_bits: int = 8
    per_channel: bool = True
    quantize_activations: bool = True
    observer: str = "moving-average"
    reduce_range: bool | None = None
    freeze_observers_after_epoch: int | None = None
    exclude: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check(2 <= self.bits <= 8, f"bits must be in 2..8, got {self.bits} (1-bit weights: slimtune.quantize.binary)")
        check(2 <= self.activation_bits <= 8, f"activation_bits must be in 2..8, got {self.activation_bits}")
        freeze = self.freeze_observers_after_epoch
        check(freeze is None or freeze >= 0, f"freeze_observers_after_epoch must be >= 0, got {freeze}")
        OBSERVERS.get(self.observer)  # unknown names fail here, with a suggestion
        check_patterns(self.exclude)

    @property
    def weight_spec(self) -> QuantSpec:
        reduce, _ = resolve_reduce_range(self.reduce_range)
        spec = QuantSpec.weights(min(self.bits, 7) if reduce else self.bits)
        return dataclasses.replace(spec, per_channel=self.per_channel)

    @property
    def activation_spec(self) -> QuantSpec:
        return QuantSpec.activations(self.activation_bits)


class QATFakeQuantize(FakeQuantize):
    """``FakeQuantize`` that observes only in training mode (or while ``calibrate`` runs it disabled);
    with ``current`` the range is that of the tensor just seen (weights), not a running one."""

    def __init__(self, spec: QuantSpec, observer: str, *, current: bool = False) -> None:
        super().__init__(spec, observer)
        self.current, self.enabled = current, True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observe and (self.training or not self.enabled):
            self.watch(x)
        return fake_quantize(x, self.scale, self.zero_point, self.spec) if self.enabled else x

    @torch.no_grad()
    def watch(self, x: torch.Tensor) -> None:
        if self.current:
            self.observer.count.zero_()
        self.observer.update(x.detach())
        if self.enabled:
            self.update_qparams()


def qat_layers(model: nn.Module) -> dict[str, QuantizedLayer]:
    return {n: m for n, m in model.named_modules() if isinstance(m, QuantizedLayer)}


def _qat_fake_quants(model: nn.Module) -> list[QATFakeQuantize]:
    return [m for m in model.modules() if isinstance(m, QATFakeQuantize)]


def prepare_qat_(
    model: nn.Module,
    config: QATConfig | None = None,
    *,
    calibration: CalibrationDataset | Split | torch.Tensor | Iterable[Any] | None = None,
    layers: Sequence[str] | None = None,
) -> dict[str, QuantizedLayer]:
    """Wrap the Linear/Conv layers of ``model`` (all but ``config.exclude``, or exactly ``layers``) in place
    as ``QuantizedLayer``s with QAT fake-quant; returns them by name. Activation ranges start from
    ``calibration``, else from the first training batch. Recorded in ``model.slimtune_spec["qat"]``."""
    config = config or QATConfig()
    if qat_layers(model):
        raise ConfigError("the model already has fake-quant layers; prepare_qat_ runs once per model")
    config = dataclasses.replace(config, reduce_range=resolve_reduce_range(config.reduce_range)[0])
    names = list(layers) if layers is not None else select_layers(model, config.exclude)
    wspec, aspec = config.weight_spec, config.activation_spec
    wrapped = quantize_layers(model, weight=wspec, quantize_activations=False, layers=names)
    for layer in wrapped.values():
        device = layer.weight.device
        layer.weight_fq = QATFakeQuantize(wspec, "minmax", current=True).to(device)
        layer.weight_fq.watch(layer.weight)
        if config.quantize_activations:
            layer.input_fq = QATFakeQuantize(aspec, config.observer).to(device)
    if calibration is not None:
        calibrate(model, calibration)
    for fq in _qat_fake_quants(model):
        fq.observe, fq.enabled = config.freeze_observers_after_epoch != 0, True
    spec = getattr(model, "slimtune_spec", None)
    if isinstance(spec, dict):
        model.slimtune_spec = {**spec, "qat": {"config": config.to_dict(), "layers": names}}  # type: ignore[assignment]
    return wrapped


class QATCallback(Callback):
    """Freezes every range from epoch ``freeze_after`` on (also on resume) and, unless frozen, takes the
    weight ranges from the final weights when training ends."""

    def __init__(self, config: QATConfig | None = None) -> None:
        self.freeze_after = (config or QATConfig()).freeze_observers_after_epoch

    def on_fit_start(self, state: LoopState) -> None:
        fqs = _qat_fake_quants(state.model)
        if not fqs:
            raise ConfigError(NOT_PREPARED)
        if self.freeze_after == 0 and any(not fq.current and int(fq.observer.count) == 0 for fq in fqs):
            raise ConfigError("freeze_observers_after_epoch=0 keeps the calibrated ranges: pass calibration=...")

    def on_epoch_start(self, state: LoopState) -> None:
        frozen = self.freeze_after is not None and state.epoch >= self.freeze_after
        for fq in _qat_fake_quants(state.model):
            fq.observe = not frozen

    def on_fit_end(self, state: LoopState) -> None:
        for layer in qat_layers(state.model).values():
            fq = layer.weight_fq
            if isinstance(fq, QATFakeQuantize) and fq.observe:
                fq.watch(layer.weight)


def qat_(
    model: nn.Module,
    data: DataSplits,
    config: QATConfig | None = None,
    *,
    train: TrainConfig,
    calibration: CalibrationDataset | Split | torch.Tensor | Iterable[Any] | None = None,
    callbacks: Sequence[Callback] = (),
    keep_sparsity: bool = True,
    **fit_options: Any,
) -> FitResult:
    """Prepare ``model`` (unless it already is) and train it with ``fit``; with ``keep_sparsity`` the
    weights that are exactly zero now stay zero. ``fit_options``: checkpoint_dir, resume, progress..."""
    from slimtune.prune.unstructured import hold_existing_zeros

    config = config or QATConfig()
    held = hold_existing_zeros(model) if keep_sparsity else []
    if not qat_layers(model):
        prepare_qat_(model, config, calibration=calibration)
    fit_options.setdefault("desc", "qat")
    return fit(model, data, config=train, callbacks=[QATCallback(config), *held, *callbacks], **fit_options)


def _check_exportable(model: nn.Module) -> dict[str, QuantizedLayer]:
    layers = qat_layers(model)
    if not layers:
        raise ConfigError(NOT_PREPARED)
    for name, layer in layers.items():
        for what, fq in (("input", layer.input_fq), ("weight", layer.weight_fq)):
            if fq is None or not fq.enabled:
                continue
            if int(fq.observer.count) == 0:
                raise ConfigError(f"layer '{name}': the {what} quantizer never saw data; calibrate or train first")
            if what == "input" and fq.spec.onnx_dtype is None:
                raise ConfigError(f"layer '{name}': QDQ export needs 8-bit activations, got {fq.spec.bits} bits")
    return layers


def convert_qat(model: nn.Module) -> nn.Module:
    """A copy of the QAT (or calibrated) model for inference and export: eval mode, observers off, each
    weight stored as integer codes (``Int8Weight``). Its outputs equal the fake-quant model's."""
    _check_exportable(model)
    out = copy.deepcopy(model).eval()
    for m in out.modules():
        if isinstance(m, FakeQuantize):
            m.observe = False  # an observing FakeQuantize would export its min/max ops into the graph
    for layer in qat_layers(out).values():
        if layer.weight_fq is not None and layer.weight_fq.enabled:
            layer.weight_fq = Int8Weight(layer.weight_fq, layer.weight)  # type: ignore[assignment]
    return out


def export_qat_onnx(model: nn.Module, example: torch.Tensor, path: str | Path, *, opset: int = 17) -> Path:
    """Export the QAT model as a QDQ graph: int8 weight initializers → DequantizeLinear, each quantized
    input → QuantizeLinear/DequantizeLinear (uint8), with the learnt scales and zero-points. Opset ≥ 13."""
    from slimtune.env import int8_capability
    from slimtune.export.onnx import export_onnx

    layers = _check_exportable(model)
    full = [n for n, m in layers.items() if m.weight_fq is not None and m.weight_fq.spec.bits == 8]
    if full and not int8_capability()["vnni"]:
        why = "ORT's u8·s8 kernels may saturate and miss parity; QATConfig(reduce_range=None) trains 7-bit weights"
        warnings.warn(f"8-bit weights ({full[0]}, ...) on a CPU without VNNI: {why}", stacklevel=2)
    return export_onnx(convert_qat(model), example, path, opset=max(opset, 13))


def qat_spec(model: nn.Module) -> dict[str, Any] | None:
    """What ``prepare_qat_`` recorded (config with the resolved reduce_range, layer names), or None."""
    spec = getattr(model, "slimtune_spec", None)
    return spec.get("qat") if isinstance(spec, dict) else None


def apply_qat_spec(model: nn.Module, qat: dict[str, Any]) -> None:
    """Re-wrap a freshly rebuilt model as recorded in its spec's ``qat`` entry, so its state dict loads."""
    if not isinstance(qat, dict) or "config" not in qat or "layers" not in qat:
        raise ConfigError("the spec's 'qat' entry is damaged: it needs 'config' and 'layers'")
    prepare_qat_(model, QATConfig.from_dict(qat["config"], where="spec.qat.config"), layers=qat["layers"])


def load_qat_model(folder: str | Path) -> nn.Module:
    """``load_model`` for a QAT model, refusing folders that hold none (``load_model`` re-wraps QAT itself)."""
    from slimtune.models.serialization import load_model, read_spec

    if "qat" not in read_spec(folder):
        raise ConfigError(f"'{folder}' holds no QAT model (its spec has no 'qat' entry); use load_model")
    return load_model(folder)


__all__ = [
    "QATCallback",
    "QATConfig",
    "QATFakeQuantize",
    "apply_qat_spec",
    "convert_qat",
    "export_qat_onnx",
    "load_qat_model",
    "prepare_qat_",
    "qat_",
    "qat_layers",
    "qat_spec",
]
