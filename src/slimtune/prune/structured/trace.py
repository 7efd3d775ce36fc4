"""Find which channels flow where by running the model once on an example input.

Every layer slimtune knows (a ``LayerHandler``) or does not know (parameters, no handler) gets forward
hooks and is treated as one opaque step; a ``TorchFunctionMode`` sees every functional op *between*
layers (activations, residual adds, pools, flattens, reshapes) and ``ops.py`` says how each moves the
channel axis. The result is a set of channel *spaces*: the output channels of one or more producers
(coupled by an add), the followers that carry them (BatchNorm) and the consumers that read them, possibly
flattened (``outer``/``inner``: a Linear after Flatten reads each conv channel as a block of H·W columns).
Anything the rules do not understand freezes the spaces it touches: never cut, never broken.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from slimtune.prune.structured.handlers import Cut, Inner, LayerHandler, handler_for


@dataclass(eq=False)
class Layout:
    """The channel axis of a concatenation as one layer reads it: the current size of each part, in entries
    (channels × their ``inner``), in order. Shared by the members cut in it, so each finds its part's offset
    after the parts before it were cut."""

    sizes: list[int]


@dataclass(frozen=True)
class Member:
    """One module's share of a space: ``cut`` is applied with channel indices expanded by ``outer``/``inner``.
    With a ``layout`` the space is part ``part`` of a concatenation the module reads."""

    name: str
    cut: Cut
    outer: int = 1
    inner: int = 1
    scale: tuple[str, ...] = ()  # bn-scale parameters (followers)
    layout: Layout | None = None
    part: int = 0

    def span(self, size: int) -> tuple[int, int]:
        """(offset, width) of this member's part within one of the ``outer`` blocks, in entries."""
        if self.layout is None:
            return 0, size * self.inner
        return sum(self.layout.sizes[: self.part]), sum(self.layout.sizes)


@dataclass(eq=False)
class Space:
    size: int
    unit: int = 1
    members: list[Member] = field(default_factory=list)
    producers: list[tuple[str, str]] = field(default_factory=list)  # (module name, target)
    frozen: list[str] = field(default_factory=list)
    unknown: list[tuple[str, nn.Module]] = field(default_factory=list)
    parent: Space | None = None

    def root(self) -> Space:
        node = self
        while node.parent is not None:
            node = node.parent
        if self.parent is not None and self.parent is not node:
            self.parent = node
        return node

    def freeze(self, reason: str) -> None:
        self.root().frozen.append(reason)


def merge(a: Space, b: Space) -> Space:
    ra, rb = a.root(), b.root()
    if ra is rb:
        return ra
    if (ra.size, ra.unit) != (rb.size, rb.unit):
        ra.frozen.append(f"channels of different sizes or units ({ra.size}/{ra.unit} vs {rb.size}/{rb.unit}) meet")
    rb.parent = ra
    ra.members += rb.members
    ra.producers += rb.producers
    ra.frozen += rb.frozen
    ra.unknown += rb.unknown
    return ra


@dataclass(frozen=True)
class Track:
    """Where a tensor carries a space: along ``dim``, each channel as ``inner`` consecutive entries,
    the whole pattern repeated ``outer`` times."""

    space: Space
    dim: int
    outer: int = 1
    inner: int = 1


@dataclass(frozen=True)
class CatTrack:
    """A concatenation along ``dim``: its parts in order, each a space (None: entries nothing can cut, e.g.
    the model's input), its channel count and ``inner`` (entries per channel); the whole axis repeated
    ``outer`` times. It may pass elementwise ops, pools, reductions, followers and a flatten before a layer
    reads it; anything else freezes its spaces."""

    parts: tuple[tuple[Space | None, int, int], ...]
    dim: int
    outer: int = 1

    @property
    def size(self) -> int:
        """Entries in one block."""
        return sum(n * inner for _, n, inner in self.parts)

    @property
    def plain(self) -> bool:
        """One entry per channel, no repeats: the layout of a channel-first activation."""
        return self.outer == 1 and all(inner == 1 for *_, inner in self.parts)

    def spaces(self) -> list[Space]:
        return [s.root() for s, _, _ in self.parts if s is not None]

    def members(self, name: str, cut: Cut, scale: tuple[str, ...] = ()) -> list[tuple[Space, Member]]:
        """One member per cuttable part, sharing a fresh layout of this concatenation."""
        layout = Layout([n * inner for _, n, inner in self.parts])
        return [
            (s.root(), Member(name, cut, self.outer, inner, scale, layout, i))
            for i, (s, _, inner) in enumerate(self.parts)
            if s is not None
        ]


