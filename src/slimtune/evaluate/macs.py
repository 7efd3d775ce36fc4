"""Count multiply-accumulates (MACs) of one forward pass with forward hooks.

Counted densely (zeros count). Rules, per module:

* ``nn.Linear`` (and quantized ``*Linear`` modules with ``in_features``/``out_features``):
  ``in_features * out_features`` per output row, batch and sequence dims included.
* ``nn.Conv1d/2d/3d``: output elements x ``in_channels / groups`` x kernel elements
  (transposed convs: input elements x ``out_channels / groups`` x kernel elements).
* ``nn.MultiheadAttention``: q/k/v and output projections plus ``QK^T`` and ``AV``.
* Hugging Face BERT-style self-attention (class name ending in ``SelfAttention`` with
  ``num_attention_heads``/``attention_head_size`` or a ``config``; or ending in ``Attention`` with its own
  heads (``n_heads``/``num_heads``) and head size (``head_dim``) attributes): the two attention matmuls,
  ``2 * B * H * S * S * Dh``; its Linear projections are counted by the Linear rule.
* Protocol: a module defining ``extra_macs(self, inputs: tuple, output) -> int`` gets that
  added (``inputs`` are the positional forward arguments). It replaces the built-in attention
  rules above for that module, but Linear/Conv children are still counted by their own hooks.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from slimtune.errors import UnsupportedModelError

Rule = Callable[[nn.Module, tuple[Any, ...], dict[str, Any], Any], int]


def _first_tensor(value: Any) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, tuple | list):
        for item in value:
            found = _first_tensor(item)
            if found is not None:
                return found
    if isinstance(value, Mapping):
        return _first_tensor(list(value.values()))
    return None


def _arg(args: tuple[Any, ...], kwargs: dict[str, Any], index: int, name: str) -> torch.Tensor | None:
    value = args[index] if len(args) > index else kwargs.get(name)
    return value if isinstance(value, torch.Tensor) else None


def _linear_macs(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> int:
    out = _first_tensor(output)
    if out is None or out.numel() == 0:
        return 0
    out_features = int(module.out_features)  # type: ignore[arg-type]
    rows = out.numel() // out_features
    return rows * int(module.in_features) * out_features  # type: ignore[arg-type]


def _conv_macs(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> int:
    assert isinstance(module, nn.modules.conv._ConvNd)
    kernel = math.prod(module.kernel_size)
    if module.transposed:
        inp = _arg(args, kwargs, 0, "input")
        return 0 if inp is None else inp.numel() * (module.out_channels // module.groups) * kernel
    out = _first_tensor(output)
    return 0 if out is None else out.numel() * (module.in_channels // module.groups) * kernel


def _mha_macs(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> int:
    assert isinstance(module, nn.MultiheadAttention)
    query = _arg(args, kwargs, 0, "query")
    key = _arg(args, kwargs, 1, "key")
    if query is None or key is None:
        return 0
    embed = module.embed_dim
    if query.dim() == 3:
        batch = query.shape[0] if module.batch_first else query.shape[1]
    else:
        batch = 1
    q_tokens = query.numel() // query.shape[-1]
    k_tokens = key.numel() // key.shape[-1]
    q_len, k_len = q_tokens // batch, k_tokens // batch
    projections = q_tokens * embed * embed + k_tokens * (module.kdim + module.vdim) * embed
    attention = 2 * batch * q_len * k_len * embed  # QK^T and AV summed over heads
    return projections + attention + q_tokens * embed * embed  # + output projection


ATTN_HEADS = ("num_attention_heads", "n_heads", "num_heads")
ATTN_HEAD_SIZE = ("attention_head_size", "head_dim")


def _owns_attention(module: nn.Module) -> bool:
    """An attention module (DistilBERT, ViT…) whose own attributes give its heads and head size."""
    return type(module).__name__.endswith("Attention") and all(
        any(isinstance(getattr(module, a, None), int) for a in names) for names in (ATTN_HEADS, ATTN_HEAD_SIZE)
    )


def _hidden_width(module: nn.Module) -> int | None:
    """``num_heads * head_dim`` of a BERT-style self-attention module, or None. The module's own attributes
    come first (structured pruning changes them, not the config's)."""
    heads = next((v for a in ATTN_HEADS if isinstance(v := getattr(module, a, None), int)), None)
    head_dim = next((v for a in ATTN_HEAD_SIZE if isinstance(v := getattr(module, a, None), int)), None)
    config = getattr(module, "config", None)
    if heads is None and config is not None:
        heads = getattr(config, "num_attention_heads", None)
    if head_dim is None and config is not None and heads:
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    if isinstance(heads, int) and isinstance(head_dim, int):
        return heads * head_dim
    return None


def _bert_attention_macs(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> int:
    width = _hidden_width(module)
    out = _first_tensor(output)
    if width is None or out is None or out.dim() < 2:
        return 0
    tokens = out.numel() // out.shape[-1]  # B * S
    seq = out.shape[-2]
    return 2 * tokens * seq * width


def _extra_rule(base: Rule | None) -> Rule:
    def rule(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> int:
        extra = int(module.extra_macs(args, output))  # type: ignore[operator]
        return extra + (base(module, args, kwargs, output) if base is not None else 0)

    return rule


def _base_rule(module: nn.Module) -> Rule | None:
    if isinstance(module, nn.modules.conv._ConvNd):
        return _conv_macs
    if isinstance(module, nn.Linear) or (
        type(module).__name__.endswith("Linear")
        and isinstance(getattr(module, "in_features", None), int)
        and isinstance(getattr(module, "out_features", None), int)
    ):
        return _linear_macs
    return None


def _rule_for(module: nn.Module) -> Rule | None:
    base = _base_rule(module)
    if callable(getattr(module, "extra_macs", None)):
        return _extra_rule(base)
    if base is not None:
        return base
    if isinstance(module, nn.MultiheadAttention):
        return _mha_macs
    if (type(module).__name__.endswith("SelfAttention") or _owns_attention(module)) and _hidden_width(
        module
    ) is not None:
        return _bert_attention_macs
    return None


def _call(model: nn.Module, example_inputs: Any) -> None:
    if isinstance(example_inputs, tuple):
        model(*example_inputs)
    elif isinstance(example_inputs, Mapping):
        model(**example_inputs)
    else:
        model(example_inputs)


def count_macs_by_layer(
    model: nn.Module, example_inputs: tuple[Any, ...] | torch.Tensor | Mapping[str, Any]
) -> dict[str, int]:
    """MACs per module name (summed over repeated calls) for one forward on ``example_inputs``.

    ``example_inputs`` is a tuple of positional arguments, a single tensor, or a dict of keyword
    arguments. The model runs in eval mode under ``torch.no_grad``; its modes are restored after.
    """
    if not isinstance(model, nn.Module):
        raise UnsupportedModelError(f"count_macs needs a torch.nn.Module, got {type(model).__name__}")
    # nn.MultiheadAttention uses its out_proj weights functionally; never count its children.
    inside_mha = {
        id(sub)
        for mha in model.modules()
        if isinstance(mha, nn.MultiheadAttention)
        for sub in mha.modules()
        if sub is not mha
    }
    counts: dict[str, int] = {}
    handles = []
    for name, module in model.named_modules():
        rule = _rule_for(module)
        if rule is None or id(module) in inside_mha:
            continue

        def hook(mod: nn.Module, args: Any, kwargs: Any, output: Any, _name: str = name, _rule: Rule = rule) -> None:
            counts[_name] = counts.get(_name, 0) + int(_rule(mod, args, kwargs, output))

        handles.append(module.register_forward_hook(hook, with_kwargs=True))
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            _call(model, example_inputs)
    finally:
        for handle in handles:
            handle.remove()
        for module, training in modes:
            module.training = training
    return {name: macs for name, macs in counts.items() if macs}


def count_macs(model: nn.Module, example_inputs: tuple[Any, ...] | torch.Tensor | Mapping[str, Any]) -> int:
    """Total MACs of one forward pass on ``example_inputs`` (pass a batch of 1 for per-item MACs)."""
    return sum(count_macs_by_layer(model, example_inputs).values())
