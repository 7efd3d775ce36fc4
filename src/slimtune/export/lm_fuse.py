"""The fast KV-cache graph of a Llama-family decoder, written directly with ONNX Runtime's fused CPU ops.

Inputs ``input_ids``, ``attention_mask`` [b, past+s], ``past_key_values.{i}.key|value``; outputs ``logits``,
``present.{i}.key|value`` (the traced graph's names, without ``position_ids``). Per layer:
``SkipSimplifiedLayerNormalization`` (residual add + RMSNorm in one op), one MatMul for q/k/v (fed packed to the
attention) and one for gate/up (concatenated initializers), ``GroupQueryAttention`` (com.microsoft: RoPE from
cos/sin caches, the cache append and grouped-query attention in one op; ``num_heads`` and ``kv_num_heads`` are
per node, so layers that differ after pruning are served), the SiLU MLP, and the lm_head as a MatMul on a
pre-transposed initializer (a tied embedding is stored once, transposed, and gathered along its second axis).

Positions and padding follow GroupQueryAttention (the layout of onnxruntime-genai's builder): a row's length is
``sum(attention_mask) - 1``, its keys sit at cache slots ``0 .. length``, RoPE is applied at those slots. Its
prompt phase ignores a ``position_ids`` input, so left padding cannot be expressed; batches are right-padded
instead (``runtime.decoder`` does that for any graph without ``position_ids``), which keeps every row's positions
exact: a padded row computes what it would alone.

Weight-only quantized Linears on one grid are fused like fp32 ones (``lm_nbits``' MatMulNBits rewrite finds the
concatenated weight and packs the concatenated codes into one node); Linears on different grids (a mixed-precision
plan) keep one MatMul each. ``unsupported_reason`` says when this graph cannot serve a model
(GPT-2, sliding windows, non-SiLU MLPs, position-dependent RoPE scaling); ``lm_onnx`` then traces the model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from slimtune.export.lm_graph import LLAMA_LIKE, CausalLM, KVDecoder
from slimtune.runtime.decoder import PAST, PRESENT

MS = "com.microsoft"
_MS_OPS = ("GroupQueryAttention", "SkipSimplifiedLayerNormalization")
_STATIC_ROPE = ("default", "linear", "llama3", "yarn", None)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(torch.float32).cpu().numpy()


def unsupported_reason(model: CausalLM) -> str | None:
    """Why the fused graph cannot serve ``model`` (None when it can)."""
    cfg = model.config
    kind = str(getattr(cfg, "model_type", ""))
    if kind not in LLAMA_LIKE:
        return f"model type '{kind}' is not Llama-family"
    if getattr(cfg, "hidden_act", "silu") not in ("silu", "swish"):
        return f"hidden_act '{cfg.hidden_act}' is not SiLU"
    decoder = KVDecoder(model)
    if any(decoder._window(i) is not None for i in range(decoder.num_layers)):
        return "sliding-window attention"
    rope = getattr(cfg, "rope_scaling", None) or getattr(cfg, "rope_parameters", None) or {}
    rope_type = rope.get("rope_type", rope.get("type")) if isinstance(rope, dict) else None
    if rope_type not in _STATIC_ROPE:
        return f"RoPE type '{rope_type}' depends on the sequence length"
    for i, layer in enumerate(model.model.layers):
        if not all(hasattr(layer.mlp, a) for a in ("gate_proj", "up_proj", "down_proj")):
            return f"layer {i}'s MLP is not gate/up/down"
        heads, kv, d = decoder.layer_shapes[i]
        if heads == 0 or kv == 0 or d % 8:  # GroupQueryAttention needs head_dim % 8 == 0
            return f"layer {i} has {heads} heads, {kv} KV heads and head_dim {d}"
    return None


class _Builder:
    def __init__(self) -> None:
        from onnx import helper

        self.helper = helper
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self.count = 0

    def init(self, name: str, array: np.ndarray) -> str:
        from onnx import numpy_helper

        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def const(self, name: str, values: list[int]) -> str:
        return self.init(name, np.asarray(values, dtype=np.int64))

    def op(self, op: str, inputs: list[str], *, outputs: int = 1, name: str = "", **attrs: Any) -> list[str]:
        self.count += 1
        name = name or f"{op}_{self.count}"
        outs = [name] if outputs == 1 else [f"{name}:{i}" for i in range(outputs)]
        domain = MS if op in _MS_OPS else ""  # SimplifiedLayerNormalization is ONNX-domain in ONNX Runtime
        self.nodes.append(self.helper.make_node(op, inputs, outs, name=name, domain=domain, **attrs))
        return outs

    def linear(self, x: str, module: Any, name: str) -> str:
        """x @ Wᵀ (+ b) on the module's own weight, stored transposed."""
        w = self.init(f"{name}.w", _np(module.weight).T)
        y = self.op("MatMul", [x, w], name=name)[0]
        if getattr(module, "bias", None) is not None:
            y = self.op("Add", [y, self.init(f"{name}.b", _np(module.bias))], name=f"{name}+b")[0]
        return y

    def fused_linear(self, x: str, modules: list[Any], name: str) -> str:
        """x @ [W1; W2; ...]ᵀ (+ biases): one MatMul for Linears that read the same input."""
        w = self.init(f"{name}.w", np.concatenate([_np(m.weight) for m in modules]).T)
        y = self.op("MatMul", [x, w], name=name)[0]
        if any(getattr(m, "bias", None) is not None for m in modules):
            parts = [_np(m.bias) if m.bias is not None else np.zeros(m.out_features, np.float32) for m in modules]
            y = self.op("Add", [y, self.init(f"{name}.b", np.concatenate(parts))], name=f"{name}+b")[0]
        return y


