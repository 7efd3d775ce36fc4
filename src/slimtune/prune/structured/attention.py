"""Hugging Face attention modules that own their output projection: DistilBERT (``q_lin``/``k_lin``/``v_lin``/
``out_lin``, ``n_heads``), ViT and other encoders spelled ``q_proj``/``k_proj``/``v_proj``/``o_proj`` (or
``out_proj``) with ``num_attention_heads``/``num_heads`` and ``head_dim``/``attention_head_size``.

Such a module is one traced step: outside it reads and writes the model dim (q/k/v columns, output rows); its
heads are inner units (q/k/v rows and the output projection's columns, ``head size`` entries each), cut with
the heads attribute. BERT-family self-attention (``query``/``key``/``value``, output projection in a separate
module) is ``handlers._bert_attention``. A module is recognised only when its q/k/v/output Linears have the
shapes its head attributes say and it owns no other parameters; causal (decoder) attention is left to LM
pruning. Every module must split heads with ``view(..., -1, head size)`` or its heads attribute, as these do.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from slimtune.prune.structured.handlers import Cut, Inner, LayerHandler, register_matcher

SPELLINGS: tuple[tuple[str, str, str, str], ...] = (
    ("q_lin", "k_lin", "v_lin", "out_lin"),  # DistilBERT
    ("q_proj", "k_proj", "v_proj", "o_proj"),  # ViT (transformers 5), DeiT, …
    ("q_proj", "k_proj", "v_proj", "out_proj"),  # CLIP/Whisper-style encoders
)
HEADS_ATTRS = ("n_heads", "num_attention_heads", "num_heads")
SIZE_ATTRS = ("attention_head_size", "head_dim")


@dataclass(frozen=True)
class OwnedAttentionHandler(LayerHandler):
    """Heads of an attention module owning q/k/v (``proj[:3]``) and the output projection (``proj[3]``)."""

    proj: tuple[str, str, str, str] = ("q_proj", "k_proj", "v_proj", "o_proj")
    heads_attr: str = "num_heads"
    size_attr: str = "head_dim"

    def inner(self, module: nn.Module) -> list[Inner]:
        heads, size = int(getattr(module, self.heads_attr)), int(getattr(module, self.size_attr))
        q, k, v, o = self.proj
        rows = {f"{p}.{t}": 0 for p in (q, k, v) for t in ("weight", "bias")}
        produce = Cut(rows, tuple(f"{p}.out_features" for p in (q, k, v)), (self.heads_attr,))
        consume = Cut({f"{o}.weight": 1}, (f"{o}.in_features",))
        return [Inner("heads", heads * size, size, produce, consume)]


def owned_attention(proj: tuple[str, str, str, str], heads_attr: str, size_attr: str) -> OwnedAttentionHandler:
    q, k, v, o = proj
    return OwnedAttentionHandler(
        out=Cut({f"{o}.weight": 0, f"{o}.bias": 0}, (f"{o}.out_features",)),
        inp=Cut({f"{p}.weight": 1 for p in (q, k, v)}, tuple(f"{p}.in_features" for p in (q, k, v))),
        proj=proj,
        heads_attr=heads_attr,
        size_attr=size_attr,
    )


def _int_attr(module: nn.Module, names: tuple[str, ...]) -> str | None:
    return next((a for a in names if isinstance(getattr(module, a, None), int)), None)


def match_owned_attention(module: nn.Module) -> LayerHandler | None:
    """The handler for ``module`` when it is an encoder attention owning its output projection, else None."""
    if not type(module).__name__.endswith("Attention") or getattr(module, "is_causal", False) is True:
        return None
    heads_attr, size_attr = _int_attr(module, HEADS_ATTRS), _int_attr(module, SIZE_ATTRS)
    if heads_attr is None or size_attr is None or any(p is not None for p in module._parameters.values()):
        return None
    width = int(getattr(module, heads_attr)) * int(getattr(module, size_attr))
    for proj in SPELLINGS:
        found = [getattr(module, n, None) for n in proj]
        layers = [m for m in found if isinstance(m, nn.Linear)]
        if len(layers) != 4:
            continue
        q, k, v, o = layers
        owned = {id(p) for m in layers for p in m.parameters()}
        if any(id(p) not in owned for p in module.parameters()):
            return None  # relative position tables and such: not understood
        if q.out_features == k.out_features == v.out_features == o.in_features == width:
            return owned_attention(proj, heads_attr, size_attr)
    return None


register_matcher(match_owned_attention)
