"""The weight-only integer grid: per-group scales and integer zero points, codes, dequantization, RTN and HQQ.

Everything works on an (out, in) weight in fp32. Groups run along the input dimension (``group_size`` columns
share a scale and a zero point; per-channel is one group of the whole row). A width that ``group_size`` does not
divide gets a shorter last group (ragged groups): it is quantized on its own min/max, and its codes pad to a whole
group with the zero point (0.0), as ``MatMulNBits`` pads K to a block multiple. Codes are unsigned in
[0, 2**bits - 1] and dequantize as ``(code - zero) * scale``, the layout ONNX Runtime's ``MatMulNBits`` reads:
symmetric grids fix ``zero = 2**(bits-1)``. ``QuantizedWeight`` holds what a quantized layer stores beside its
dequantized fp32 weight so the exporter can emit the very same codes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class QuantizedWeight:
    """Codes (uint8, (out, in)), scales and zero points ((out, groups), fp32, integer-valued zeros)."""

    codes: torch.Tensor
    scales: torch.Tensor
    zeros: torch.Tensor
    bits: int
    group_size: int  # the resolved size: the input width for per-channel
    symmetric: bool
    method: str

    def dequantize(self) -> torch.Tensor:
        return dequantize(self.codes, self.scales, self.zeros, self.group_size)

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.codes.shape[0]), int(self.codes.shape[1]))


def resolve_group(group_size: int, in_features: int) -> int:
    return in_features if group_size == -1 else group_size


def n_groups(width: int, group: int) -> int:
    """Groups per row: the last one is shorter when ``group`` does not divide ``width`` (ragged)."""
    return -(-width // group)


def _groups(w: torch.Tensor, group: int) -> torch.Tensor:
    """(out, in) → (out, groups, group); a ragged last group is padded with zeros, which change neither its
    min/max grid (the range always includes 0) nor its codes' meaning (a zero encodes as the zero point)."""
    out, width = w.shape
    pad = n_groups(width, group) * group - width
    if pad:
        w = torch.nn.functional.pad(w, (0, pad))
    return w.reshape(out, -1, group)


def qparams(w: torch.Tensor, *, bits: int, symmetric: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point of each row of ``w`` [..., group]. Asymmetric: the min/max range, always including 0
    (GPTQ's reference grid). Symmetric: ONNX Runtime's MatMulNBits convention, zero point 2**(bits-1) and the
    value of largest magnitude mapped exactly onto code 0 (scale = that signed value / -2**(bits-1), negative
    when it is positive), so the codes use all 2**bits levels (a step of max|w|/8 at 4 bits, not max|w|/7.5).
    An all-zero group gets scale 1."""
    maxq = 2**bits - 1
    if symmetric:
        peak = w.gather(-1, w.abs().argmax(dim=-1, keepdim=True)).squeeze(-1)
        scale = peak / -float(2 ** (bits - 1))
        scale = torch.where(scale != 0, scale, torch.ones_like(scale))
        return scale, torch.full_like(scale, float(2 ** (bits - 1)))
    lo = torch.clamp(w.amin(dim=-1), max=0.0)
    hi = torch.clamp(w.amax(dim=-1), min=0.0)
    scale = (hi - lo) / maxq
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    zero = torch.clamp(torch.round(-lo / scale), 0, maxq)
    return scale, zero


def encode(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int) -> torch.Tensor:
    """Integer codes (as float) of ``w`` [..., k] on the grid (``scale``, ``zero`` broadcast as [..., 1])."""
    return torch.clamp(torch.round(w / scale.unsqueeze(-1)) + zero.unsqueeze(-1), 0, 2**bits - 1)


def dequantize(codes: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, group: int) -> torch.Tensor:
    width = codes.shape[1]
    q = _groups(codes.float(), group)
    return ((q - zeros.unsqueeze(-1)) * scales.unsqueeze(-1)).flatten(1)[:, :width]


def rtn(
    w: torch.Tensor, *, bits: int, group_size: int, symmetric: bool, method: str = "rtn",
    clip: torch.Tensor | None = None,
) -> QuantizedWeight:  # fmt: skip
    """Round-to-nearest of an (out, in) weight on the per-group min/max grid; ``clip`` (out, groups) in (0, 1]
    shrinks each group's range first (values outside it saturate)."""
    group = resolve_group(group_size, w.shape[1])
    g = _groups(w.float(), group)
    scale, zero = qparams(g if clip is None else g * clip.unsqueeze(-1), bits=bits, symmetric=symmetric)
    codes = encode(g, scale, zero, bits).flatten(1)[:, : w.shape[1]]
    return QuantizedWeight(codes.to(torch.uint8), scale, zero, bits, group, symmetric, method)


def _shrink_lp(x: torch.Tensor, beta: float, p: float) -> torch.Tensor:
    return torch.sign(x) * torch.relu(x.abs() - (1.0 / beta) * x.abs().clamp_min(1e-8).pow(p - 1))


def hqq(
    w: torch.Tensor, *, bits: int, group_size: int, symmetric: bool = False, iters: int = 20, p: float = 0.7,
    beta: float = 10.0, kappa: float = 1.01,
) -> QuantizedWeight:  # fmt: skip
    """Half-quadratic quantization on an integer grid: start from min/max, then alternate the l_p (p < 1)
    proximal shrink of the residual with a closed-form least-squares update of each group's scale (and, when
    asymmetric, of its zero point, rounded to an integer so ``MatMulNBits`` keeps its int8 fast path), keeping
    per group the parameters with the lowest mean |W - Ŵ| (RTN's are the start, so it is never worse)."""
    group = resolve_group(group_size, w.shape[1])
    maxq = 2**bits - 1
    g = _groups(w.float(), group)
    scale, zero = qparams(g, bits=bits, symmetric=symmetric)
    s, z = scale.unsqueeze(-1).clone(), zero.unsqueeze(-1).clone()

    def error(s_: torch.Tensor, z_: torch.Tensor) -> torch.Tensor:
        q = torch.clamp(torch.round(g / s_ + z_), 0, maxq)
        return ((q - z_) * s_ - g).abs().mean(dim=-1, keepdim=True)

    best_s, best_z, best_err = s.clone(), z.clone(), error(s, z)
    for _ in range(iters):
        q = torch.clamp(torch.round(g / s + z), 0, maxq)
        target = g - _shrink_lp(g - (q - z) * s, beta, p)
        if not symmetric:
            z = torch.clamp(torch.round((q - target / s).mean(dim=-1, keepdim=True)), 0, maxq)
        d = q - z
        fitted = (target * d).sum(dim=-1, keepdim=True) / (d * d).sum(dim=-1, keepdim=True).clamp_min(1e-12)
        s = torch.where(fitted * s > 0, fitted, s)  # keep the sign (a symmetric scale may be negative)
        beta *= kappa
        err = error(s, z)
        better = err < best_err
        best_s, best_z = torch.where(better, s, best_s), torch.where(better, z, best_z)
        best_err = torch.minimum(err, best_err)
    scale, zero = best_s.squeeze(-1), best_z.squeeze(-1)
    codes = encode(g, scale, zero, bits).flatten(1)[:, : w.shape[1]]
    return QuantizedWeight(codes.to(torch.uint8), scale, zero, bits, group, symmetric, "hqq")
