"""Affine (uniform) quantization for simulation: q = clamp(round(x / scale) + zero_point, qmin, qmax).

Asymmetric: ``scale = (max - min) / (2^k - 1)``, ``zero_point = qmin + round(-min / scale)``; the range is
first widened to include 0 so zero is exact, and ``min`` is nudged onto the grid (``-zero_point·scale``),
so ``Q(x) = round((x - min) / (max - min) · (2^k - 1))`` holds exactly for the nudged range.
Symmetric: ``scale = max|x| / (2^(k-1) - 1)``, ``zero_point = 0`` (signed) or ``2^(k-1)`` (unsigned).
One bit (symmetric only) is the sign: q ∈ {-1, +1}, x̂ = scale·q with ``scale = max|x|``.

Fake quantization uses PyTorch's own ``fake_quantize_per_{tensor,channel}_affine`` (straight-through
gradient inside the clamp range, zero outside), so 8-bit ``FakeQuantize`` modules export to ONNX as
QuantizeLinear/DequantizeLinear pairs; :func:`quantize` rounds exactly as those kernels do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from slimtune.config import Config, check

if TYPE_CHECKING:
    from slimtune.quantize.observers import Observer

_EPS = float(torch.finfo(torch.float32).eps)


@dataclass(frozen=True, kw_only=True)
class QuantSpec(Config):
    """How to quantize one tensor. ``signed=None`` means signed iff symmetric (int8 weights, uint8 activations)."""

    bits: int = 8
    symmetric: bool = False
    per_channel: bool = False
    channel_axis: int = 0
    narrow_range: bool = False
    signed: bool | None = None

    def __post_init__(self) -> None:
        check(1 <= self.bits <= 8, f"bits must be in 1..8, got {self.bits}")
        if self.bits == 1:
            check(self.symmetric, "bits=1 is sign quantization: it needs symmetric=true")
            check(self.signed is not False, "bits=1 is sign quantization: it needs signed=true")

    @classmethod
    def weights(cls, bits: int = 8) -> QuantSpec:
        """Symmetric per-output-channel signed: the usual weight scheme (int8 for ONNX)."""
        return cls(bits=bits, symmetric=True, per_channel=True)

    @classmethod
    def activations(cls, bits: int = 8) -> QuantSpec:
        """Asymmetric per-tensor unsigned: the usual activation scheme (uint8 for ONNX)."""
        return cls(bits=bits, symmetric=False)

    @property
    def is_signed(self) -> bool:
        return self.symmetric if self.signed is None else self.signed

    @property
    def qrange(self) -> tuple[int, int]:
        """(qmin, qmax) of the integer grid."""
        if self.bits == 1:
            return -1, 1
        if self.is_signed:
            half = 2 ** (self.bits - 1)
            return (-half + 1 if self.narrow_range else -half), half - 1
        return (1 if self.narrow_range else 0), 2**self.bits - 1

    @property
    def onnx_dtype(self) -> torch.dtype | None:
        """``torch.int8``/``torch.uint8`` when the grid fits an ONNX QuantizeLinear type, else None."""
        if self.bits != 8:
            return None
        return torch.int8 if self.is_signed else torch.uint8


def _broadcast(t: torch.Tensor, x: torch.Tensor, axis: int) -> torch.Tensor:
    """Per-tensor qparams as scalars; per-channel ones shaped to broadcast along ``axis`` of ``x``."""
    if t.numel() == 1:
        return t.reshape(())
    shape = [1] * x.dim()
    shape[axis % x.dim()] = -1
    return t.reshape(shape)


def compute_qparams(
    min_val: torch.Tensor | float, max_val: torch.Tensor | float, spec: QuantSpec
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale, zero_point)`` for the range [min_val, max_val]: float32 and int32 tensors of the same
    shape as the inputs (0-d per tensor, (C,) per channel). A zero-width range gets scale 1."""
    lo = torch.as_tensor(min_val, dtype=torch.float32)
    hi = torch.as_tensor(max_val, dtype=torch.float32)
    lo, hi = torch.minimum(lo, torch.zeros_like(lo)), torch.maximum(hi, torch.zeros_like(hi))
    qmin, qmax = spec.qrange
    if spec.symmetric:
        amax = torch.maximum(-lo, hi)
        levels = 1 if spec.bits == 1 else 2 ** (spec.bits - 1) - 1
        scale = amax / levels
        zp_value = 0 if spec.is_signed or spec.bits == 1 else 2 ** (spec.bits - 1)
        zp = torch.full_like(scale, zp_value, dtype=torch.int32)
    else:
        scale = (hi - lo) / float(qmax - qmin)
        safe = torch.where(scale > 0, scale, torch.ones_like(scale))
        zp = (qmin - torch.round(lo / safe)).clamp(qmin, qmax).to(torch.int32)
    scale = torch.where(scale > 0, scale.clamp(min=_EPS), torch.ones_like(scale))
    return scale, zp


def quantize(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """Integer codes (int32 tensor) of ``x``; per-channel qparams broadcast along ``spec.channel_axis``."""
    if spec.bits == 1:
        return torch.where(x >= 0, 1, -1).to(torch.int32)
    qmin, qmax = spec.qrange
    s, zp = _broadcast(scale.float(), x, spec.channel_axis), _broadcast(zero_point, x, spec.channel_axis)
    q = torch.round(x.float() * (1.0 / s)) + zp
    return q.clamp(qmin, qmax).to(torch.int32)


def dequantize(q: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, *, axis: int = 0) -> torch.Tensor:
    """``(q - zero_point) · scale`` as float32; per-channel qparams ((C,) tensors) apply along ``axis``."""
    s, zp = _broadcast(scale.float(), q, axis), _broadcast(zero_point, q, axis)
    return (q.float() - zp.float()) * s


class _SignSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x.abs() <= scale)
        return torch.where(x >= 0, scale, -scale).to(x.dtype)

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor) -> tuple[torch.Tensor, None]:
        (inside,) = ctx.saved_tensors
        return grads[0] * inside, None


