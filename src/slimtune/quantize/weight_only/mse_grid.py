"""Per-group grids chosen by error instead of by min/max: each group's range is shrunk by the ratio (from 1 down to
``min_ratio``) that minimises Σ_k a_k·|w_k − Q(w_k)|^p over the group, as GPTQ's reference ``Quantizer(mse=True)``
does (p = 2.4, shrink down to 0.2 there). ``importance`` a_k (one weight per input column: GPTQ passes diag(H), the
mean squared activation of each input) makes it activation-aware: columns that meet large inputs weigh more.
Ratio 1, the min/max grid, is on the search grid, so no group's error grows.

A ragged last group (``grid._groups`` zero-pads it) pads its importance with zeros too.
"""

from __future__ import annotations

import torch

from slimtune.quantize.weight_only.grid import encode, qparams


def padded_importance(importance: torch.Tensor, group: int) -> torch.Tensor:
    """Per-column importance as [groups, group], zero-padded like the ragged last group."""
    extra = -importance.numel() % group
    return torch.nn.functional.pad(importance, (0, extra)).reshape(-1, group)


def search_qparams(
    g: torch.Tensor, *, bits: int, symmetric: bool, importance: torch.Tensor | None = None, steps: int = 40,
    min_ratio: float = 0.5, p: float = 2.4,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Scale and zero point of each group of ``g`` [out, groups, k] (``importance`` [groups, k] or None) with the
    lowest weighted l_p rounding error over the shrink ratios 1, …, ``min_ratio`` (``steps`` of them)."""
    best_s, best_z = qparams(g, bits=bits, symmetric=symmetric)
    a = torch.ones_like(g[0]) if importance is None else importance.to(g.dtype)
    best_err = _error(g, best_s, best_z, bits, a, p)
    for i in range(1, steps):
        ratio = 1.0 - (1.0 - min_ratio) * i / max(1, steps - 1)
        s, z = qparams(g * ratio, bits=bits, symmetric=symmetric)
        err = _error(g, s, z, bits, a, p)
        better = err < best_err
        best_s, best_z = torch.where(better, s, best_s), torch.where(better, z, best_z)
        best_err = torch.minimum(err, best_err)
    return best_s, best_z


def _error(g: torch.Tensor, s: torch.Tensor, z: torch.Tensor, bits: int, a: torch.Tensor, p: float) -> torch.Tensor:
    q = (encode(g, s, z, bits) - z.unsqueeze(-1)) * s.unsqueeze(-1)
    return ((q - g).abs().pow(p) * a).sum(dim=-1)
