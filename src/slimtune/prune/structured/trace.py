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
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from slimtune.prune.structured.handlers import Inner, LayerHandler, handler_for
from slimtune.prune.structured.spaces import CatTrack, Layout, Member, Space, Track, merge

__all__ = ["CatTrack", "Layout", "Member", "Space", "Track", "merge", "trace"]


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
        self.absorbed: list[tuple[Space, int, int, CatTrack]] = []  # gates cut with a concatenation's parts

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

    def absorb(self, gate: Space, cat: CatTrack) -> bool:
        """A space as wide as a concatenation it gates elementwise (squeeze-excitation): every tensor of it is
        cut at each part's offset instead, with that part's channels; the space itself is no longer a group."""
        root = gate.root()
        if any(root is g.root() for g, *_ in self.absorbed):
            return False
        if any(m.layout is not None or (m.outer, m.inner) != (1, 1) for m in root.members):
            return False
        for m in root.members:
            layout = Layout([n for _, n, _ in cat.parts])
            for i, (space, _, _) in enumerate(cat.parts):
                if space is not None:
                    space.root().members.append(Member(m.name, m.cut, 1, 1, m.scale, layout, i))
        for space in cat.spaces():
            space.frozen += root.frozen
            space.unknown += root.unknown
        self.absorbed.append((root, len(root.members), len(root.frozen), cat))
        return True

    def settle(self) -> None:
        """Dissolve absorbed gates, or, when one gained members or reasons to stay whole after it was
        absorbed (it is used elsewhere), freeze it and the concatenation's spaces."""
        for gate, members, frozen, cat in self.absorbed:
            root = gate.root()
            if root is gate and len(root.members) == members and len(root.frozen) == frozen:
                root.producers.clear()
                continue
            name = gate.producers[0][0] if gate.producers else "a gate"
            reason = f"the gate '{name}' it is multiplied by is used elsewhere"
            for space in (root, *cat.spaces()):
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
                    src.space.freeze(f"it passes through {where}" + (f": {handler.reason}" if handler.reason else ""))
            if y is not None and y.ndim >= 1 and y.is_floating_point():
                dim = unknown_dim(module, y) if handler is None else handler.channel_dim % y.ndim
                space = Space(int(y.shape[dim]))
                if handler is None:
                    space.unknown.append((name, module))
                    space.producers.append((name, "channels" if dim == 1 else "neurons"))
                else:
                    space.freeze(f"it comes out of {where}" + (f": {handler.reason}" if handler.reason else ""))
                self.set(y, Track(space, dim))
            return
        if handler.role == "follower":
            if src is None or x is None or y is None:
                return
            dim = handler.channel_dim % x.ndim
            if (src.dim, src.outer, src.inner) != (dim, 1, 1) or y.ndim != x.ndim or y.shape[dim] != x.shape[dim]:
                src.space.freeze(f"{where} reads it along another axis")
                return
            if not src.space.require_unit(handler.out.per_group):
                src.space.freeze(f"the groups of {handler.out.per_group} channels of {where} do not fit its units")
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
            per_group = handler.out.per_group
            whole_groups = all(n % per_group == 0 and (s is None or s.require_unit(per_group)) for s, n, _ in cat.parts)
            if cat.plain and cat.dim == dim and y.shape == x.shape and whole_groups:
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


def unknown_dim(module: nn.Module, y: torch.Tensor) -> int:
    """The channel dim of an unknown layer's output: 1 for conv-like (B, C, ...) outputs, the last for 2-d ones
    and for (B, S, D) outputs whose D ends one of its parameters and whose S begins none (a Hugging Face
    embedding module: cls token and position table (1, S, D))."""
    if y.ndim < 3:
        return y.ndim - 1
    own = [p for p in module.parameters(recurse=False) if p.ndim > 0]
    first, last = {int(p.shape[0]) for p in own}, {int(p.shape[-1]) for p in own}
    return y.ndim - 1 if y.shape[-1] in last and y.shape[1] not in first else 1


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
    tracer.settle()
    roots = {id(tr.space.root()): tr.space.root() for tr in tracer.tracks.values()}
    return list(roots.values()), tracer.inner_units
