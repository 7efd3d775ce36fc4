"""Binary (XNOR-Net) and ternary (TWN) weights for Linear/Conv layers, trained with the one loop ``fit``.

    layers = binarize_(model)            # or ternarize_(model, TernaryConfig(threshold=0.7))
    fit(model, data, config=TrainConfig(epochs=8, lr=1e-2))
    fold_(model)                         # plain layers again, weights exactly {±α} (or {0, ±α}) per channel
    lowbit_size(model)                   # bits per weight and the ideal packed size

The float ("latent") weights are what the optimizer updates; every forward pass uses their binary or
ternary projection, with a straight-through gradient (zero where |w| > ``clip``: the hard-tanh STE).
α is per output channel and treated as a constant in the backward pass. First and last layers stay in
float by default (``exclude=("<first>", "<last>")``), as is standard practice. A wrapped model is not
exportable to ONNX: ``fold_`` it first, then it saves, loads and exports as an ordinary fp32 model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from slimtune.config import Config, check
from slimtune.errors import ConfigError
from slimtune.quantize.calibration import FIRST, LAST, QUANTIZABLE, check_patterns, select_layers

BITS = {"binary": 1.0, "ternary": math.log2(3)}


@dataclass(frozen=True, kw_only=True)
class BinaryConfig(Config):
    """XNOR-Net weights: ``α·sign(W)``, α = mean |W| per output channel; gradient zero where |w| > ``clip``."""

    clip: float = 1.0
    exclude: tuple[str, ...] = (FIRST, LAST)

    def __post_init__(self) -> None:
        check(self.clip > 0, f"clip must be > 0, got {self.clip}")
        check_patterns(self.exclude)


@dataclass(frozen=True, kw_only=True)
class TernaryConfig(Config):
    """TWN weights: Δ = ``threshold``·mean |W|, values {−α, 0, +α} with α = mean |w| over |w| > Δ, per
    output channel. Plain STE by default; a ``clip`` zeroes the gradient where |w| > clip."""

    threshold: float = 0.7
    clip: float | None = None
    exclude: tuple[str, ...] = (FIRST, LAST)

    def __post_init__(self) -> None:
        check(0 < self.threshold < 1, f"threshold must be in (0, 1), got {self.threshold}")
        check(self.clip is None or self.clip > 0, f"clip must be > 0, got {self.clip}")
        check_patterns(self.exclude)


LowBitConfig = BinaryConfig | TernaryConfig


def _dims(w: torch.Tensor) -> tuple[int, ...]:
    return tuple(range(1, w.dim()))


@torch.no_grad()
def binary_weight(w: torch.Tensor) -> torch.Tensor:
    """``α·sign(w)`` per output channel (dim 0), α = mean |w|; zero counts as positive."""
    alpha = w.abs().mean(_dims(w), keepdim=True)
    return torch.where(w >= 0, alpha, -alpha)


@torch.no_grad()
def ternary_weight(w: torch.Tensor, threshold: float = 0.7) -> torch.Tensor:
    """{−α, 0, +α} per output channel: |w| ≤ Δ = threshold·mean |w| gives 0, α = mean |w| above Δ."""
    a = w.abs()
    keep = a > threshold * a.mean(_dims(w), keepdim=True)
    alpha = (a * keep).sum(_dims(w), keepdim=True) / keep.sum(_dims(w), keepdim=True).clamp(min=1)
    return torch.where(keep, torch.where(w > 0, alpha, -alpha), torch.zeros_like(w))


def project(w: torch.Tensor, config: LowBitConfig) -> torch.Tensor:
    """The binary or ternary weight ``config`` makes of ``w`` (no gradient)."""
    return binary_weight(w) if isinstance(config, BinaryConfig) else ternary_weight(w, config.threshold)


class _LowBitSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, w: torch.Tensor, config: LowBitConfig) -> torch.Tensor:
        ctx.save_for_backward(w)
        ctx.clip = config.clip
        return project(w, config)

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor) -> tuple[torch.Tensor, None]:
        (w,) = ctx.saved_tensors
        grad = grads[0] if ctx.clip is None else grads[0] * (w.abs() <= ctx.clip).to(grads[0].dtype)
        return grad, None


def lowbit_ste(w: torch.Tensor, config: LowBitConfig) -> torch.Tensor:
    """``project(w, config)`` with the straight-through gradient (masked where |w| > ``config.clip``)."""
    out: torch.Tensor = _LowBitSTE.apply(w, config)
    return out


class LowBitLayer(nn.Module):
    """A Linear/Conv layer computing with the binary/ternary projection of its own float weight."""

    def __init__(self, layer: nn.Module, config: LowBitConfig) -> None:
        super().__init__()
        if not isinstance(layer, QUANTIZABLE):
            raise ConfigError(f"cannot binarize a {type(layer).__name__}: only Linear and Conv1d/2d/3d")
        self.layer, self.config = layer, config

    @property
    def kind(self) -> str:
        return "binary" if isinstance(self.config, BinaryConfig) else "ternary"

    @property
    def weight(self) -> torch.Tensor:
        """The float weight (pruning masks and optimizers address it as ``<name>.weight``)."""
        return self.layer.weight  # type: ignore[return-value]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = lowbit_ste(self.weight, self.config)
        if isinstance(self.layer, nn.Linear):
            return F.linear(x, w, self.layer.bias)
        return self.layer._conv_forward(x, w, self.layer.bias)  # type: ignore[operator]

    def extra_repr(self) -> str:
        return self.kind


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, module)


def lowbit_(model: nn.Module, config: LowBitConfig) -> dict[str, LowBitLayer]:
    """Wrap every Linear/Conv layer of ``model`` not in ``config.exclude`` as a ``LowBitLayer``, in place."""
    if not isinstance(config, BinaryConfig | TernaryConfig):
        raise ConfigError(f"expected a BinaryConfig or TernaryConfig, got {type(config).__name__}")
    if any(isinstance(m, LowBitLayer) for m in model.modules()):
        raise ConfigError("the model already has binary/ternary layers; fold_ it before wrapping again")
    out = {}
    for name in select_layers(model, config.exclude):
        out[name] = LowBitLayer(model.get_submodule(name), config)
        _set(model, name, out[name])
    return out


def binarize_(model: nn.Module, config: BinaryConfig | None = None) -> dict[str, LowBitLayer]:
    """XNOR-Net weights (see ``BinaryConfig``) for the selected layers of ``model``, in place."""
    return lowbit_(model, config or BinaryConfig())


def ternarize_(model: nn.Module, config: TernaryConfig | None = None) -> dict[str, LowBitLayer]:
    """TWN weights (see ``TernaryConfig``) for the selected layers of ``model``, in place."""
    return lowbit_(model, config or TernaryConfig())


@torch.no_grad()
def fold_(model: nn.Module) -> dict[str, str]:
    """Replace every ``LowBitLayer`` by its plain layer holding the projected weight (exactly ±α, or
    0/±α, per output channel). Returns the folded layers' kinds by name."""
    wrapped = {n: m for n, m in model.named_modules() if isinstance(m, LowBitLayer)}
    for name, m in wrapped.items():
        m.weight.copy_(project(m.weight, m.config))
        _set(model, name, m.layer)
    return {n: m.kind for n, m in wrapped.items()}


