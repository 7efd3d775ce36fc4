"""The math of one-shot LM sparsity, layer by layer, on an (out, in) weight: Wanda's masks and SparseGPT's solver.

- **Wanda** (Sun et al. 2023): score ``|W_ij| · sqrt(mean_t x_tj²)``, ranked within each output row (or within
  each group of M consecutive columns for N:M); no weight update.
- **SparseGPT** (Frantar & Alistarh 2023): the GPTQ solver with pruning instead of rounding. Dead columns get
  H_jj = 1 and a zero weight; damping 0.01·mean(diag H); the upper Cholesky factor of H⁻¹; in 128-column blocks
  the mask drops the smallest ``w²/[H⁻¹]_jj²`` (exactly ``int(sparsity · out · cols)`` of the block, or the N
  smallest of every M columns of a row), each pruned weight's error is spread over the later columns of the
  block, then one lazy matmul updates the columns after the block.

An N:M ``pattern`` means N zeros in every M consecutive input columns of each row (2:4 and 4:8 are 50%).
"""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)


def row_keep(scores: torch.Tensor, *, sparsity: float, n: int = 0, m: int = 0) -> torch.Tensor:
    """Keep mask (bool, like ``scores`` (out, in)): drop the ``int(sparsity · in)`` lowest scores of each row,
    or with ``n:m`` the ``n`` lowest of every ``m`` consecutive columns of each row (ties by position)."""
    out, width = scores.shape
    keep = torch.ones_like(scores, dtype=torch.bool)
    if n:
        groups = scores.reshape(out, width // m, m)
        drop = torch.topk(groups, n, dim=-1, largest=False).indices
        keep.view(out, width // m, m).scatter_(-1, drop, False)
        return keep
    k = int(sparsity * width)
    if k:
        keep.scatter_(1, torch.topk(scores, k, dim=1, largest=False).indices, False)
    return keep


def wanda_scores(w: torch.Tensor, sq_norm_mean: torch.Tensor) -> torch.Tensor:
    """``|W| · sqrt(mean ‖x_j‖²)`` for the (out, in) weight and the per-input-column mean of x²."""
    return w.abs().float() * sq_norm_mean.float().sqrt().unsqueeze(0)


def _block_keep(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    k = int(sparsity * scores.numel())
    keep = torch.ones(scores.numel(), dtype=torch.bool)
    if k:
        keep[torch.topk(scores.flatten(), k, largest=False).indices] = False
    return keep.view(scores.shape)


def sparsegpt(
    w: torch.Tensor, h: torch.Tensor, *, sparsity: float, n: int = 0, m: int = 0, block_size: int = 128,
    damp: float = 0.01, name: str = "layer",
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Prune the (out, in) weight ``w`` with the Hessian ``h`` (in, in); returns (new weight, keep mask)."""
    w = w.detach().clone().float()
    h = h.detach().clone().float()
    width = w.shape[1]
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h += torch.eye(width) * (damp * torch.mean(torch.diag(h)))
    try:
        chol = torch.linalg.cholesky(h)
        hinv = torch.linalg.cholesky(torch.cholesky_inverse(chol), upper=True)
    except torch.linalg.LinAlgError:
        log.warning("SparseGPT: the Hessian of %s is not positive definite; using magnitude for this layer", name)
        keep = row_keep(w.abs(), sparsity=sparsity, n=n, m=m)
        return w * keep, keep
    keep = torch.ones_like(w, dtype=torch.bool)
    for i1 in range(0, width, block_size):
        i2 = min(i1 + block_size, width)
        wb = w[:, i1:i2].clone()
        errs = torch.zeros_like(wb)
        hb = hinv[i1:i2, i1:i2]
        d2 = torch.diag(hb).unsqueeze(0) ** 2
        kb = keep[:, i1:i2]
        if not n:
            kb.copy_(_block_keep(wb**2 / d2, sparsity))
        for j in range(i2 - i1):
            if n and j % m == 0:  # the N smallest of the next M columns, from the weights as updated so far
                kb[:, j : j + m] = row_keep(wb[:, j : j + m] ** 2 / d2[:, j : j + m], sparsity=0.0, n=n, m=m)
            col = wb[:, j]
            q = col * kb[:, j]
            err = (col - q) / hb[j, j]
            wb[:, j:] -= err.unsqueeze(1) * hb[j, j:].unsqueeze(0)
            wb[:, j] = q
            errs[:, j] = err
        w[:, i1:i2] = wb
        w[:, i2:] -= errs @ hinv[i1:i2, i2:]
    return w, keep & ~dead.unsqueeze(0)
