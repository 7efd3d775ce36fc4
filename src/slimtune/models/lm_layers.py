"""Per-layer shapes of a decoder-only LM: query heads, KV heads, head size and FFN width of every block.

Structured pruning can leave the blocks of one model different (fewer heads here, a narrower FFN there,
fewer blocks). The spec stores these shapes (``spec['lm_layers']``), and ``apply_layer_shapes`` resizes a
model freshly built from its config to match, so a pruned LM reloads exactly. Two layouts are handled:

* Llama-style blocks (Llama, Qwen2/3, Mistral, Gemma, …): ``self_attn.{q,k,v,o}_proj`` Linear layers and
  ``mlp.{gate,up,down}_proj`` (or ``mlp.fc1/fc2``); the attention reads ``num_key_value_groups``.
* GPT-2 blocks: ``attn.c_attn``/``attn.c_proj`` and ``mlp.c_fc``/``mlp.c_proj`` (transformers' ``Conv1D``);
  the attention reads ``num_heads`` and ``split_size``.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from slimtune.errors import UnsupportedModelError

LAYER_PATHS = ("model.layers", "transformer.h", "model.decoder.layers", "gpt_neox.layers")


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The ModuleList of decoder blocks (``model.layers`` for Llama-style, ``transformer.h`` for GPT-2)."""
    for path in LAYER_PATHS:
        try:
            box = model.get_submodule(path)
        except AttributeError:
            continue
        if isinstance(box, nn.ModuleList):
            return box
    raise UnsupportedModelError(f"{type(model).__name__} has no decoder-block list ({', '.join(LAYER_PATHS)})")


def _conv1d_out(m: Any) -> int:
    return int(m.weight.shape[1])  # transformers' Conv1D stores its weight as (in, out)


def layer_shape(block: Any, *, head_dim: int) -> dict[str, int]:
    """``{"heads", "kv_heads", "head_dim", "ffn"}`` of one decoder block, read from its weights."""
    attn = getattr(block, "self_attn", None)
    if attn is not None and hasattr(attn, "q_proj") and hasattr(attn, "k_proj"):
        hd = int(getattr(attn, "head_dim", head_dim))
        mlp = block.mlp
        up = getattr(mlp, "up_proj", None) or getattr(mlp, "fc1", None)
        if up is None:
            raise UnsupportedModelError(f"cannot read the FFN width of {type(mlp).__name__}")
        return {
            "heads": attn.q_proj.out_features // hd,
            "kv_heads": attn.k_proj.out_features // hd,
            "head_dim": hd,
            "ffn": int(up.out_features),
        }
    attn = getattr(block, "attn", None)
    if attn is not None and hasattr(attn, "c_attn"):
        hd = int(attn.head_dim)
        heads = _conv1d_out(attn.c_attn) // (3 * hd)
        return {"heads": heads, "kv_heads": heads, "head_dim": hd, "ffn": _conv1d_out(block.mlp.c_fc)}
    raise UnsupportedModelError(f"cannot read the per-layer shape of {type(block).__name__}")


def layer_shapes(model: nn.Module) -> list[dict[str, int]]:
    config: Any = model.config
    head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads)
    return [layer_shape(block, head_dim=head_dim) for block in decoder_layers(model)]


def config_shape(config: Any) -> dict[str, int]:
    """The block shape the config describes (every block the same)."""
    heads = int(config.num_attention_heads)
    head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // heads)
    kv = int(getattr(config, "num_key_value_heads", None) or heads)
    ffn = getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None) or 4 * config.hidden_size
    return {"heads": heads, "kv_heads": kv, "head_dim": head_dim, "ffn": int(ffn)}


def uniform_shape(shapes: list[dict[str, int]]) -> dict[str, int] | None:
    """The one shape all blocks share, or None when they differ."""
    if not shapes or any(s != shapes[0] for s in shapes):
        return None
    return dict(shapes[0])


def _linear(old: Any, in_features: int, out_features: int) -> nn.Linear:
    return nn.Linear(in_features, out_features, bias=old.bias is not None, dtype=old.weight.dtype)


