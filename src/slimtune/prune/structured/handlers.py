"""How structured pruning reads and cuts each layer type, and the registry that teaches it new ones.

A ``LayerHandler`` says, declaratively, which tensors of a layer are indexed by its output channels and
which by its input channels (``Cut``), and which integer attributes hold those sizes. Built-in handlers
cover Linear, Conv (plain; grouped and depthwise in whole groups), ConvTranspose, BatchNorm, the attention of
``transformer-small``, Hugging Face BERT-family self-attention and (``attention.py``) attention owning its output
projection (DistilBERT, ViT); Embedding, LayerNorm and ``nn.MultiheadAttention`` are known but never cut through.
Teach a new layer with ``register_layer_handler(MyLayer, LayerHandler(...))``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import torch
from torch import nn

from slimtune.errors import UnsupportedModelError

Role = Literal["layer", "follower", "frozen"]


def _owner(module: nn.Module, path: str) -> tuple[Any, str]:
    head, _, leaf = path.rpartition(".")
    return (module.get_submodule(head) if head else module), leaf


@dataclass(frozen=True)
class Cut:
    """One channel axis of a layer: tensors indexed by it (dotted name → dim) and the attributes holding
    its size (``attrs``, set to the new channel count; ``unit_attrs``, set to the new unit count)."""

    params: Mapping[str, int] = field(default_factory=dict)
    attrs: tuple[str, ...] = ()
    unit_attrs: tuple[str, ...] = ()
    groups_attr: str | None = None  # a grouped conv's group count, set to the kept channels / ``per_group``
    per_group: int = 1  # channels per group: a follower cut this way removes whole groups

    def tensors(self, module: nn.Module) -> list[tuple[torch.Tensor, int]]:
        """The parameters (not buffers) on this axis, with their dim: what importance is computed from."""
        out = []
        for path, dim in self.params.items():
            owner, leaf = _owner(module, path)
            value = owner._parameters.get(leaf)
            if value is not None:
                out.append((value, dim))
        return out

    def apply(self, module: nn.Module, keep: torch.Tensor, unit: int = 1) -> None:
        """Keep only the entries ``keep`` (sorted channel indices) of every tensor on this axis."""
        for path, dim in self.params.items():
            owner, leaf = _owner(module, path)
            if owner._parameters.get(leaf) is not None:
                old = owner._parameters[leaf]
                new = old.detach().index_select(dim, keep.to(old.device)).clone()
                owner._parameters[leaf] = nn.Parameter(new, requires_grad=old.requires_grad)
            elif owner._buffers.get(leaf) is not None:
                owner._buffers[leaf] = owner._buffers[leaf].index_select(dim, keep.to(owner._buffers[leaf].device))
        for path in self.attrs:
            owner, leaf = _owner(module, path)
            setattr(owner, leaf, len(keep))
        for path in self.unit_attrs:
            owner, leaf = _owner(module, path)
            setattr(owner, leaf, len(keep) // unit)
        if self.groups_attr is not None:
            setattr(module, self.groups_attr, len(keep) // self.per_group)

    def size(self, module: nn.Module) -> int | None:
        for path, dim in self.params.items():
            owner, leaf = _owner(module, path)
            value = getattr(owner, leaf, None)
            if isinstance(value, torch.Tensor):
                return int(value.shape[dim])
        return None


@dataclass(frozen=True)
class Inner:
    """Units inside one layer that nothing outside it sees (the heads of an attention module that owns its
    output projection): ``produce`` cuts where they are made, ``consume`` where they are read."""

    target: str
    size: int
    unit: int
    produce: Cut
    consume: Cut


@dataclass(frozen=True)
class LayerHandler:
    """Teaches structured pruning one layer type.

    ``role``: ``"layer"`` maps input channels to new output channels (Linear, Conv): ``out`` cuts its output
    channels, ``inp`` its input channels. ``"follower"`` is channel-wise (BatchNorm, depthwise conv): channel
    i out depends only on channel i in, and ``out`` cuts both. ``"frozen"``: known, never cut; channels
    flowing into or out of it are left as they are.
    ``channel_dim``: the dim of the layer's input and output tensors that holds channels (-1 features, 1 conv).
    ``scale``: parameters whose magnitude is the 'bn-scale' importance (a norm layer's γ).
    ``unit_attr``: attribute holding channels per unit (an attention head's size); units are single channels
    when None. ``target``: the target name of the channels it produces; by default 'channels' for
    ``channel_dim`` 1 and 'neurons' otherwise.
    """

    role: Role = "layer"
    channel_dim: int = -1
    out: Cut = field(default_factory=lambda: Cut({"weight": 0, "bias": 0}, ("out_features",)))
    inp: Cut = field(default_factory=lambda: Cut({"weight": 1}, ("in_features",)))
    scale: tuple[str, ...] = ()
    unit_attr: str | None = None
    target: str | None = None
    reason: str = ""  # why a frozen layer is never cut, for the report

    def resolve(self, module: nn.Module) -> LayerHandler:
        """The handler for this instance (a conv's depends on its groups); override for such cases."""
        return self

    def unit(self, module: nn.Module) -> int:
        return int(getattr(module, self.unit_attr)) if self.unit_attr else 1

    def target_of(self, module: nn.Module) -> str:
        return self.target or ("neurons" if self.channel_dim == -1 else "channels")

    def inner(self, module: nn.Module) -> list[Inner]:
        return []

    def names(self) -> set[str]:
        """Top-level tensor names this handler knows how to cut."""
        return {p.split(".")[0] for p in (*self.out.params, *self.inp.params)}


FROZEN = LayerHandler(role="frozen", out=Cut(), inp=Cut())


@dataclass(frozen=True)
class ConvHandler(LayerHandler):
    """Conv (and ConvTranspose, whose weight is laid out (in, out/groups, ...)): plain convs are layers; grouped
    convs with as many output as input channels per group (depthwise convs included) are followers cut in whole
    groups (channel i out reads only group i // per_group in); other grouped convs are never cut."""

    def resolve(self, module: nn.Module) -> LayerHandler:
        assert isinstance(module, nn.modules.conv._ConvNd)
        if module.groups == 1:
            return self
        if module.in_channels == module.out_channels:
            per_group = module.in_channels // module.groups
            attrs = ("in_channels", "out_channels")
            cut = Cut({"weight": 0, "bias": 0}, attrs, groups_attr="groups", per_group=per_group)
            return replace(self, role="follower", out=cut, inp=Cut())
        per_in, per_out = module.in_channels // module.groups, module.out_channels // module.groups
        why = f"a grouped conv with {per_in} input and {per_out} output channels per group cannot be cut"
        return replace(self, role="frozen", out=Cut(), inp=Cut(), reason=why)


@dataclass(frozen=True)
class SelfAttentionHandler(LayerHandler):
    """``transformer-small``'s attention owns q/k/v and o: heads are inner units; outside it reads and writes
    the model dim (q/k/v columns, o rows)."""

    def inner(self, module: nn.Module) -> list[Inner]:
        heads, head_dim = int(module.heads), int(module.head_dim)  # type: ignore[arg-type]
        rows = {f"{p}.{t}": 0 for p in ("q", "k", "v") for t in ("weight", "bias")}
        produce = Cut(rows, ("q.out_features", "k.out_features", "v.out_features"), ("heads",))
        return [Inner("heads", heads * head_dim, head_dim, produce, Cut({"o.weight": 1}, ("o.in_features",)))]


def _linears(names: tuple[str, ...], dim: int, attr: str) -> Cut:
    params = {f"{n}.{t}": dim for n in names for t in (("weight", "bias") if dim == 0 else ("weight",))}
    return Cut(params, tuple(f"{n}.{attr}" for n in names))


def _bert_attention() -> LayerHandler:
    qkv = ("query", "key", "value")
    rows = _linears(qkv, 0, "out_features")
    return LayerHandler(
        out=replace(rows, attrs=("all_head_size", *rows.attrs), unit_attrs=("num_attention_heads",)),
        inp=_linears(qkv, 1, "in_features"),
        unit_attr="attention_head_size",
        target="heads",
    )


def _is_bert_attention(module: nn.Module) -> bool:
    """BERT-family self-attention (BERT, RoBERTa, ELECTRA, MiniLM...): query/key/value Linears, heads attrs."""
    return (
        type(module).__name__.endswith("SelfAttention")
        and all(isinstance(getattr(module, n, None), nn.Linear) for n in ("query", "key", "value"))
        and all(isinstance(getattr(module, a, None), int) for a in ("num_attention_heads", "attention_head_size"))
        and isinstance(getattr(module, "all_head_size", None), int)
    )


_BN = LayerHandler(
    role="follower",
    channel_dim=1,
    out=Cut({"weight": 0, "bias": 0, "running_mean": 0, "running_var": 0}, ("num_features",)),
    inp=Cut(),
    scale=("weight",),
)
_CONV = ConvHandler(
    channel_dim=1, out=Cut({"weight": 0, "bias": 0}, ("out_channels",)), inp=Cut({"weight": 1}, ("in_channels",))
)
_CONV_T = ConvHandler(
    channel_dim=1, out=Cut({"weight": 1, "bias": 0}, ("out_channels",)), inp=Cut({"weight": 0}, ("in_channels",))
)
_HANDLERS: dict[type[nn.Module], LayerHandler] = {
    nn.Linear: LayerHandler(),
    **dict.fromkeys((nn.Conv1d, nn.Conv2d, nn.Conv3d), _CONV),
    **dict.fromkeys((nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d), _CONV_T),
    **dict.fromkeys((nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d), _BN),
    **dict.fromkeys((nn.Embedding, nn.EmbeddingBag, nn.LayerNorm, nn.GroupNorm, nn.MultiheadAttention), FROZEN),
}
_BERT_ATTENTION = _bert_attention()
Matcher = Callable[[nn.Module], "LayerHandler | None"]
_MATCHERS: list[Matcher] = [lambda m: _BERT_ATTENTION if _is_bert_attention(m) else None]


def register_matcher(matcher: Matcher) -> None:
    """Duck-typed handlers: ``matcher(module)`` returns a handler for modules of no registered type, else None
    (how Hugging Face attention modules, one class per model family, are recognised)."""
    _MATCHERS.append(matcher)


def _register_builtin_attention() -> None:
    from slimtune.models.transformer import SelfAttention

    _HANDLERS[SelfAttention] = SelfAttentionHandler(
        out=Cut({"o.weight": 0, "o.bias": 0}, ("o.out_features",)),
        inp=_linears(("q", "k", "v"), 1, "in_features"),
    )


_register_builtin_attention()


def register_layer_handler(layer_type: type[nn.Module], handler: LayerHandler) -> None:
    """Teach structured pruning how to cut ``layer_type`` (replaces an earlier handler for it).

    Example, a Linear-like layer with an extra per-output ``scale`` parameter::

        register_layer_handler(ScaledLinear, LayerHandler(out=Cut({"weight": 0, "bias": 0, "scale": 0},
                                                                  ("out_features",))))
    """
    if not (isinstance(layer_type, type) and issubclass(layer_type, nn.Module)):
        raise TypeError(f"register_layer_handler needs an nn.Module subclass, got {layer_type!r}")
    if not isinstance(handler, LayerHandler):
        raise TypeError(f"handler must be a LayerHandler, got {type(handler).__name__}")
    _HANDLERS[layer_type] = handler


def handler_for(module: nn.Module) -> LayerHandler | None:
    """The handler for ``module``: registered for its exact type, else for a base class when the subclass
    adds no tensors the base handler does not know, else a duck-typed match (BERT-family attention)."""
    found = _HANDLERS.get(type(module))
    if found is None:
        own = set(module._parameters) | {n for n, b in module._buffers.items() if b is not None and b.ndim > 0}
        for base in type(module).__mro__[1:]:
            base_handler = _HANDLERS.get(base)
            if base_handler is not None and (base_handler.role == "frozen" or own <= base_handler.names()):
                found = base_handler
                break
    if found is None:
        found = next((h for h in (match(module) for match in _MATCHERS) if h is not None), None)
    return found.resolve(module) if found is not None else None


def unsupported(name: str, module: nn.Module) -> UnsupportedModelError:
    kind = type(module).__name__
    return UnsupportedModelError(
        f"structured pruning cannot cut through '{name}' ({kind}): no layer handler for {kind}; teach it with "
        f"slimtune.prune.register_layer_handler({kind}, LayerHandler(out=Cut(...), inp=Cut(...))) "
        f"or leave it alone with exclude=('{name}',)"
    )
