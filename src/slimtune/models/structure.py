"""Record and restore the *shapes* of a model's layers, so a model whose layers were physically
shrunk or removed (structured pruning) is rebuilt exactly from its spec: build the architecture from
its options, then replace every layer whose recorded shape differs and trim shortened containers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from slimtune.errors import UnsupportedModelError

# integer attributes that layers read in forward() and that structured pruning changes, by class name
SHAPE_ATTRS: dict[str, tuple[str, ...]] = {
    "SelfAttention": ("heads", "head_dim"),
    "BertSelfAttention": ("num_attention_heads", "attention_head_size", "all_head_size"),
    # the other BERT-family self-attentions structured pruning cuts heads of (same attributes)
    **dict.fromkeys(
        (
            "RobertaSelfAttention",
            "XLMRobertaSelfAttention",
            "ElectraSelfAttention",
            "CamembertSelfAttention",
            "ErnieSelfAttention",
        ),
        ("num_attention_heads", "attention_head_size", "all_head_size"),
    ),
    # attention owning its output projection (prune/structured/attention.py)
    "DistilBertSelfAttention": ("n_heads", "attention_head_size"),
    "MultiHeadSelfAttention": ("n_heads", "attention_head_size"),  # DistilBERT before transformers 5
    "ViTAttention": ("num_attention_heads", "head_dim"),
}


def _conv(m: nn.Module) -> dict[str, Any]:
    assert isinstance(m, nn.Conv1d | nn.Conv2d | nn.Conv3d)
    return {
        "in": m.in_channels, "out": m.out_channels, "kernel": list(m.kernel_size), "stride": list(m.stride),
        "padding": m.padding if isinstance(m.padding, str) else list(m.padding), "dilation": list(m.dilation),
        "groups": m.groups, "bias": m.bias is not None, "padding_mode": m.padding_mode,
    }  # fmt: skip


DESCRIBE: dict[type[nn.Module], Callable[[Any], dict[str, Any]]] = {
    nn.Linear: lambda m: {"in": m.in_features, "out": m.out_features, "bias": m.bias is not None},
    nn.Conv1d: _conv,
    nn.Conv2d: _conv,
    nn.Conv3d: _conv,
    nn.BatchNorm1d: lambda m: {"n": m.num_features, "eps": m.eps, "momentum": m.momentum, "affine": m.affine},
    nn.BatchNorm2d: lambda m: {"n": m.num_features, "eps": m.eps, "momentum": m.momentum, "affine": m.affine},
    nn.LayerNorm: lambda m: {"shape": list(m.normalized_shape), "eps": m.eps, "affine": m.elementwise_affine},
    nn.Embedding: lambda m: {"n": m.num_embeddings, "dim": m.embedding_dim, "padding_idx": m.padding_idx},
    nn.Identity: lambda m: {},
}

CREATE: dict[str, Callable[[dict[str, Any]], nn.Module]] = {
    "Linear": lambda d: nn.Linear(d["in"], d["out"], bias=d["bias"]),
    "Conv1d": lambda d: nn.Conv1d(**_conv_args(d)),
    "Conv2d": lambda d: nn.Conv2d(**_conv_args(d)),
    "Conv3d": lambda d: nn.Conv3d(**_conv_args(d)),
    "BatchNorm1d": lambda d: nn.BatchNorm1d(d["n"], eps=d["eps"], momentum=d["momentum"], affine=d["affine"]),
    "BatchNorm2d": lambda d: nn.BatchNorm2d(d["n"], eps=d["eps"], momentum=d["momentum"], affine=d["affine"]),
    "LayerNorm": lambda d: nn.LayerNorm(d["shape"], eps=d["eps"], elementwise_affine=d["affine"]),
    "Embedding": lambda d: nn.Embedding(d["n"], d["dim"], padding_idx=d["padding_idx"]),
    "Identity": lambda d: nn.Identity(),
}


def _conv_args(d: dict[str, Any]) -> dict[str, Any]:
    pad = d["padding"] if isinstance(d["padding"], str) else tuple(d["padding"])
    return {
        "in_channels": d["in"], "out_channels": d["out"], "kernel_size": tuple(d["kernel"]),
        "stride": tuple(d["stride"]), "padding": pad, "dilation": tuple(d["dilation"]), "groups": d["groups"],
        "bias": d["bias"], "padding_mode": d["padding_mode"],
    }  # fmt: skip


def describe(model: nn.Module) -> dict[str, dict[str, Any]]:
    """Shape descriptors of every layer slimtune can rebuild, plus container lengths and shape attributes."""
    out: dict[str, dict[str, Any]] = {}
    for name, m in model.named_modules():
        if not name:
            continue
        fn = DESCRIBE.get(type(m))
        if fn is not None:
            out[name] = {"type": type(m).__name__, **fn(m)}
        elif isinstance(m, nn.ModuleList | nn.Sequential):
            out[name] = {"type": "container", "len": len(m)}
        attrs = SHAPE_ATTRS.get(type(m).__name__)
        if attrs:
            out[name] = {"type": "attrs", **{a: getattr(m, a) for a in attrs}}
    return out


def _parent(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    parent_name, _, child = name.rpartition(".")
    return (model.get_submodule(parent_name) if parent_name else model), child


def restore(model: nn.Module, recorded: dict[str, dict[str, Any]]) -> None:
    """Make ``model``'s layers match ``recorded`` (from ``describe``) in place."""
    # containers first, shortest names first, so removed blocks are gone before their children are visited
    for name, desc in sorted(recorded.items(), key=lambda kv: kv[0].count(".")):
        if desc["type"] != "container":
            continue
        box = model.get_submodule(name)
        assert isinstance(box, nn.ModuleList | nn.Sequential)
        while len(box) > desc["len"]:
            del box[len(box) - 1]
    current = dict(model.named_modules())
    for name, desc in recorded.items():
        kind = desc["type"]
        if kind == "container":
            continue
        if name not in current:
            raise UnsupportedModelError(f"saved layer '{name}' does not exist in the rebuilt architecture")
        module = current[name]
        if kind == "attrs":
            for attr, value in desc.items():
                if attr != "type":
                    setattr(module, attr, value)
            continue
        same_type = type(module).__name__ == kind
        fn = DESCRIBE.get(type(module))
        if same_type and fn is not None and {"type": kind, **fn(module)} == desc:
            continue
        if kind not in CREATE:
            raise UnsupportedModelError(f"cannot rebuild layer '{name}' of type {kind}")
        parent, child = _parent(model, name)
        setattr(parent, child, CREATE[kind](desc))