def _fusable(modules: list[Any]) -> bool:
    """Linears that can share one MatMul: all fp32, or all weight-only quantized on one grid (the MatMulNBits
    rewrite then packs their concatenated codes into one node); a mix (say, a mixed-precision plan) stays apart."""
    grids = set()
    for m in modules:
        qw = getattr(m, "slimtune_qweight", None)
        grids.add(None if qw is None else (qw.bits, qw.group_size, qw.symmetric, tuple(qw.shape)[1:]))
    return len(grids) == 1


def _eps(norm: Any) -> float:
    return float(getattr(norm, "variance_epsilon", getattr(norm, "eps", 1e-6)))


def _rope_caches(model: CausalLM, length: int) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin [length, rotary_dim / 2] from the model's own rotary embedding (its scaling included)."""
    body = model.model
    positions = torch.arange(length)[None]
    with torch.no_grad():
        cos, sin = body.rotary_emb(torch.zeros(1, dtype=torch.float32), positions)
    half = cos.shape[-1] // 2
    return _np(cos[0, :, :half]), _np(sin[0, :, :half])


def build_fused_lm(model: CausalLM, *, opset: int = 17, context: int) -> Any:
    """The fused KV-cache ``onnx.ModelProto`` of ``model`` (see the module docstring)."""
    from onnx import TensorProto, helper

    decoder = KVDecoder(model)
    body = model.model
    g = _Builder()
    # attention inputs shared by every layer
    # GroupQueryAttention reads each row's length from the mask: seqlens_k = sum(mask) - 1, total = its width
    shape = g.op("Shape", ["attention_mask"], name="mask/Shape")[0]
    total = g.op("Gather", [shape, g.init("one_scalar", np.asarray(1, np.int64))], name="mask/total", axis=0)[0]
    total32 = g.op("Cast", [total], name="mask/total32", to=TensorProto.INT32)[0]
    lengths = g.op("ReduceSum", ["attention_mask", g.const("axis1", [1])], name="mask/lengths", keepdims=0)[0]
    last = g.op("Sub", [lengths, g.init("one_i64", np.asarray(1, np.int64))], name="mask/last")[0]
    seqlens = g.op("Cast", [last], name="mask/seqlens_k", to=TensorProto.INT32)[0]
    cos, sin = _rope_caches(model, context)
    g.init("cos_cache", cos)
    g.init("sin_cache", sin)
    # embedding (a tied lm_head shares the transposed table)
    embed = body.embed_tokens.weight
    head = model.lm_head
    tied = head.weight.data_ptr() == embed.data_ptr() and getattr(head, "bias", None) is None
    head_t = g.init("lm_head.weight_t", _np(head.weight).T)
    if tied:
        cols = g.op("Gather", [head_t, "input_ids"], name="embed/Gather", axis=1)[0]  # [hidden, b, s]
        hidden = g.op("Transpose", [cols], name="embed/Transpose", perm=[1, 2, 0])[0]
    else:
        hidden = g.op("Gather", [g.init("embed.weight", _np(embed)), "input_ids"], name="embed/Gather", axis=0)[0]
    residual, pending = hidden, None  # pending: the last sub-block's output, not yet added to the residual
    present: list[str] = []
    for i, layer in enumerate(body.layers):
        attn, mlp = layer.self_attn, layer.mlp
        heads, kv, d = decoder.layer_shapes[i]
        x, residual = _norm(g, residual, pending, layer.input_layernorm, f"layers.{i}.input_norm")
        name = f"layers.{i}"  # short names: the MatMulNBits rewrite adds three per quantized Linear
        q_norm = getattr(attn, "q_norm", None)
        if not _fusable([attn.q_proj, attn.k_proj, attn.v_proj]) or q_norm is not None:
            q, k, v = (g.linear(x, getattr(attn, f"{p}_proj"), f"{name}.{p}") for p in "qkv")
            if q_norm is not None:  # Qwen3: RMSNorm per head before RoPE
                q = _head_norm(g, q, q_norm, heads, d, f"{name}.q_norm")
                k = _head_norm(g, k, attn.k_norm, kv, d, f"{name}.k_norm")
            qkv = [q, k, v]
        else:  # packed: GQA splits q/k/v itself
            qkv = [g.fused_linear(x, [attn.q_proj, attn.k_proj, attn.v_proj], f"{name}.qkv"), "", ""]
        outs = [f"{name}.attn", PRESENT.format(i, "key"), PRESENT.format(i, "value")]
        g.nodes.append(helper.make_node(
            "GroupQueryAttention",
            [*qkv, PAST.format(i, "key"), PAST.format(i, "value"), seqlens, total32, "cos_cache", "sin_cache"],
            outs, name=f"{name}.attn", domain=MS, num_heads=heads, kv_num_heads=kv,
            scale=float(attn.scaling), do_rotary=1, rotary_interleaved=0,
        ))  # fmt: skip
        present += outs[1:]
        pending = g.linear(outs[0], attn.o_proj, f"{name}.o")
        x, residual = _norm(g, residual, pending, layer.post_attention_layernorm, f"layers.{i}.post_norm")
        if not _fusable([mlp.gate_proj, mlp.up_proj]):
            gate, up = g.linear(x, mlp.gate_proj, f"{name}.gate"), g.linear(x, mlp.up_proj, f"{name}.up")
        else:
            both = g.fused_linear(x, [mlp.gate_proj, mlp.up_proj], f"{name}.gate_up")
            width = int(mlp.gate_proj.weight.shape[0])
            gate, up = g.op("Split", [both, g.const(f"{name}.split", [width, width])], outputs=2, axis=-1,
                            name=f"{name}/Split")  # fmt: skip
        act = g.op("Mul", [gate, g.op("Sigmoid", [gate], name=f"{name}/Sigmoid")[0]], name=f"{name}/SiLU")[0]
        pending = g.linear(g.op("Mul", [act, up], name=f"{name}/Mul")[0], mlp.down_proj, f"{name}.down")
    x, _ = _norm(g, residual, pending, body.norm, "norm")
    g.op("MatMul", [x, head_t], name="lm_head/MatMul")
    g.nodes[-1].output[0] = "logits"
    if getattr(head, "bias", None) is not None:
        g.nodes[-1].output[0] = "logits_nobias"
        g.nodes.append(helper.make_node("Add", ["logits_nobias", g.init("lm_head.bias", _np(head.bias))], ["logits"]))
    return _model(g, decoder, opset)