def _resize_llama(block: Any, shape: dict[str, int], hidden: int) -> None:
    attn, mlp = block.self_attn, block.mlp
    hd, heads, kv = shape["head_dim"], shape["heads"], shape["kv_heads"]
    if heads % kv:
        raise UnsupportedModelError(f"{heads} query heads cannot share {kv} KV heads; heads must be a multiple")
    attn.q_proj = _linear(attn.q_proj, hidden, heads * hd)
    attn.k_proj = _linear(attn.k_proj, hidden, kv * hd)
    attn.v_proj = _linear(attn.v_proj, hidden, kv * hd)
    out = "o_proj" if hasattr(attn, "o_proj") else "dense"  # Phi names it dense
    setattr(attn, out, _linear(getattr(attn, out), heads * hd, hidden))
    attn.num_key_value_groups = heads // kv
    for name, value in (("num_heads", heads), ("num_key_value_heads", kv)):
        if hasattr(attn, name):
            setattr(attn, name, value)
    ffn = shape["ffn"]
    if hasattr(mlp, "up_proj"):
        mlp.up_proj = _linear(mlp.up_proj, hidden, ffn)
        mlp.down_proj = _linear(mlp.down_proj, ffn, hidden)
        if hasattr(mlp, "gate_proj"):
            mlp.gate_proj = _linear(mlp.gate_proj, hidden, ffn)
    else:
        mlp.fc1 = _linear(mlp.fc1, hidden, ffn)
        mlp.fc2 = _linear(mlp.fc2, ffn, hidden)
    if hasattr(mlp, "intermediate_size"):
        mlp.intermediate_size = ffn


def _resize_gpt2(block: Any, shape: dict[str, int], hidden: int) -> None:
    from transformers.pytorch_utils import Conv1D

    attn, mlp = block.attn, block.mlp
    width = shape["heads"] * shape["head_dim"]
    if shape["kv_heads"] != shape["heads"]:
        raise UnsupportedModelError("GPT-2 blocks need as many KV heads as query heads")
    attn.c_attn = Conv1D(3 * width, hidden)
    attn.c_proj = Conv1D(hidden, width)
    attn.num_heads, attn.split_size = shape["heads"], width
    mlp.c_fc = Conv1D(shape["ffn"], hidden)
    mlp.c_proj = Conv1D(hidden, shape["ffn"])


def apply_layer_shapes(model: nn.Module, shapes: list[dict[str, int]]) -> None:
    """Resize the blocks of ``model`` (built from a config with ``len(shapes)`` blocks) to ``shapes``."""
    config: Any = model.config
    layers = decoder_layers(model)
    if len(layers) != len(shapes):
        raise UnsupportedModelError(f"the spec lists {len(shapes)} decoder blocks but the model has {len(layers)}")
    hidden = int(config.hidden_size)
    head_dim = int(getattr(config, "head_dim", None) or hidden // config.num_attention_heads)
    for block, shape in zip(layers, shapes):
        if layer_shape(block, head_dim=head_dim) == shape:
            continue
        if shape["heads"] < 1 or shape["kv_heads"] < 1 or shape["ffn"] < 1:
            raise UnsupportedModelError(f"cannot rebuild a decoder block without heads or FFN: {shape}")
        if hasattr(block, "self_attn"):
            _resize_llama(block, shape, hidden)
        else:
            _resize_gpt2(block, shape, hidden)


def sync_config(config: Any, shapes: list[dict[str, int]]) -> None:
    """Make a (copied) ``config`` tell the truth about the blocks: their number and, when uniform, their shape."""
    config.num_hidden_layers = len(shapes)
    types = getattr(config, "layer_types", None)
    if isinstance(types, list) and len(types) != len(shapes):
        config.layer_types = types[: len(shapes)]
    shape = uniform_shape(shapes)
    if shape is None or shape == config_shape(config):
        return
    config.num_attention_heads = shape["heads"]
    if hasattr(config, "num_key_value_heads"):
        config.num_key_value_heads = shape["kv_heads"]
    if hasattr(config, "head_dim") or shape["heads"] * shape["head_dim"] != config.hidden_size:
        config.head_dim = shape["head_dim"]
    if hasattr(config, "intermediate_size"):
        config.intermediate_size = shape["ffn"]
    elif hasattr(config, "n_inner"):
        config.n_inner = shape["ffn"]
