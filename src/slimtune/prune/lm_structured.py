"""GQA-aware structured pruning of decoder LMs (Llama family, GPT-2): the ``lm-structured`` prune method.

Importance comes from one pass over calibration text (``lm_importance``). Width: attention heads are removed in
units: with grouped-query attention a unit is one KV head with its whole query group (removing a KV head removes
the query heads that read it); without it (GPT-2, MHA Llama) a unit is ``head_group`` consecutive heads.
``query_ratio`` then removes the same number of query heads inside every KV group (the group stays shared by equal
numbers of query heads). FFN channels go with their gate, up and down weights together. Depth (ShortGPT): the
``drop_layers`` blocks whose output is most like their input are removed. ``scope: global`` ranks units and
channels across layers by their importance relative to their layer's mean (each layer keeps its best unit and
channel), so layers may end with different widths;
``layer`` removes the same fraction from every layer. ``hidden_ratio`` (Llama family) then removes that
fraction of the hidden size through the embedding, every RMSNorm and residual (``lm_hidden``). The per-layer
shapes save, load and export (``models/lm_layers.py``)::

    - prune: {method: lm-structured, heads_ratio: 0.25, ffn_ratio: 0.3, drop_layers: 2, samples: 32}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from slimtune.config import Config, check
from slimtune.errors import ConfigError, UnsupportedModelError
from slimtune.models.lm_layers import decoder_layers, layer_shapes
from slimtune.prune.api import PruneContext, PruneSummary, register_pruner
from slimtune.prune.lm_hidden import check_hidden, hidden_importance, prune_hidden_
from slimtune.prune.lm_importance import Importance, importance
from slimtune.prune.lm_sparse import LMSparsityConfig, lm_calibration


@dataclass(frozen=True, kw_only=True)
class LMStructuredConfig(Config):
    """Fractions of attention-head units (``heads_ratio``), of query heads inside each KV group
    (``query_ratio``) and of FFN channels (``ffn_ratio``) to remove, and how many blocks to drop."""

    heads_ratio: float = 0.0
    query_ratio: float = 0.0
    ffn_ratio: float = 0.0
    drop_layers: int = 0
    hidden_ratio: float = 0.0
    head_group: int = 1
    scope: Literal["global", "layer"] = "global"
    samples: int = 32
    batch_size: int = 8

    def __post_init__(self) -> None:
        for name in ("heads_ratio", "query_ratio", "ffn_ratio", "hidden_ratio"):
            value = getattr(self, name)
            check(0 <= value <= 1, f"{name} must be in [0, 1], got {value}")
        check(self.drop_layers >= 0, f"drop_layers must be >= 0, got {self.drop_layers}")
        check(self.head_group >= 1, f"head_group must be >= 1, got {self.head_group}")
        check(self.samples >= 1 and self.batch_size >= 1, "samples and batch_size must be >= 1")


@dataclass
class _Layer:
    heads: int
    kv: int
    d: int
    q_per_unit: int
    kv_per_unit: int

    @property
    def units(self) -> int:
        return self.kv // self.kv_per_unit


def _layout(model: nn.Module, cfg: LMStructuredConfig) -> list[_Layer]:
    out = []
    for i, s in enumerate(layer_shapes(model)):
        heads, kv, d = s["heads"], s["kv_heads"], s["head_dim"]
        if kv < heads:  # GQA: a unit is one KV head and its query group
            if cfg.head_group not in (1, heads // kv):
                raise ConfigError(
                    f"layer {i} groups its {heads} query heads by {kv} KV heads ({heads // kv} per group); "
                    f"head_group must be {heads // kv} (or leave it out)"
                )
            out.append(_Layer(heads, kv, d, heads // kv, 1))
        else:
            if heads % cfg.head_group:
                fits = ", ".join(str(g) for g in range(1, heads + 1) if heads % g == 0)
                raise ConfigError(
                    f"layer {i} has {heads} heads, not divisible by head_group {cfg.head_group}; use one of {fits}"
                )
            if cfg.query_ratio:
                raise ConfigError(f"query_ratio needs grouped-query attention; layer {i} has one query per KV head")
            out.append(_Layer(heads, kv, d, cfg.head_group, cfg.head_group))
    return out


def _drop_lowest(scores: list[torch.Tensor], ratio: float, scope: str, what: str) -> list[list[int]]:
    """Per layer, the indices to remove: ``ratio`` of each layer, or of all (each layer keeps its best)."""
    if scope == "layer":
        per_layer = []
        for i, s in enumerate(scores):
            k = round(ratio * len(s))
            if k >= len(s):
                raise ConfigError(f"{what}_ratio {ratio} would remove every {what} unit of layer {i}; lower it")
            per_layer.append(sorted(torch.argsort(s, stable=True)[:k].tolist()))
        return per_layer
    total = sum(len(s) for s in scores)
    k = round(ratio * total)
    # activation importance grows with depth (the residual stream grows), so raw scores are not comparable across
    # layers: ranked raw, early layers lost nearly everything (one SmolLM2 layer kept 144 of 1,536 FFN channels).
    # Each layer's scores are taken relative to its own mean; the ranking across layers is of those.
    scores = [s / s.mean() if float(s.mean()) > 0 else s for s in (t.float() for t in scores)]
    cands = [(float(v), i, j) for i, s in enumerate(scores) for j, v in enumerate(s.tolist()) if j != int(s.argmax())]
    if k > len(cands):
        raise ConfigError(
            f"{what}_ratio {ratio} would remove every {what} unit of a layer ({k} of {total}, at most {len(cands)} "
            "can go while each layer keeps one); lower it"
        )
    cands.sort()
    drops: list[list[int]] = [[] for _ in scores]
    for _, i, j in cands[:k]:
        drops[i].append(j)
    return [sorted(d) for d in drops]


def _slice_linear(old: nn.Linear, *, rows: torch.Tensor | None = None, cols: torch.Tensor | None = None) -> nn.Linear:
    w = old.weight.data
    w = w if rows is None else w[rows]
    w = w if cols is None else w[:, cols]
    new = nn.Linear(w.shape[1], w.shape[0], bias=old.bias is not None, dtype=w.dtype)
    new.weight.data.copy_(w)
    if old.bias is not None:
        new.bias.data.copy_(old.bias.data if rows is None else old.bias.data[rows])
    return new


def _slice_conv1d(old: Any, *, outs: torch.Tensor | None = None, ins: torch.Tensor | None = None) -> Any:
    from transformers.pytorch_utils import Conv1D

    w = old.weight.data  # (in, out)
    w = w if ins is None else w[ins]
    w = w if outs is None else w[:, outs]
    new = Conv1D(w.shape[1], w.shape[0]).to(w.dtype)
    new.weight.data.copy_(w)
    new.bias.data.copy_(old.bias.data if outs is None else old.bias.data[outs])
    return new


def _cols(heads: list[int], d: int) -> torch.Tensor:
    return torch.tensor([h * d + k for h in heads for k in range(d)], dtype=torch.long)


def _prune_attention(block: Any, lay: _Layer, keep_q: list[int], keep_kv: list[int]) -> None:
    q, kv = _cols(keep_q, lay.d), _cols(keep_kv, lay.d)
    if hasattr(block, "self_attn"):
        attn = block.self_attn
        attn.q_proj = _slice_linear(attn.q_proj, rows=q)
        attn.k_proj = _slice_linear(attn.k_proj, rows=kv)
        attn.v_proj = _slice_linear(attn.v_proj, rows=kv)
        name = "o_proj" if hasattr(attn, "o_proj") else "dense"
        setattr(attn, name, _slice_linear(getattr(attn, name), cols=q))
        attn.num_key_value_groups = len(keep_q) // len(keep_kv)
        for attr, value in (("num_heads", len(keep_q)), ("num_key_value_heads", len(keep_kv))):
            if hasattr(attn, attr):
                setattr(attn, attr, value)
        return
    attn, width = block.attn, lay.heads * lay.d
    attn.c_attn = _slice_conv1d(attn.c_attn, outs=torch.cat([q, q + width, q + 2 * width]))
    attn.c_proj = _slice_conv1d(attn.c_proj, ins=q)
    attn.num_heads, attn.split_size = len(keep_q), len(keep_q) * lay.d
    if hasattr(attn, "embed_dim"):
        attn.embed_dim = attn.split_size


def _prune_ffn(block: Any, keep: torch.Tensor) -> None:
    mlp = block.mlp
    if hasattr(mlp, "up_proj"):
        mlp.up_proj = _slice_linear(mlp.up_proj, rows=keep)
        if hasattr(mlp, "gate_proj"):
            mlp.gate_proj = _slice_linear(mlp.gate_proj, rows=keep)
        mlp.down_proj = _slice_linear(mlp.down_proj, cols=keep)
    elif hasattr(mlp, "fc1"):
        mlp.fc1, mlp.fc2 = _slice_linear(mlp.fc1, rows=keep), _slice_linear(mlp.fc2, cols=keep)
    else:
        mlp.c_fc, mlp.c_proj = _slice_conv1d(mlp.c_fc, outs=keep), _slice_conv1d(mlp.c_proj, ins=keep)
    if hasattr(mlp, "intermediate_size"):
        mlp.intermediate_size = len(keep)


def _query_drops(scores: torch.Tensor, lay: _Layer, ratio: float, layer: int) -> list[int]:
    """The same number of the lowest query heads inside every KV group."""
    per = lay.q_per_unit
    k = round(ratio * per)
    if k >= per:
        raise ConfigError(f"query_ratio {ratio} would remove every query head of a KV group in layer {layer}; lower it")
    groups = scores.view(-1, per)
    return sorted(int(g * per + j) for g in range(len(groups)) for j in torch.argsort(groups[g], stable=True)[:k])


def _drop_blocks(model: nn.Module, drop: list[int]) -> None:
    layers = decoder_layers(model)
    for i in sorted(drop, reverse=True):
        del layers[i]
    for i, block in enumerate(layers):
        for mod in block.modules():
            if hasattr(mod, "layer_idx"):
                mod.layer_idx = i  # type: ignore[assignment]  # the KV cache is indexed by it
    config: Any = model.config
    if isinstance(getattr(config, "layer_types", None), list):
        config.layer_types = [t for i, t in enumerate(config.layer_types) if i not in drop]
    config.num_hidden_layers = len(layers)


def check_structured(model: nn.Module, config: LMStructuredConfig) -> list[_Layer]:
    """Refuse, before any data is read, a head group that does not fit and a ratio that would empty a layer."""
    layout = _layout(model, config)
    layers = decoder_layers(model)
    if config.drop_layers >= len(layers):
        raise ConfigError(
            f"drop_layers {config.drop_layers} would remove every layer (the model has {len(layers)}); keep one"
        )
    if config.drop_layers and getattr(model.config, "scale_attn_by_inverse_layer_idx", False):
        raise UnsupportedModelError("this GPT-2 scales attention by its layer index, so blocks cannot be dropped")
    if config.heads_ratio:  # the counts depend on the shapes only: dry-run them on zero scores
        _drop_lowest([torch.zeros(lay.units) for lay in layout], config.heads_ratio, config.scope, "heads")
    if config.ffn_ratio:
        _drop_lowest([torch.zeros(s["ffn"]) for s in layer_shapes(model)], config.ffn_ratio, config.scope, "ffn")
    if config.query_ratio:
        for i, lay in enumerate(layout):
            _query_drops(torch.zeros(lay.heads), lay, config.query_ratio, i)
    if config.hidden_ratio:
        check_hidden(model, config.hidden_ratio)
    return layout


def prune_lm_structured_(model: nn.Module, config: LMStructuredConfig, ids: torch.Tensor) -> dict[str, Any]:
    """Prune ``model`` in place from the importance on ``ids`` (token windows); returns what was removed."""
    layout = check_structured(model, config)
    layers = decoder_layers(model)
    imp: Importance = importance(model, ids, batch_size=config.batch_size)
    unit_scores = [h.view(lay.units, -1).sum(1) for h, lay in zip(imp.heads, layout)]
    unit_drop = _drop_lowest(unit_scores, config.heads_ratio, config.scope, "heads") if config.heads_ratio else None
    ffn_drop = _drop_lowest(imp.ffn, config.ffn_ratio, config.scope, "ffn") if config.ffn_ratio else None
    removed: dict[str, Any] = {"heads": [], "ffn": [], "layers": []}
    for i, (block, lay) in enumerate(zip(layers, layout)):
        drop_u = set(unit_drop[i]) if unit_drop else set()
        keep_q = [h for h in range(lay.heads) if h // lay.q_per_unit not in drop_u]
        keep_kv = [h for h in range(lay.kv) if h // lay.kv_per_unit not in drop_u]
        if config.query_ratio:
            kept_scores = imp.heads[i][keep_q]
            sub = _query_drops(kept_scores, lay, config.query_ratio, i)
            keep_q = [h for j, h in enumerate(keep_q) if j not in set(sub)]
        if len(keep_q) < lay.heads:
            _prune_attention(block, lay, keep_q, keep_kv)
        removed["heads"].append(lay.heads - len(keep_q))
        if ffn_drop and ffn_drop[i]:
            gone = set(ffn_drop[i])
            _prune_ffn(block, torch.tensor([c for c in range(len(imp.ffn[i])) if c not in gone], dtype=torch.long))
        removed["ffn"].append(len(ffn_drop[i]) if ffn_drop else 0)
    if config.drop_layers:
        drop = sorted(torch.argsort(imp.blocks, stable=True)[: config.drop_layers].tolist())
        _drop_blocks(model, drop)
        removed["layers"] = drop
    if config.hidden_ratio:  # last, on what remains: its own importance pass
        k = check_hidden(model, config.hidden_ratio)
        scores = hidden_importance(model, ids, batch_size=config.batch_size)
        prune_hidden_(model, torch.argsort(scores, stable=True, descending=True)[: len(scores) - k])
        removed["hidden"] = k
    return removed


@register_pruner("lm-structured", LMStructuredConfig, help="causal LMs: remove GQA head groups, FFN channels, blocks")
def lm_structured_prune(model: nn.Module, config: LMStructuredConfig, ctx: PruneContext) -> None:
    try:
        layer_shapes(model)
    except (UnsupportedModelError, AttributeError) as exc:
        raise UnsupportedModelError(f"lm-structured prunes Llama-family and GPT-2 causal LMs: {exc}") from None
    check_structured(model, config)
    ids = lm_calibration(ctx, "lm-structured", LMSparsityConfig(samples=config.samples))
    before = sum(p.numel() for p in model.parameters())
    removed = prune_lm_structured_(model, config, ids)
    after = sum(p.numel() for p in model.parameters())
    record = {"method": "lm-structured", **config.to_dict(), "removed": removed, "params_before": before,
              "params_after": after, "layers": layer_shapes(model)}  # fmt: skip
    ctx.summary = PruneSummary(record, lines=[f"lm-structured: {before:,} -> {after:,} parameters"])
