"""GPTQ (Frantar et al.): quantize a layer's columns one by one and spread each rounding error over the columns
not yet quantized, weighted by the inverse Hessian of the layer's reconstruction loss ``H = 2·XXᵀ/n``.

Stats: the fp32 Hessian and its sample count (``HessianStats``). Solver, after the reference implementation:
dead columns (H_ii = 0) get H_ii = 1 and a zero weight; damping 0.01·mean(diag H); the upper Cholesky factor of
H⁻¹; 128-column blocks with one lazy matmul update of the later columns; act-order (largest diag H first) with
group scales fixed up front from the original weight ("static groups"), so groups stay contiguous in the
original column order and export needs no g_idx. A Hessian that is not positive definite falls back to RTN
for that layer with a logged warning.
"""

from __future__ import annotations

import logging

import torch

from slimtune.quantize.weight_only.grid import QuantizedWeight, _groups, encode, qparams, resolve_group, rtn
from slimtune.quantize.weight_only.mse_grid import padded_importance, search_qparams

log = logging.getLogger(__name__)


class HessianStats:
    """Running ``H = 2/n · Σ x xᵀ`` over the tokens seen (fp32); with the fp32 model's inputs ``x_fp`` also GPTAQ's
    ``D = 2/n · Σ (x_fp − x) xᵀ``."""

    def __init__(self, width: int) -> None:
        self.h = torch.zeros(width, width, dtype=torch.float32)
        self.d: torch.Tensor | None = None
        self.n = 0

    def add(self, x: torch.Tensor, x_fp: torch.Tensor | None = None) -> None:
        x = x.reshape(-1, x.shape[-1]).float()
        t = x.shape[0]
        self.h *= self.n / (self.n + t)
        if self.d is not None:
            self.d *= self.n / (self.n + t)
        self.n += t
        x = x * (2.0 / self.n) ** 0.5
        self.h += x.t() @ x
        if x_fp is not None:
            dx = x_fp.reshape(-1, x.shape[-1]).float() * (2.0 / self.n) ** 0.5 - x
            self.d = (self.d if self.d is not None else torch.zeros_like(self.h)) + dx.t() @ x


def gptq(
    w: torch.Tensor, h: torch.Tensor, *, bits: int, group_size: int, symmetric: bool, damp: float = 0.01,
    block_size: int = 128, act_order: bool = False, static_groups: bool = True, mse: bool = False,
    name: str = "layer", mask: torch.Tensor | None = None, grid: tuple[torch.Tensor, torch.Tensor] | None = None,
    dxxt: torch.Tensor | None = None, alpha: float = 0.25,
) -> QuantizedWeight:  # fmt: skip
    """Quantize the (out, in) weight ``w`` with the Hessian ``h`` (in, in); see the module docstring.
    ``static_groups=False`` (only without act-order) fits each group's grid when the solver reaches it, on the
    weights the earlier columns' errors have already moved (the reference's lazy grids). ``mse`` picks each
    grid by the diag(H)-weighted rounding error over range shrinks (``mse_grid``) instead of min/max.
    ``mask`` (bool, (out, in)): weights where it is False (a pruned model's zeros) stay exactly zero (code = zero
    point) and their error feeds the later columns like any rounding error. ``grid`` (scales, zeros), both
    (out, groups), fixes the static grid instead of fitting it (``refit`` passes its least-squares scales back).
    ``dxxt`` (in, in) = 2/n·Σ (x̃ − x)xᵀ, with x̃ the fp32 model's inputs to this layer and x the compressed model's,
    turns on GPTAQ (Li et al. 2025): every update also moves the later columns by the current weights times
    P = alpha·triu₁(D·Uᵀ)·U (U: the upper Cholesky factor of H⁻¹), as in the reference, so the layer fits the
    fp32 model's outputs W·x̃, not only its own W·x."""
    w = w.detach().clone().float()
    h = h.detach().clone().float()
    width = int(w.shape[1])
    group = resolve_group(group_size, width)
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    importance = torch.diag(h).clone() if mse else None

    def fit(cols: torch.Tensor, start: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = _groups(cols, group)
        if importance is None:
            return qparams(g, bits=bits, symmetric=symmetric)
        imp = padded_importance(importance[start : start + cols.shape[1]], group)
        return search_qparams(g, bits=bits, symmetric=symmetric, importance=imp)

    lazy = not static_groups and not act_order
    # static: the grid of every group from the weight before any update (RTN's grid when nothing moves)
    scale, zero = fit(w, 0) if grid is None else (grid[0].clone(), grid[1].clone())
    perm = torch.argsort(torch.diag(h), descending=True) if act_order else torch.arange(width)
    w, h = w[:, perm], h[perm][:, perm]
    keep = None if mask is None else mask[:, perm]
    col_group = perm // group  # the group of each (permuted) column in the original order
    d_xx = None
    if dxxt is not None:
        d_xx = dxxt.detach().clone().float()
        d_xx[:, dead] = 0.0
        d_xx = d_xx[perm][:, perm]
    h += torch.eye(width) * (damp * torch.mean(torch.diag(h)))
    try:
        chol = torch.linalg.cholesky(h)
        hinv = torch.linalg.cholesky(torch.cholesky_inverse(chol), upper=True)
    except torch.linalg.LinAlgError:
        log.warning("GPTQ: the Hessian of %s is not positive definite; using RTN for this layer", name)
        inv = torch.argsort(perm)
        return rtn(w[:, inv], bits=bits, group_size=group_size, symmetric=symmetric, method="gptq-rtn")
    p = torch.zeros_like(h) if d_xx is None else alpha * torch.triu(d_xx @ hinv.t(), diagonal=1) @ hinv
    codes = torch.zeros_like(w)
    for i1 in range(0, width, block_size):
        i2 = min(i1 + block_size, width)
        wb = w[:, i1:i2].clone()
        errs = torch.zeros_like(wb)
        hb, pb = hinv[i1:i2, i1:i2], p[i1:i2, i1:i2]
        for j in range(i2 - i1):
            col = wb[:, j]
            gi = col_group[i1 + j]
            if lazy and (i1 + j) % group == 0:  # refit this group on the columns as they are now
                end = min(i1 + j + group, width)
                cols = torch.cat([wb[:, j : j + end - i1 - j], w[:, i2:end]], dim=1)
                s_new, z_new = fit(cols, i1 + j)
                scale[:, gi], zero[:, gi] = s_new[:, 0], z_new[:, 0]
            s, z = scale[:, gi], zero[:, gi]
            q = encode(col.unsqueeze(-1), s, z, bits).squeeze(-1)
            if keep is not None:
                q = torch.where(keep[:, i1 + j], q, z)
            codes[:, i1 + j] = q
            deq = (q - z) * s
            err = (col - deq) / hb[j, j]
            wb[:, j:] -= err.unsqueeze(1) * hb[j, j:].unsqueeze(0) - col.unsqueeze(1) * pb[j, j:].unsqueeze(0)
            errs[:, j] = err
        w[:, i2:] -= errs @ hinv[i1:i2, i2:] - wb @ p[i1:i2, i2:]
    inv = torch.argsort(perm)
    codes = codes[:, inv]
    return QuantizedWeight(codes.to(torch.uint8), scale, zero, bits, group, symmetric, "gptq")
