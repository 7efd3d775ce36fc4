"""Activation importance of a decoder LM's attention heads, FFN channels and blocks, from one forward pass over
calibration text (no gradients, eval, no KV cache).

- A query head's importance is its contribution to the attention output: Σ_t ‖W_o[:, head] · a_t,head‖².
- An FFN channel's: Σ_t x_t,c² · ‖W_down[:, c]‖² (its contribution to the down projection's output).
- A block's (ShortGPT): the mean over tokens of 1 − cos(block input, block output); a block that returns its
  input scores 0.

A head or channel whose output weights are zero therefore scores exactly 0, so removing it changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from slimtune.models.blocks import linear_weight
from slimtune.models.lm_layers import decoder_layers


@dataclass
class Importance:
    heads: list[torch.Tensor]  # per layer: [query heads]
    ffn: list[torch.Tensor]  # per layer: [channels]
    blocks: torch.Tensor  # [layers]


def attn_out(block: Any) -> tuple[nn.Module, int]:
    """The attention output projection of a block and its head size."""
    if hasattr(block, "self_attn"):
        attn = block.self_attn
        return (attn.o_proj if hasattr(attn, "o_proj") else attn.dense), int(attn.head_dim)
    return block.attn.c_proj, int(block.attn.head_dim)


def ffn_down(block: Any) -> nn.Module:
    mlp = block.mlp
    for name in ("down_proj", "fc2", "c_proj"):
        if hasattr(mlp, name):
            return getattr(mlp, name)  # type: ignore[no-any-return]
    raise AttributeError(f"no FFN down projection in {type(mlp).__name__}")


def _out(x: Any) -> torch.Tensor:
    return x[0] if isinstance(x, (tuple, list)) else x


@torch.no_grad()
def importance(model: nn.Module, ids: torch.Tensor, *, batch_size: int = 8) -> Importance:
    layers = decoder_layers(model)
    n = len(layers)
    heads: list[Any] = [0.0] * n
    ffn: list[Any] = [0.0] * n
    cos_sum, tokens = torch.zeros(n), 0
    handles = []

    for i, block in enumerate(layers):
        o_proj, d = attn_out(block)
        w_o = linear_weight(o_proj).float()  # (hidden, heads·d)
        down = ffn_down(block)
        col_norm = linear_weight(down).float().pow(2).sum(0)  # ‖W_down[:, c]‖²

        def head_hook(_: nn.Module, args: tuple[Any, ...], i: int = i, d: int = d, w_o: Any = w_o) -> None:
            x = args[0].reshape(-1, args[0].shape[-1]).float()
            h = x.shape[1] // d
            contrib = torch.einsum("thd,ohd->tho", x.view(-1, h, d), w_o.view(-1, h, d)).pow(2).sum((0, 2))
            heads[i] = heads[i] + contrib

        def ffn_hook(_: nn.Module, args: tuple[Any, ...], i: int = i, c: Any = col_norm) -> None:
            x = args[0].reshape(-1, args[0].shape[-1]).float()
            ffn[i] = ffn[i] + x.pow(2).sum(0) * c

        def block_hook(_: nn.Module, args: Any, kwargs: Any, out: Any, i: int = i) -> None:
            x = args[0] if args else kwargs["hidden_states"]
            cos = nn.functional.cosine_similarity(x.float(), _out(out).float(), dim=-1)
            cos_sum[i] += float((1 - cos).sum())

        handles += [
            o_proj.register_forward_pre_hook(head_hook),
            down.register_forward_pre_hook(ffn_hook),
            block.register_forward_hook(block_hook, with_kwargs=True),
        ]
    was_training = model.training
    model.eval()
    try:
        for chunk in ids.long().split(batch_size):
            model(input_ids=chunk, use_cache=False)
            tokens += chunk.numel()
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return Importance(list(heads), list(ffn), cos_sum / max(tokens, 1))