def weight_kind(w: torch.Tensor) -> str:
    """'binary' if every output channel holds exactly {±α}, 'ternary' for {0, ±α}, else 'float'."""
    rows = w.detach().reshape(len(w), -1).abs()
    top = rows.amax(1, keepdim=True)
    if not bool(((rows == top) | (rows == 0)).all()):
        return "float"
    return "binary" if bool((rows != 0).all()) else "ternary"


@dataclass(frozen=True)
class LowBitSize:
    """``layers``: kind by Linear/Conv layer; ``bits_per_weight`` averages the low-bit layers' weights;
    ``ideal_bytes`` packs those at 1 or log2(3) bits plus one fp32 α per channel, all else fp32."""

    layers: dict[str, str] = field(default_factory=dict)
    lowbit_weights: int = 0
    bits_per_weight: float = 32.0
    ideal_bytes: float = 0.0
    fp32_bytes: int = 0

    @property
    def compression(self) -> float:
        return self.fp32_bytes / self.ideal_bytes if self.ideal_bytes else 1.0


@torch.no_grad()
def lowbit_size(model: nn.Module) -> LowBitSize:
    """Bits per weight and ideal packed size of ``model`` (wrapped, or folded: then read from the values)."""
    total = sum(p.numel() for p in model.parameters())
    inner = {id(m.layer) for m in model.modules() if isinstance(m, LowBitLayer)}
    layers: dict[str, str] = {}
    lowbit = bits = channels = 0.0
    for name, m in model.named_modules():
        if isinstance(m, LowBitLayer):
            kind, w = m.kind, m.weight
        elif isinstance(m, QUANTIZABLE) and id(m) not in inner:
            kind, w = weight_kind(m.weight), m.weight
        else:
            continue
        layers[name] = kind
        if kind in BITS:
            lowbit, bits, channels = lowbit + w.numel(), bits + w.numel() * BITS[kind], channels + len(w)
    ideal = bits / 8 + 4 * channels + 4 * (total - lowbit)
    return LowBitSize(
        layers=layers,
        lowbit_weights=int(lowbit),
        bits_per_weight=bits / lowbit if lowbit else 32.0,
        ideal_bytes=ideal,
        fp32_bytes=4 * total,
    )


__all__ = [
    "BinaryConfig",
    "LowBitLayer",
    "LowBitSize",
    "TernaryConfig",
    "binarize_",
    "binary_weight",
    "fold_",
    "lowbit_",
    "lowbit_size",
    "lowbit_ste",
    "project",
    "ternarize_",
    "ternary_weight",
    "weight_kind",
]
