"""Hidden-size pruning of Llama-family decoder LMs (Minitron's "embedding channels"): remove residual-stream
channels through the token embedding, every RMSNorm, every projection that reads or writes the residual
stream, and the (tied or untied) lm_head.

Importance of channel ``c``: Σ over tokens and over every RMSNorm's input (the residual stream before each block
half and before the final norm) of x_c², from one forward pass over calibration text. A channel that is zero
everywhere in the residual stream scores 0.

RMSNorm divides by the root mean square over the channels; with ``N`` channels cut to ``N'`` the mean is taken
over fewer of them, so every kept norm weight is multiplied by √(N/N') — removing channels that are zero in the
residual stream then leaves the logits unchanged (up to the norm's ε). LayerNorm (GPT-2) also subtracts the
channel mean, which no rescaling preserves: those models are refused.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from slimtune.errors import ConfigError, UnsupportedModelError
from slimtune.models.lm_layers import decoder_layers


def _norms(model: nn.Module) -> list[nn.Module]:
    """Every RMSNorm on the residual stream: the blocks' two and the final one."""
    norms: list[nn.Module] = []
    for block in decoder_layers(model):
        for name in ("input_layernorm", "post_attention_layernorm"):
            norms.append(getattr(block, name))
    norms.append(model.get_submodule("model.norm"))
    return norms


def check_hidden(model: nn.Module, ratio: float) -> int:
    """How many hidden channels ``ratio`` removes; refuses models whose norms or layout it cannot carry."""
    if not hasattr(model, "model") or not hasattr(model.model, "embed_tokens") or not hasattr(model.model, "norm"):
        raise UnsupportedModelError(f"hidden_ratio prunes Llama-family LMs (RMSNorm), not {type(model).__name__}")
    for block in decoder_layers(model):
        norm = getattr(block, "input_layernorm", None)
        if norm is None or "RMSNorm" not in type(norm).__name__ or not hasattr(block.mlp, "down_proj"):
            raise UnsupportedModelError(
                f"hidden_ratio needs RMSNorm blocks with mlp.down_proj; {type(model).__name__} has "
                f"{type(norm).__name__}: drop hidden_ratio for this model"
            )
    emb: Any = model.get_submodule("model.embed_tokens")
    hidden = int(emb.weight.shape[1])
    k = round(ratio * hidden)
    if k >= hidden:
        raise ConfigError(f"hidden_ratio {ratio} would remove every hidden channel ({k} of {hidden}); lower it")
    return k


@torch.no_grad()
def hidden_importance(model: nn.Module, ids: torch.Tensor, *, batch_size: int = 8) -> torch.Tensor:
    """Σ x_c² of the residual stream at every RMSNorm input, per hidden channel."""
    total: list[Any] = [0.0]

    def hook(_: nn.Module, args: tuple[Any, ...]) -> None:
        x = args[0].reshape(-1, args[0].shape[-1]).float()
        total[0] = total[0] + x.pow(2).sum(0)

    handles = [norm.register_forward_pre_hook(hook) for norm in _norms(model)]
    was_training = model.training
    model.eval()
    try:
        for chunk in ids.long().split(batch_size):
            model(input_ids=chunk, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return torch.as_tensor(total[0])


def _cols(old: nn.Linear, keep: torch.Tensor) -> nn.Linear:
    new = nn.Linear(len(keep), old.out_features, bias=old.bias is not None, dtype=old.weight.dtype)
    new.weight.data.copy_(old.weight.data[:, keep])
    if old.bias is not None:
        new.bias.data.copy_(old.bias.data)
    return new


def _rows(old: nn.Linear, keep: torch.Tensor) -> nn.Linear:
    new = nn.Linear(old.in_features, len(keep), bias=old.bias is not None, dtype=old.weight.dtype)
    new.weight.data.copy_(old.weight.data[keep])
    if old.bias is not None:
        new.bias.data.copy_(old.bias.data[keep])
    return new


@torch.no_grad()
def prune_hidden_(model: nn.Module, keep: torch.Tensor) -> None:
    """Keep only hidden channels ``keep`` (sorted indices) everywhere on the residual stream."""
    keep = keep.sort().values.long()
    inner: Any = model.get_submodule("model")
    old_hidden = int(inner.embed_tokens.weight.shape[1])
    scale = math.sqrt(old_hidden / len(keep))
    lm: Any = model
    head: Any = lm.get_output_embeddings()
    tied = head is not None and head.weight is inner.embed_tokens.weight
    emb = inner.embed_tokens
    new_emb = nn.Embedding(emb.num_embeddings, len(keep), padding_idx=emb.padding_idx, dtype=emb.weight.dtype)
    new_emb.weight.data.copy_(emb.weight.data[:, keep])
    inner.embed_tokens = new_emb
    for norm in _norms(model):
        norm.weight = nn.Parameter(norm.weight.data[keep] * scale)  # type: ignore[index]
    for block in decoder_layers(model):
        attn: Any = block.self_attn
        mlp: Any = block.mlp
        attn.q_proj, attn.k_proj, attn.v_proj = (_cols(attn.q_proj, keep), _cols(attn.k_proj, keep),
                                                 _cols(attn.v_proj, keep))  # fmt: skip
        attn.o_proj = _rows(attn.o_proj, keep)
        if hasattr(mlp, "gate_proj"):
            mlp.gate_proj = _cols(mlp.gate_proj, keep)
        mlp.up_proj, mlp.down_proj = _cols(mlp.up_proj, keep), _rows(mlp.down_proj, keep)
        if hasattr(mlp, "hidden_size"):
            mlp.hidden_size = len(keep)
    if tied:
        head.weight = new_emb.weight
        head.in_features = len(keep)
    elif isinstance(head, nn.Linear):
        lm.set_output_embeddings(_cols(head, keep))
    config: Any = model.config
    config.head_dim = int(getattr(config, "head_dim", None) or old_hidden // config.num_attention_heads)
    config.hidden_size = len(keep)
