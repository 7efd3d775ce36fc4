"""How functional ops between layers move a tensor's channel axis (see ``trace.py``).

Elementwise ops keep it (and an add of two channel tensors couples their spaces: the residual rule);
pools keep dim 1; reshape/flatten/view map it by the row-major layout (a flatten turns each channel into a
block of columns); transpose/permute move it; reductions and softmax over other dims keep it. A cat along
the channel axis makes a ``CatTrack`` of its inputs' spaces (each still cut on its own; the layers reading
the concatenation are cut at each part's offset), which elementwise ops, pools and a flatten carry; a gate
as wide as the concatenation multiplied into it (squeeze-excitation) is cut with its parts. Any other op
touching a channel tensor (matmul, indexing...) freezes its space.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch.utils._pytree import tree_flatten

from slimtune.prune.structured.trace import CatTrack, Space, Track, merge

if TYPE_CHECKING:
    from slimtune.prune.structured.trace import Tracer

UNARY = {
    "relu", "gelu", "silu", "sigmoid", "tanh", "hardtanh", "relu6", "leaky_relu", "elu", "selu", "celu", "mish",
    "softplus", "hardswish", "hardsigmoid", "logsigmoid", "dropout", "alpha_dropout", "feature_alpha_dropout",
    "dropout1d", "dropout2d", "dropout3d", "contiguous", "clone", "detach", "to", "float", "double", "half",
    "bfloat16", "type_as", "abs", "neg", "exp", "sqrt", "square", "clamp", "clip", "requires_grad", "cpu", "cuda",
}  # fmt: skip
BINARY = {"add", "sub", "mul", "div", "truediv", "true_divide", "maximum", "minimum", "pow"}
POOLS = {
    f"{kind}{n}d" for kind in ("max_pool", "avg_pool", "adaptive_avg_pool", "adaptive_max_pool", "lp_pool")
    for n in (1, 2, 3)
} | {"interpolate", "upsample", "upsample_nearest", "upsample_bilinear"}  # fmt: skip
RESHAPES = {"view", "reshape", "flatten", "squeeze", "unsqueeze", "view_as", "reshape_as", "unflatten"}
REDUCTIONS = {"mean", "sum", "amax", "amin", "nanmean", "std", "var"}
LIKE = {"zeros_like", "ones_like", "empty_like", "full_like", "rand_like", "randn_like", "new_zeros", "new_ones",
        "new_empty", "new_full", "new_tensor", "size", "dim"}  # fmt: skip
_DISPATCHED = {
    id(fn): name
    for name in ("max_pool1d", "max_pool2d", "max_pool3d", "adaptive_max_pool1d", "adaptive_max_pool2d",
                 "adaptive_max_pool3d")
    if (fn := getattr(F, name, None)) is not None
}  # fmt: skip


def op_name(func: Any) -> str:
    name = getattr(func, "__name__", "")
    if name == "fn":  # boolean_dispatch wrappers (F.max_pool2d...)
        name = _DISPATCHED.get(id(func), name)
    name = name.strip("_")
    for prefix in ("i", "r"):  # __iadd__, __radd__, __rtruediv__...
        if name.startswith(prefix) and name[1:] in BINARY:
            return name[1:]
    return name


def _arg(args: tuple[Any, ...], kwargs: dict[str, Any], index: int, key: str, default: Any = None) -> Any:
    return args[index] if len(args) > index else kwargs.get(key, default)


def reshape_track(track: Track, before: Sequence[int], after: Sequence[int]) -> Track | None:
    """Where the channel axis lands after a row-major reshape from ``before`` to ``after`` (None: split)."""
    d = track.dim
    pre, post = math.prod(before[:d]), math.prod(before[d + 1 :])
    for k in range(len(after)):
        a, b = math.prod(after[:k]), math.prod(after[k + 1 :])
        if a and b and pre % a == 0 and post % b == 0 and (pre // a) * before[d] * (post // b) == after[k]:
            return Track(track.space, k, track.outer * (pre // a), track.inner * (post // b))
    return None


def _dims(value: Any, ndim: int) -> list[int] | None:
    if value is None:
        return None
    values = [value] if isinstance(value, int) else list(value)
    return [int(v) % ndim for v in values]


def _moved(name: str, track: Track, x: torch.Tensor, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int | None:
    """The channel dim after transpose/permute, None when unknown."""
    d = track.dim
    if name in ("transpose", "swapaxes", "swapdims"):
        a, b = (int(_arg(args, kwargs, i, k)) % x.ndim for i, k in ((1, "dim0"), (2, "dim1")))
        return b if d == a else a if d == b else d
    if name == "t":
        return 1 - d if x.ndim == 2 else d
    if name == "permute":
        order = args[1:] if len(args) > 1 else kwargs.get("dims", ())
        if len(order) == 1 and isinstance(order[0], Sequence):
            order = order[0]
        perm = [int(o) % x.ndim for o in order]
        return perm.index(d) if d in perm else None
    return None


def _reduced(track: Track, x: torch.Tensor, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int | None:
    dims = _dims(_arg(args, kwargs, 1, "dim"), x.ndim)
    if not dims or track.dim in dims:
        return None
    keep = bool(_arg(args, kwargs, 2, "keepdim", False))
    return track.dim if keep else track.dim - sum(1 for v in dims if v < track.dim)


def _binary(tracer: Tracer, tensors: list[torch.Tensor], out: torch.Tensor) -> None:
    layouts, spaces, plain = set(), [], []
    for t in tensors:
        tr = tracer.track(t)
        if tr is None:
            plain.append(t)
            continue
        aligned = tr.dim + out.ndim - t.ndim
        if t.shape[tr.dim] != out.shape[aligned]:
            tracer.freeze(tensors, "it is broadcast")
            return
        layouts.add((aligned, tr.outer, tr.inner))
        spaces.append(tr.space)
    if len(layouts) != 1:
        tracer.freeze(tensors, "an elementwise op mixes it with another axis")
        return
    dim, outer, inner = layouts.pop()
    for t in plain:  # a per-channel constant that is not a layer's parameter cannot be cut
        i = dim - (out.ndim - t.ndim)
        if i >= 0 and t.shape[i] != 1:
            tracer.freeze(tensors, "it meets a per-channel constant")
            return
    space = spaces[0]
    for other in spaces[1:]:
        space = merge(space, other)
    tracer.set(out, Track(space, dim, outer, inner))


CATS = {"cat", "concat", "concatenate"}


def _cat(tracer: Tracer, args: tuple[Any, ...], kwargs: dict[str, Any], out: torch.Tensor) -> bool:
    """A cat along the tracked axis of its inputs (each unrepeated: ``outer`` 1): the output gets a
    ``CatTrack``; untracked inputs are parts nothing cuts."""
    inputs = _arg(args, kwargs, 0, "tensors")
    if not isinstance(inputs, list | tuple) or not inputs:
        return False
    dim = int(_arg(args, kwargs, 1, "dim", 0)) % out.ndim
    parts: list[tuple[Space | None, int, int]] = []
    for t in inputs:
        if not isinstance(t, torch.Tensor) or t.ndim != out.ndim:
            return False
        tr, inside = tracer.track(t), tracer.cat(t)
        if inside is not None:  # a concatenation of concatenations: one, flat
            if inside.dim != dim or inside.outer != 1:
                return False
            parts.extend(inside.parts)
        elif tr is None:
            parts.append((None, int(t.shape[dim]), 1))
        elif tr.dim != dim or tr.outer != 1:
            return False
        else:
            parts.append((tr.space, tr.space.size, tr.inner))
    tracer.set(out, CatTrack(tuple(parts), dim))
    return True


def _carry_cat(
    name: str, cat: CatTrack, x: torch.Tensor, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any
) -> CatTrack | None:
    """Where an op on a concatenation ``x`` (its only tracked input) puts it, or None when unknown."""
    if not isinstance(out, torch.Tensor):
        return None
    if (name in UNARY and out.shape == x.shape) or (
        name in POOLS and cat.plain and cat.dim == 1 and out.shape[:2] == x.shape[:2]
    ):
        return cat
    if name in REDUCTIONS and cat.plain:
        dim = _reduced(Track(Space(cat.size), cat.dim), x, args, kwargs)
        return CatTrack(cat.parts, dim) if dim is not None else None
    if name in RESHAPES and out.numel() == x.numel():
        whole = reshape_track(Track(Space(cat.size), cat.dim, cat.outer), tuple(x.shape), tuple(out.shape))
        if whole is None:
            return None
        parts = tuple((s, n, inner * whole.inner) for s, n, inner in cat.parts)
        return CatTrack(parts, whole.dim, whole.outer)
    return None


def _binary_cat(tracer: Tracer, tensors: list[torch.Tensor], out: Any) -> bool:
    """An elementwise op on one concatenation (not broadcast) with scalars, per-example constants or gates as
    wide as it (``x * sigmoid(fc(pool(x)))``): the gates' spaces are cut with the parts (``Tracer.absorb``)."""
    cats = {id(c): c for t in tensors if (c := tracer.cat(t)) is not None}
    if len(cats) != 1 or not isinstance(out, torch.Tensor):
        return False
    cat = next(iter(cats.values()))
    if not cat.plain or any(t.shape != out.shape for t in tensors if tracer.cat(t) is cat):
        return False
    gates: dict[int, Space] = {}
    for t in tensors:
        if tracer.cat(t) is not None:
            continue
        i, tr = cat.dim - (out.ndim - t.ndim), tracer.track(t)
        if tr is None:
            if i >= 0 and t.shape[i] != 1:
                return False  # a per-channel constant that is not a layer's parameter
        elif (tr.dim, tr.outer, tr.inner, tr.space.size, tr.space.unit) != (i, 1, 1, cat.size, 1):
            return False
        else:
            gates[id(tr.space)] = tr.space
    if not all(tracer.absorb(gate, cat) for gate in gates.values()):
        return False
    tracer.set(out, cat)
    return True


