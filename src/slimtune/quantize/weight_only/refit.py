"""Least-squares scales for fixed codes: once GPTQ has chosen every code, each group's scale is re-solved so the
layer's output on the calibration inputs is closest to the original weight's (the codes and the integer zero points
stay, so the result is on the same ``MatMulNBits`` grid and exports as is).

For output row r with centred codes d = code − zero and a scale per group, Ŵ_r = Σ_g s_rg·d_r[g], and the output
error (w_r − Ŵ_r)ᵀ H (w_r − Ŵ_r) with the layer Hessian H = 2·XXᵀ/n is quadratic in s_r: the normal equations
A_r s_r = b_r with A_r[g, h] = d_r[g]ᵀ H[g, h] d_r[h] and b_r[g] = d_r[g]ᵀ (H w_r)[g], one G×G system per row
(G groups). A ridge toward the current scales keeps degenerate groups (all codes at the zero point) where they are,
and a row whose refit would not lower its error keeps its scales, so the refit never raises a layer's error.
"""

from __future__ import annotations

import torch

from slimtune.quantize.weight_only.grid import QuantizedWeight, _groups, n_groups


def refit_scales(qw: QuantizedWeight, w: torch.Tensor, h: torch.Tensor, *, ridge: float = 1e-6) -> QuantizedWeight:
    """``qw`` with every group's scale re-solved against the (out, in) weight ``w`` under the Hessian ``h``."""
    out, width = qw.shape
    group = qw.group_size
    n_g = n_groups(width, group)
    w, h = w.float(), h.float()
    d = (_groups(qw.codes.float(), group) - qw.zeros.unsqueeze(-1)).flatten(1)[:, :width]  # (out, in) centred codes
    member = torch.arange(width) // group
    onehot = torch.nn.functional.one_hot(member, n_g).float()  # (in, G)
    a = torch.empty(out, n_g, n_g)
    for g in range(n_g):  # A[:, :, g] = Σ_{i} d_ri·onehot(i)·(H[:, cols g] d_r[cols g])_i
        cols = member == g
        e = d[:, cols] @ h[cols, :]  # (out, in): row r's Σ_{j∈g} d_rj H_ji
        a[:, :, g] = (d * e) @ onehot
    b = (d * (w @ h)) @ onehot  # (out, G)
    s0 = qw.scales.float()
    lam = ridge * torch.diagonal(a, dim1=1, dim2=2).mean(dim=1).clamp_min(1e-12)  # (out,)
    eye = torch.eye(n_g).expand(out, n_g, n_g)
    s = torch.linalg.solve(a + lam[:, None, None] * eye, (b + lam[:, None] * s0).unsqueeze(-1)).squeeze(-1)

    def err(scales: torch.Tensor) -> torch.Tensor:
        delta = w - (d.reshape(out, -1) * (scales @ onehot.t()))
        return ((delta @ h) * delta).sum(dim=1)

    s = torch.where((err(s) < err(s0)).unsqueeze(1), s, s0)
    return QuantizedWeight(qw.codes, s, qw.zeros, qw.bits, qw.group_size, qw.symmetric, qw.method)
