"""The decoder forward of a causal LM written out for ONNX export, with the KV cache as flat tensors.

``KVDecoder(model)`` wraps a Hugging Face causal LM (Llama family: Llama, Mistral, Qwen2, Qwen3; and GPT-2) and
computes exactly its forward, but takes and returns the cache as plain tensors::

    (input_ids [b, s], attention_mask [b, past+s], position_ids [b, s],
     past.0.key, past.0.value, ... [b, kv_heads_i, past, head_dim])
        -> (logits [b, s, vocab], present.0.key, present.0.value, ... [b, kv_heads_i, past+s, head_dim])

Every layer's head counts and widths are read from its own weights, so layers that differ (per-layer heads or
KV heads or FFN width after structured pruning, fewer layers) export like uniform ones. The sub-modules
(embeddings, norms, MLPs, projections, rotary embedding) are the model's own, called as they are; only the
attention with its cache and mask is written here (one batched matmul per layer; grouped-query heads are
served without repeating K/V).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from slimtune.errors import UnsupportedModelError

LLAMA_LIKE = ("llama", "mistral", "qwen2", "qwen3")
SUPPORTED = (*LLAMA_LIKE, "gpt2")
CausalLM = Any  # a transformers PreTrainedModel causal LM (attributes typed loosely on purpose)


def model_type(model: CausalLM) -> str:
    config = getattr(model, "config", None)
    kind = str(getattr(config, "model_type", ""))
    if kind not in SUPPORTED:
        raise UnsupportedModelError(
            f"KV-cache export supports causal LMs of type {', '.join(SUPPORTED)}; got "
            f"'{kind or type(model).__name__}' (load a Llama-family or GPT-2 model)"
        )
    return kind


def _rotate_half(x: torch.Tensor, half: int) -> torch.Tensor:
    """RoPE's rotation; ``half`` is a Python int, so the slices export with constant bounds."""
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class _Reshape(torch.autograd.Function):
    """``x.reshape(shape)`` where 0 keeps that dimension of ``x`` (ONNX Reshape semantics; torch requires a -1 beside
    any 0). Exported as ONE
    Reshape with a constant shape: tracing ``x.reshape(b, s, ...)`` instead emits Shape/Gather/Unsqueeze/Concat
    nodes per reshape, whose overhead dominates a decode step of a small model."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        return x.reshape([x.shape[i] if n == 0 else n for i, n in enumerate(shape)])

    @staticmethod
    def symbolic(g: Any, x: Any, shape: tuple[int, ...]) -> Any:
        return g.op("Reshape", x, g.op("Constant", value_t=torch.tensor(shape, dtype=torch.long)))


def reshape(x: torch.Tensor, *shape: int) -> torch.Tensor:
    out: torch.Tensor = _Reshape.apply(x, tuple(int(n) for n in shape))
    return out


def allowed_keys(attention_mask: torch.Tensor, q_len: Any, window: int | None = None, groups: int = 1) -> torch.Tensor:
    """Boolean [b, 1, groups*s, past+s]: query i (at cache position past+i) may see key j when j <= past+i, the
    key is not padding, and (sliding window) past+i - j < window; tiled ``groups`` times along the queries, the
    layout ``attend`` gives grouped query heads."""
    total = attention_mask.shape[1]
    q_pos = torch.arange(q_len, device=attention_mask.device) + (total - q_len)
    k_pos = torch.arange(total, device=attention_mask.device)
    ok = k_pos[None, :] <= q_pos[:, None]
    if window is not None:
        ok = ok & (k_pos[None, :] > q_pos[:, None] - window)
    allowed = ok[None, None] & (attention_mask[:, None, None, :] > 0)
    return allowed.repeat(1, 1, groups, 1) if groups > 1 else allowed


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor, scaling: float) -> torch.Tensor:
    """Softmax attention of q [b, h, s, d] over k, v [b, kv, t, d] (h a multiple of kv) → [b, s, h*d].

    Query heads are grouped under their KV head (head i uses KV head i // (h/kv), as repeat_kv does): q is viewed
    as [b, kv, groups*s, d], so one matmul per layer serves all groups and K/V are never copied; ``allowed`` is
    ``allowed_keys(..., groups=h // kv)``. Masked scores get the dtype's minimum, so a fully masked row (a
    left-padding position) stays finite."""
    h, d, kv = int(q.shape[1]), int(q.shape[3]), int(k.shape[1])
    scores = torch.matmul(reshape(q, 0, kv, -1, d), k.transpose(-1, -2)) * scaling
    scores = torch.where(allowed, scores, torch.tensor(torch.finfo(scores.dtype).min, dtype=scores.dtype))
    out = reshape(torch.matmul(torch.softmax(scores, dim=-1), v), 0, h, -1, d)
    return reshape(out.transpose(1, 2), 0, -1, h * d)


def _heads(proj: Any, head_dim: int, what: str) -> int:
    width = int(proj.weight.shape[0])
    if width % head_dim:
        raise UnsupportedModelError(f"{what} has {width} outputs, not a multiple of head_dim {head_dim}")
    return width // head_dim


def _fused(module: Any, *names: str) -> nn.Linear:
    """One Linear computing the named Linears of ``module`` side by side (outputs concatenated in order)."""
    parts = [getattr(module, n) for n in names]
    fused = nn.Linear(parts[0].in_features, sum(p.out_features for p in parts), bias=parts[0].bias is not None)
    with torch.no_grad():
        fused.weight.copy_(torch.cat([p.weight for p in parts]))
        if fused.bias is not None:
            fused.bias.copy_(torch.cat([p.bias for p in parts]))
    return fused.to(parts[0].weight.dtype)


class KVDecoder(nn.Module):
    """The flat-cache forward of a Llama-family or GPT-2 causal LM (see the module docstring)."""

    def __init__(self, model: CausalLM, *, fuse: bool = False) -> None:
        """``fuse``: for export, Llama-family q/k/v projections become one matmul and the MLP's gate/up another
        (concatenated copies of the weights; the model is not changed)."""
        super().__init__()
        self.kind = model_type(model)
        self.model: CausalLM = model
        self.config = model.config
        self.layer_shapes: list[tuple[int, int, int]] = []  # (query heads, kv heads, head_dim) per layer
        if self.kind == "gpt2":
            for block in model.transformer.h:
                d = int(block.attn.head_dim)
                width = int(block.attn.c_attn.weight.shape[1])  # Conv1D: weight is [in, out]
                if width % (3 * d):
                    raise UnsupportedModelError(f"GPT-2 c_attn width {width} is not 3 × heads × head_dim {d}")
                self.layer_shapes.append((width // (3 * d), width // (3 * d), d))
        else:
            for i, layer in enumerate(model.model.layers):
                attn = layer.self_attn
                d = int(attn.head_dim)
                heads = _heads(attn.q_proj, d, f"layer {i} q_proj")
                kv = _heads(attn.k_proj, d, f"layer {i} k_proj")
                if heads % kv:
                    raise UnsupportedModelError(f"layer {i} has {heads} query heads, not a multiple of {kv} KV heads")
                self.layer_shapes.append((heads, kv, d))
        self.qkv = nn.ModuleList(_fused(l.self_attn, "q_proj", "k_proj", "v_proj") for l in self._fusable(fuse))
        self.gate_up = nn.ModuleList(_fused(l.mlp, "gate_proj", "up_proj") for l in self._fusable(fuse, mlp=True))

    def _fusable(self, fuse: bool, *, mlp: bool = False) -> list[Any]:
        """The layers to fuse: all Llama-family layers when ``fuse`` (and, for the MLP, when every layer has the
        gate/up/down + act_fn structure), else none."""
        if not fuse or self.kind == "gpt2":
            return []
        layers = list(self.model.model.layers)
        if mlp and not all(
            all(hasattr(l.mlp, a) for a in ("gate_proj", "up_proj", "down_proj", "act_fn")) for l in layers
        ):
            return []
        return layers

    @property
    def num_layers(self) -> int:
        return len(self.layer_shapes)

    def _window(self, i: int) -> int | None:
        window = getattr(self.config, "sliding_window", None)
        types = getattr(self.config, "layer_types", None)
        if not window or (types is not None and types[i] != "sliding_attention"):
            return None
        if self.kind == "qwen2" and not getattr(self.config, "use_sliding_window", False):
            return None
        return int(window)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor, *past: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        if len(past) != 2 * self.num_layers:
            raise ValueError(f"expected {2 * self.num_layers} past tensors, got {len(past)}")
        q_len = input_ids.shape[1]
        masks: dict[tuple[int | None, int], torch.Tensor] = {}

        def mask(window: int | None, groups: int) -> torch.Tensor:  # one per distinct (window, groups)
            if (window, groups) not in masks:
                masks[window, groups] = allowed_keys(attention_mask, q_len, window, groups)
            return masks[window, groups]

        if self.kind == "gpt2":
            hidden, present = self._gpt2(input_ids, position_ids, past, mask)
            head = self.model.lm_head
        else:
            hidden, present = self._llama(input_ids, position_ids, past, mask)
            head = self.model.lm_head
        return (self._logits(head, hidden), *present)

    @staticmethod
    def _logits(head: Any, hidden: torch.Tensor) -> torch.Tensor:
        """lm_head as one 2-D Gemm on the [vocab, hidden] weight itself (transB), so a tied embedding is stored
        once in the ONNX file rather than once more transposed."""
        b, s, width = hidden.shape
        weight = head.weight
        bias = head.bias if getattr(head, "bias", None) is not None else torch.zeros(weight.shape[0])
        return F.linear(hidden.reshape(-1, width), weight, bias).reshape(b, s, int(weight.shape[0]))

    def _llama(self, input_ids: torch.Tensor, position_ids: torch.Tensor, past: tuple[torch.Tensor, ...], mask: Any):
        body: Any = self.model.model
        hidden = body.embed_tokens(input_ids)
        cos, sin = body.rotary_emb(hidden, position_ids)
        cos, sin = cos[:, None], sin[:, None]  # [b, 1, s, d]: broadcast over heads
        present: list[torch.Tensor] = []
        for i, layer in enumerate(body.layers):
            attn = layer.self_attn
            heads, kv, d = self.layer_shapes[i]
            x = layer.input_layernorm(hidden)
            if len(self.qkv):
                q, k, v = self.qkv[i](x).split([heads * d, kv * d, kv * d], dim=-1)
            else:
                q, k, v = attn.q_proj(x), attn.k_proj(x), attn.v_proj(x)
            q, k = reshape(q, 0, -1, heads, d), reshape(k, 0, -1, kv, d)
            v = reshape(v, 0, -1, kv, d).transpose(1, 2)
            if getattr(attn, "q_norm", None) is not None:  # Qwen3: RMSNorm per head before RoPE
                q, k = attn.q_norm(q), attn.k_norm(k)
            q, k = q.transpose(1, 2), k.transpose(1, 2)
            q = q * cos + _rotate_half(q, d // 2) * sin
            k = k * cos + _rotate_half(k, d // 2) * sin
            k = torch.cat((past[2 * i], k), dim=2)
            v = torch.cat((past[2 * i + 1], v), dim=2)
            present += [k, v]
            out = attend(q, k, v, mask(self._window(i), heads // kv), float(attn.scaling))
            hidden = hidden + attn.o_proj(out)
            x = layer.post_attention_layernorm(hidden)
            if len(self.gate_up):
                gate, up = self.gate_up[i](x).chunk(2, dim=-1)
                hidden = hidden + layer.mlp.down_proj(layer.mlp.act_fn(gate) * up)
            else:
                hidden = hidden + layer.mlp(x)
        return body.norm(hidden), present

    def _gpt2(self, input_ids: torch.Tensor, position_ids: torch.Tensor, past: tuple[torch.Tensor, ...], mask: Any):
        body: Any = self.model.transformer
        hidden = body.wte(input_ids) + body.wpe(position_ids)
        present: list[torch.Tensor] = []
        for i, block in enumerate(body.h):
            heads, _, d = self.layer_shapes[i]
            x = block.ln_1(hidden)
            q, k, v = (reshape(t, 0, -1, heads, d).transpose(1, 2) for t in block.attn.c_attn(x).split(heads * d, 2))
            k = torch.cat((past[2 * i], k), dim=2)
            v = torch.cat((past[2 * i + 1], v), dim=2)
            present += [k, v]
            out = attend(q, k, v, mask(None, 1), float(block.attn.scaling))
            hidden = hidden + block.attn.c_proj(out)
            hidden = hidden + block.mlp(block.ln_2(hidden))
        return body.ln_f(hidden), present