def first_tensor(value: Any) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    items = value.values() if isinstance(value, Mapping) else value if isinstance(value, tuple | list) else ()
    for item in items:
        found = first_tensor(item)
        if found is not None:
            return found
    return None


def all_tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    items = value.values() if isinstance(value, Mapping) else value if isinstance(value, tuple | list) else ()
    return [t for item in items for t in all_tensors(item)]


class Tracer(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.tracks: dict[int, Track] = {}
        self.cats: dict[int, CatTrack] = {}
        self.alive: list[torch.Tensor] = []  # keeps traced tensors alive so their ids are not reused
        self.depth = 0
        self.inputs: list[torch.Tensor | None] = []
        self.produced: dict[str, Space] = {}
        self.consumed: dict[str, Space] = {}
        self.inner_units: dict[str, tuple[nn.Module, list[Inner]]] = {}

    # tensor bookkeeping -------------------------------------------------------------------------------
    def track(self, t: torch.Tensor | None) -> Track | None:
        tr = self.tracks.get(id(t)) if t is not None else None
        return Track(tr.space.root(), tr.dim, tr.outer, tr.inner) if tr is not None else None

    def set(self, t: torch.Tensor, track: Track | CatTrack) -> None:
        if isinstance(track, CatTrack):
            self.cats[id(t)] = track
        else:
            self.tracks[id(t)] = track
        self.alive.append(t)

    def cat(self, t: torch.Tensor | None) -> CatTrack | None:
        return self.cats.get(id(t)) if t is not None else None

    def freeze(self, tensors: list[torch.Tensor], reason: str) -> None:
        for t in tensors:
            tr = self.track(t)
            if tr is not None:
                tr.space.freeze(reason)
            cat = self.cat(t)
            for space in cat.spaces() if cat is not None else ():
                space.freeze(reason)

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.depth == 0:
            from slimtune.prune.structured.ops import on_op

            on_op(self, func, args, kwargs, out)
        return out

    # layers ------------------------------------------------------------------------------------------
    def pre(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if self.depth == 0:
            self.inputs.append(first_tensor(args) if first_tensor(args) is not None else first_tensor(kwargs))
        self.depth += 1

    def post(self, name: str, handler: LayerHandler | None, module: nn.Module, output: Any) -> None:
        if self.depth == 1:  # still > 0 while recording, so the mode ignores the bookkeeping's own tensor calls
            self.layer(name, handler, module, self.inputs.pop(), first_tensor(output))
        self.depth -= 1

    def layer(
        self, name: str, handler: LayerHandler | None, module: nn.Module, x: torch.Tensor | None, y: torch.Tensor | None
    ) -> None:
        src = self.track(x)
        where = f"'{name}' ({type(module).__name__})"
        cat = self.cat(x)
        if cat is not None and x is not None and self.read_cat(name, handler, module, x, y, cat, where):
            return
        if handler is None or handler.role == "frozen":
            if src is not None:
                if handler is None:
                    src.space.unknown.append((name, module))
                else:
                    src.space.freeze(f"it passes through {where}")
            if y is not None and y.ndim >= 1 and y.is_floating_point():
                dim = 1 if (handler is None and y.ndim >= 3) else y.ndim - 1
                space = Space(int(y.shape[dim]))
                if handler is None:
                    space.unknown.append((name, module))
                    space.producers.append((name, "channels" if dim == 1 else "neurons"))
                else:
                    space.freeze(f"it comes out of {where}")
                self.set(y, Track(space, dim))
            return
        if handler.role == "follower":
            if src is None or x is None or y is None:
                return
            dim = handler.channel_dim % x.ndim
            if (src.dim, src.outer, src.inner) != (dim, 1, 1) or y.ndim != x.ndim or y.shape[dim] != x.shape[dim]:
                src.space.freeze(f"{where} reads it along another axis")
                return
            src.space.members.append(Member(name, handler.out, scale=handler.scale))
            self.set(y, Track(src.space, dim))
            return
        if src is not None and x is not None:
            dim = handler.channel_dim % x.ndim
            if src.dim != dim:
                src.space.freeze(f"{where} reads it along another axis")
            elif handler.inp.size(module) != src.outer * src.space.size * src.inner:
                src.space.freeze(f"the handler of {where} cannot cut its input")
            else:
                src.space.members.append(Member(name, handler.inp, src.outer, src.inner))
                self.consumed[name] = merge(self.consumed.get(name, src.space), src.space)
        if name not in self.inner_units:
            self.inner_units[name] = (module, handler.inner(module))
        if y is None:
            return
        dim = handler.channel_dim % y.ndim
        size = handler.out.size(module)
        space = Space(int(y.shape[dim]), handler.unit(module) if size == y.shape[dim] else 1)
        if size != y.shape[dim]:
            space.freeze(f"{where} output does not match its weights")
        space.members.append(Member(name, handler.out))
        space.producers.append((name, handler.target_of(module)))
        if name in self.produced:
            space = merge(self.produced[name], space)
        self.produced[name] = space
        self.set(y, Track(space, dim))

    def read_cat(
        self,
        name: str,
        handler: LayerHandler | None,
        module: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor | None,
        cat: CatTrack,
        where: str,
    ) -> bool:
        """A layer reading a concatenation: each part's space gains a member at the part's offset. True when
        the layer was a follower (its output carries the concatenation on); False: go on as a layer whose
        input is frozen or untracked."""
        role = handler.role if handler is not None else None
        dim = handler.channel_dim % x.ndim if handler is not None else -1
        if role == "follower" and handler is not None and y is not None:
            if cat.plain and cat.dim == dim and y.shape == x.shape:
                for space, member in cat.members(name, handler.out, handler.scale):
                    space.members.append(member)
                self.set(y, cat)
                return True
        elif (
            role == "layer"
            and handler is not None
            and cat.dim == dim
            and handler.inp.size(module) == cat.outer * cat.size
        ):
            for space, member in cat.members(name, handler.inp):
                space.members.append(member)
            return False
        self.freeze([x], f"{where} reads a concatenation it cannot cut")
        if role == "follower" and y is not None:
            self.set(y, cat)  # still frozen: its spaces are the same objects
            return True
        return False


def leaves(model: nn.Module) -> list[tuple[str, nn.Module, LayerHandler | None]]:
    """Modules traced as one step: those with a handler, and unknown ones owning parameters."""
    out: list[tuple[str, nn.Module, LayerHandler | None]] = []
    inside: list[str] = []
    for name, module in model.named_modules():
        if any(name.startswith(p + ".") for p in inside) or module is model:
            continue
        handler = handler_for(module)
        if handler is not None or any(p is not None for p in module._parameters.values()):
            out.append((name, module, handler))
            inside.append(name)
    return out


def call(model: nn.Module, example: Any) -> Any:
    if isinstance(example, tuple):
        return model(*example)
    if isinstance(example, Mapping):
        return model(**example)
    return model(example)


def trace(model: nn.Module, example: Any) -> tuple[list[Space], dict[str, tuple[nn.Module, list[Inner]]]]:
    """The root channel spaces of ``model`` on ``example`` (eval mode, no grad), and each layer's inner units."""
    tracer = Tracer()
    handles = []
    for name, module, handler in leaves(model):
        handles.append(module.register_forward_pre_hook(lambda m, a, k: tracer.pre(m, a, k), with_kwargs=True))
        handles.append(
            module.register_forward_hook(
                lambda m, a, o, _n=name, _h=handler: tracer.post(_n, _h, m, o)  # type: ignore[misc]
            )
        )
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad(), tracer:
            output = call(model, example)
    finally:
        for h in handles:
            h.remove()
        for m, training in modes:
            m.training = training
    tracer.freeze(all_tensors(output), "it is the model's output")
    roots = {id(tr.space.root()): tr.space.root() for tr in tracer.tracks.values()}
    return list(roots.values()), tracer.inner_units