def _norm(g: _Builder, residual: str, pending: str | None, norm: Any, name: str) -> tuple[str, str]:
    """(RMSNorm(residual + pending), residual + pending), one fused op either way."""
    w = g.init(f"{name}.w", _np(norm.weight))
    if pending is None:
        return g.op("SimplifiedLayerNormalization", [residual, w], name=name, axis=-1, epsilon=_eps(norm))[0], residual
    outs = g.op("SkipSimplifiedLayerNormalization", [residual, pending, w], outputs=4, name=name, epsilon=_eps(norm))
    g.nodes[-1].output[1] = g.nodes[-1].output[2] = ""  # mean and inverse std are not needed
    return outs[0], outs[3]


def _head_norm(g: _Builder, x: str, norm: Any, heads: int, d: int, name: str) -> str:
    per_head = g.op("Reshape", [x, g.const(f"{name}.heads", [0, 0, heads, d])], name=f"{name}/Reshape")[0]
    w = g.init(f"{name}.w", _np(norm.weight))
    normed = g.op("SimplifiedLayerNormalization", [per_head, w], name=name, axis=-1, epsilon=_eps(norm))[0]
    return g.op("Reshape", [normed, g.const(f"{name}.flat", [0, 0, heads * d])], name=f"{name}/Flatten")[0]


def _model(g: _Builder, decoder: KVDecoder, opset: int) -> Any:
    from onnx import TensorProto, helper

    def value(name: str, dims: list[Any], dtype: int = TensorProto.FLOAT) -> Any:
        return helper.make_tensor_value_info(name, dtype, dims)

    inputs = [value("input_ids", ["batch", "sequence"], TensorProto.INT64),
              value("attention_mask", ["batch", "total_sequence"], TensorProto.INT64)]  # fmt: skip
    outputs = [value("logits", ["batch", "sequence", None])]
    for i, (_, kv, d) in enumerate(decoder.layer_shapes):
        for part in ("key", "value"):
            inputs.append(value(PAST.format(i, part), ["batch", kv, "past_sequence", d]))
            outputs.append(value(PRESENT.format(i, part), ["batch", kv, "total_sequence", d]))
    vocab = int(decoder.model.get_input_embeddings().weight.shape[0])
    outputs[0] = value("logits", ["batch", "sequence", vocab])
    graph = helper.make_graph(g.nodes, "slimtune_kv_decoder", inputs, outputs, g.inits)
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid(MS, 1)], producer_name="slimtune"
    )


def save_fused_lm(model: CausalLM, path: Path, *, opset: int, context: int, external: bool) -> None:
    """Build and write the fused graph at ``path`` (weights in ``<path>.data`` when ``external``)."""
    import onnx

    proto = build_fused_lm(model, opset=opset, context=context)
    if external:
        onnx.save_model(proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=f"{path.name}.data", size_threshold=1024)  # fmt: skip
    else:
        onnx.save_model(proto, str(path))