def on_op(tracer: Tracer, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> None:
    leaves, _ = tree_flatten((args, kwargs))
    tensors = [t for t in leaves if isinstance(t, torch.Tensor)]
    name = op_name(func)
    cats = [t for t in tensors if tracer.cat(t) is not None]
    concatenates = cats or any(tracer.track(t) is not None for t in tensors)
    if name in CATS and isinstance(out, torch.Tensor) and concatenates and _cat(tracer, args, kwargs, out):
        return
    if cats:
        x = args[0] if args and isinstance(args[0], torch.Tensor) else None
        carried = None
        if name in LIKE:
            return
        if name in BINARY and _binary_cat(tracer, tensors, out):
            return
        if len(cats) == 1 and x is cats[0] and not any(tracer.track(t) is not None for t in tensors):
            carried = _carry_cat(name, tracer.cats[id(x)], x, args, kwargs, out)
        if carried is None:
            tracer.freeze(tensors, f"op '{name}' uses a concatenation")
        else:
            tracer.set(out, carried)
        return
    tracked = [t for t in tensors if tracer.track(t) is not None]
    if not tracked:
        return
    if name in LIKE:
        return
    if not isinstance(out, torch.Tensor):
        if name == "setitem" or any(isinstance(o, torch.Tensor) for o in tree_flatten(out)[0]):
            tracer.freeze(tracked, f"op '{name}' uses it")
        return
    x = args[0] if args and isinstance(args[0], torch.Tensor) else None
    src = tracer.track(x)
    result: Track | None = None
    if name in BINARY:
        _binary(tracer, tensors, out)
        return
    if src is not None and x is not None:
        channel_first = (src.dim, src.outer, src.inner) == (1, 1, 1) and out.shape[:2] == x.shape[:2]
        if (name in UNARY and out.shape == x.shape) or (name in POOLS and channel_first):
            result = src
        elif name in RESHAPES and out.numel() == x.numel():
            result = reshape_track(src, tuple(x.shape), tuple(out.shape))
        elif name in ("transpose", "swapaxes", "swapdims", "t", "permute"):
            dim = _moved(name, src, x, args, kwargs)
            result = Track(src.space, dim, src.outer, src.inner) if dim is not None else None
        elif name in REDUCTIONS:
            dim = _reduced(src, x, args, kwargs)
            result = Track(src.space, dim, src.outer, src.inner) if dim is not None else None
        elif name in ("softmax", "log_softmax"):
            axis = _arg(args, kwargs, 1, "dim")
            result = src if axis is not None and int(axis) % x.ndim != src.dim else None
        elif name == "pad":
            pad = _arg(args, kwargs, 1, "pad", ())
            result = src if src.dim < x.ndim - len(pad) // 2 else None
    if result is None or any(t is not x for t in tracked):
        tracer.freeze(tracked, f"op '{name}' uses it")
        if result is None:
            return
    tracer.set(out, result)