def fake_quantize(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """``dequantize(quantize(x))`` in float, with a straight-through gradient: 1 where ``x`` falls inside
    the clamp range, 0 where it is clamped."""
    if spec.bits == 1:
        return _SignSTE.apply(x, _broadcast(scale.float(), x, spec.channel_axis))
    qmin, qmax = spec.qrange
    scale, zero_point = scale.float(), zero_point.to(torch.int32)
    if spec.per_channel and scale.numel() > 1:
        axis = spec.channel_axis % x.dim()
        return torch.fake_quantize_per_channel_affine(x, scale, zero_point, axis, qmin, qmax)
    return torch.fake_quantize_per_tensor_affine(x, scale.reshape(()), zero_point.reshape(()), qmin, qmax)


class FakeQuantize(nn.Module):
    """Observe (``observe=True``) then simulate quantization (``enabled=True``) of whatever passes through.

    While both are on (QAT), qparams follow the observer every step. ``scale``/``zero_point`` are
    buffers (float32, int32; (1,) per tensor, (C,) per channel) saved in the state dict; with 8 bits
    they lie in the int8/uint8 range of ``spec.onnx_dtype``.
    """

    scale: torch.Tensor
    zero_point: torch.Tensor

    def __init__(self, spec: QuantSpec, observer: str | Observer = "minmax", **observer_options: Any) -> None:
        super().__init__()
        from slimtune.quantize.observers import make_observer

        self.spec = spec
        if isinstance(observer, str):
            observer_options.setdefault("per_channel", spec.per_channel)
            observer_options.setdefault("channel_axis", spec.channel_axis)
            observer = make_observer(observer, **observer_options)
        self.observer = observer
        self.observe, self.enabled = True, False
        self.register_buffer("scale", torch.ones(1))
        self.register_buffer("zero_point", torch.zeros(1, dtype=torch.int32))

    def update_qparams(self) -> None:
        """Set ``scale``/``zero_point`` from what the observer has seen (ConfigError if nothing)."""
        scale, zp = self.observer.qparams(self.spec)
        device = self.observer.min_val.device  # where the observed data lives
        self.scale = scale.reshape(-1).to(device)
        self.zero_point = zp.reshape(-1).to(device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observe:
            self.observer.update(x.detach())
            if self.enabled:
                self.update_qparams()
        if not self.enabled:
            return x
        return fake_quantize(x, self.scale, self.zero_point, self.spec)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        for name in ("scale", "zero_point"):  # per-channel buffers take their saved length
            saved = state_dict.get(prefix + name)
            if isinstance(saved, torch.Tensor) and saved.shape != getattr(self, name).shape:
                setattr(self, name, torch.empty_like(saved, device=getattr(self, name).device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        s = self.spec
        kind = f"{'sym' if s.symmetric else 'asym'}, {'per-channel' if s.per_channel else 'per-tensor'}"
        return f"bits={s.bits}, {kind}, observe={self.observe}, enabled={self.enabled}"


class _DequantizeLinear(torch.autograd.Function):
    """``(q - zero_point)·scale``; exported to ONNX as one DequantizeLinear over an int8 initializer."""

    @staticmethod
    def forward(ctx: Any, q: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, axis: int) -> torch.Tensor:
        return dequantize(q, scale, zero_point, axis=axis)

    @staticmethod
    def symbolic(g: Any, q: Any, scale: Any, zero_point: Any, axis: int) -> Any:
        return g.op("DequantizeLinear", q, scale, zero_point, axis_i=axis)


class Int8Weight(nn.Module):
    """A weight frozen as integer codes ``q`` (int8/uint8) with the scale and zero-point of its ``FakeQuantize``.
    It returns exactly what that ``FakeQuantize`` returned, and exports to ONNX as an int8 initializer feeding
    one DequantizeLinear (used by ``slimtune.quantize.qat.convert_qat``)."""

    def __init__(self, fq: FakeQuantize, weight: torch.Tensor) -> None:
        super().__init__()
        spec = fq.spec
        dtype = torch.int8 if spec.is_signed else torch.uint8
        per_channel = spec.per_channel and fq.scale.numel() > 1
        scale, zp = (fq.scale, fq.zero_point) if per_channel else (fq.scale.reshape(()), fq.zero_point.reshape(()))
        self.axis = spec.channel_axis % weight.dim()
        self.register_buffer("q", quantize(weight.detach(), scale, zp, spec).to(dtype))
        self.register_buffer("scale", scale.detach().float().clone())
        self.register_buffer("zero_point", zp.detach().to(dtype).clone())

    def forward(self, weight: torch.Tensor) -> torch.Tensor:  # the float weight is ignored
        out: torch.Tensor = _DequantizeLinear.apply(self.q, self.scale, self.zero_point, self.axis)
        return out


__all__ = ["FakeQuantize", "Int8Weight", "QuantSpec", "compute_qparams", "dequantize", "fake_quantize", "quantize"]
