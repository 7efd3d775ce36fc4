"""AWQ's clip search: shrink each group's range (max and min by the same ratio, from 1 down to ``min_ratio``) when
that lowers the group's share of the layer output error ‖X_g (W_g − Q(W_g))ᵀ‖² on sampled activations. Ratio 1
(no clipping) is on the grid, so each group's error never grows. q/k projections are skipped (their error moves
attention scores; the AWQ reference skips them too), and so is GPT-2's fused c_attn that holds them."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from slimtune.models.blocks import BlockInputs
from slimtune.quantize.weight_only.grid import _groups, resolve_group, rtn

SKIP = ("q_proj", "k_proj", "c_attn")


def clippable(name: str) -> bool:
    return name.split(".")[-1] not in SKIP


def capture_inputs(
    block: nn.Module, targets: dict[str, nn.Module], sample: BlockInputs, *, max_tokens: int = 512
) -> dict[str, torch.Tensor]:
    """Each target's input activations [tokens, in] (at most ``max_tokens`` rows) when ``sample`` runs."""
    seen: dict[str, torch.Tensor] = {}
    handles = []
    for name, layer in targets.items():

        def hook(_: nn.Module, args: tuple[Any, ...], _name: str = name) -> None:
            x = args[0].detach().reshape(-1, args[0].shape[-1]).float()
            seen.setdefault(_name, x[:max_tokens])

        handles.append(layer.register_forward_pre_hook(hook))
    try:
        sample.run(block)
    finally:
        for h in handles:
            h.remove()
    return seen


def group_errors(w: torch.Tensor, q: torch.Tensor, x: torch.Tensor, group: int) -> torch.Tensor:
    """(out, groups): Σ_tokens (X_g · (W − Q)_gᵀ)² per output row and input group."""
    dq = _groups(w - q, group)  # out, G, k
    xg = _groups(x, group)  # t, G, k (a ragged last group zero-padded like the weight's)
    return torch.einsum("tgk,ogk->tog", xg, dq).pow(2).sum(dim=0)


def clip_ratios(
    w: torch.Tensor, x: torch.Tensor, *, bits: int, group_size: int, symmetric: bool, steps: int = 10,
    min_ratio: float = 0.5,
) -> torch.Tensor:  # fmt: skip
    """The best clip ratio (out, groups) for the (out, in) weight ``w`` fed ``x`` [tokens, in]."""
    group = resolve_group(group_size, w.shape[1])
    out, groups = w.shape[0], -(-w.shape[1] // group)
    best = torch.ones(out, groups)
    best_err = torch.full((out, groups), float("inf"))
    for i in range(steps):
        ratio = 1.0 - (1.0 - min_ratio) * i / max(1, steps - 1)
        clip = torch.full((out, groups), ratio)
        q = rtn(w, bits=bits, group_size=group_size, symmetric=symmetric, clip=clip).dequantize()
        err = group_errors(w, q, x, group)
        better = err < best_err
        best = torch.where(better, clip, best)
        best_err = torch.where(better, err, best_err)
    return best
