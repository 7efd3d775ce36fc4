"""Attention-map transfer (TinyBERT / MiniLM style): MSE or KL between the attention probabilities of
mapped student and teacher layers.

Readable attention layers: transformer-small's ``SelfAttention`` and the self-attention of Hugging Face
encoders (modules with ``query``/``key``, DistilBERT's ``q_lin``/``k_lin`` or ViT's ``q_proj``/``k_proj``, and
``attention_head_size``/``head_dim``: BERT, RoBERTa, ELECTRA, MiniLM, DistilBERT, ViT, …). The probabilities
are recomputed in a forward hook from the layer's own inputs and q/k projections (before attention dropout), so
any attention kernel (eager, SDPA) works and no model code changes.
When head counts differ the maps are averaged over heads first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from slimtune.config import Config, check
from slimtune.distill.hints import HintTerm, register_hint
from slimtune.errors import ConfigError, UnsupportedModelError
from slimtune.models.transformer import SelfAttention


@dataclass(frozen=True, kw_only=True)
class AttentionKDConfig(Config):
    """``layers`` maps student layer index → teacher layer index (default: spread evenly, last to last)."""

    layers: dict[int, int] | None = None
    loss: Literal["mse", "kl"] = "mse"
    weight: float = 1.0

    def __post_init__(self) -> None:
        if self.layers is not None:
            try:
                layers = {int(s): int(t) for s, t in self.layers.items()}
            except (TypeError, ValueError):
                raise ConfigError(f"attention: layers must map integers to integers, got {self.layers}") from None
            check(bool(layers), "attention: layers is empty; leave it out for the default mapping")
            object.__setattr__(self, "layers", layers)
        check(self.weight >= 0, f"attention: weight must be >= 0, got {self.weight}")


_QK = (("query", "key"), ("q_lin", "k_lin"), ("q_proj", "k_proj"))  # BERT/RoBERTa, DistilBERT, ViT
_HEAD_SIZE = ("attention_head_size", "head_dim")


def _qk(m: nn.Module) -> tuple[nn.Module, nn.Module] | None:
    for q, k in _QK:
        if isinstance(getattr(m, q, None), nn.Linear) and isinstance(getattr(m, k, None), nn.Linear):
            return getattr(m, q), getattr(m, k)
    return None


def _head_size(m: nn.Module) -> int | None:
    return next((int(v) for a in _HEAD_SIZE if isinstance(v := getattr(m, a, None), int)), None)


def _is_bert_attention(m: nn.Module) -> bool:
    """Hugging Face encoder self-attention: q/k Linears and a head size (not cross- or causal attention)."""
    name = type(m).__name__
    return (
        name.endswith("Attention")
        and "Cross" not in name
        and getattr(m, "is_causal", False) is not True
        and _qk(m) is not None
        and _head_size(m) is not None
    )


def attention_layers(model: nn.Module) -> list[nn.Module]:
    """The self-attention modules of ``model`` in layer order."""
    found = [m for m in model.modules() if isinstance(m, SelfAttention) or _is_bert_attention(m)]
    if not found:
        raise UnsupportedModelError(
            f"{type(model).__name__} has no attention layers slimtune can read (transformer-small or a Hugging Face "
            "BERT-family encoder); use a 'feature' hint on named layers instead"
        )
    return found


def _scores_mask(m: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
    x = args[0] if args else kwargs["hidden_states" if not isinstance(m, SelfAttention) else "x"]
    b, s, _ = x.shape
    if isinstance(m, SelfAttention):
        pad = args[1] if len(args) > 1 else kwargs["pad_mask"]
        q, k = (p(x).view(b, s, m.heads, m.head_dim).transpose(1, 2) for p in (m.q, m.k))
        scores = q @ k.transpose(-1, -2) / (m.head_dim**0.5)
        return scores.masked_fill(pad[:, None, None, :], torch.finfo(scores.dtype).min)
    size, qk = _head_size(m), _qk(m)
    assert size is not None and qk is not None
    q, k = (p(x).view(b, s, -1, size).transpose(1, 2) for p in qk)
    scores = q @ k.transpose(-1, -2) * float(getattr(m, "scaling", size**-0.5))
    mask = args[1] if len(args) > 1 else kwargs.get("attention_mask")
    if mask is None:
        return scores
    if mask.dtype == torch.bool:  # SDPA-style: True = attend
        return scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    return scores + mask  # additive


def attention_probs(m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
    """(B, heads, S, S) attention probabilities of layer ``m`` called with ``args``/``kwargs``."""
    return torch.softmax(_scores_mask(m, args, kwargs), dim=-1)


def default_layer_map(n_student: int, n_teacher: int) -> dict[int, int]:
    return {i: round((i + 1) * n_teacher / n_student) - 1 for i in range(n_student)}


class AttentionTerm(HintTerm):
    def __init__(self, config: AttentionKDConfig, student: nn.Module, teacher: nn.Module) -> None:
        super().__init__()
        self.config, self.weight = config, config.weight
        s_layers, t_layers = attention_layers(student), attention_layers(teacher)
        mapping = config.layers or default_layer_map(len(s_layers), len(t_layers))
        for s, t in mapping.items():
            if not (0 <= s < len(s_layers) and 0 <= t < len(t_layers)):
                raise ConfigError(
                    f"attention: layer pair {s} → {t} is out of range; the student has {len(s_layers)} "
                    f"attention layers and the teacher {len(t_layers)} (indices from 0)"
                )
        self.pairs = list(mapping.items())
        self.s_maps: dict[int, torch.Tensor] = {}
        self.t_maps: dict[int, torch.Tensor] = {}
        for s, t in self.pairs:
            self.hook(s_layers[s], self._recorder(self.s_maps, s))
            self.hook(t_layers[t], self._recorder(self.t_maps, t))

    def _recorder(self, store: dict[int, torch.Tensor], i: int) -> Any:
        def record(module: nn.Module, args: Any, kwargs: Any, output: Any) -> None:
            if self.capturing:
                store[i] = attention_probs(module, args, kwargs)

        return record

    def loss(self) -> torch.Tensor:
        terms = []
        for s_i, t_i in self.pairs:
            s, t = self.s_maps[s_i], self.t_maps[t_i]
            if s.shape[1] != t.shape[1]:
                s, t = s.mean(1, keepdim=True), t.mean(1, keepdim=True)
            if self.config.loss == "kl":
                terms.append((torch.xlogy(t, t) - t * s.clamp_min(1e-12).log()).sum(-1).mean())
            else:
                terms.append(F.mse_loss(s, t))
        return torch.stack(terms).mean()


@register_hint("attention", AttentionKDConfig, help="attention-map transfer (MSE/KL) for transformer-small and BERT")
def _attention(config: AttentionKDConfig, *, student: nn.Module, teacher: nn.Module, example: Any) -> HintTerm:
    return AttentionTerm(config, student, teacher)
