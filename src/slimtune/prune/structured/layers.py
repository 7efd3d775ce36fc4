"""Whole-layer removal: drop entries of an ``nn.ModuleList`` (encoder layers) or ``nn.Sequential``
(residual blocks) whose output has the input's shape, the ones that change their input least first.

A removable block is an entry with parameters and sub-layers, called once per forward, with output shape ==
input shape; every entry of a ModuleList must be of one type (so a saved model rebuilds: the list is simply
shorter). ModuleList entries are deleted; Sequential entries become ``nn.Identity`` (the positions of the
other blocks, and their names in a saved state dict, stay put). Each container keeps at least one entry.
The score of a block is ‖f(x) − x‖ / ‖x‖ on the example input: a residual block that barely changes its
input is the cheapest to lose.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from slimtune.prune.structured.handlers import handler_for
from slimtune.prune.structured.trace import call, first_tensor


@dataclass
class Block:
    container: str
    index: int
    score: float

    @property
    def name(self) -> str:
        return f"{self.container}.{self.index}" if self.container else str(self.index)


def _is_block(module: nn.Module) -> bool:
    has_params = next(module.parameters(), None) is not None
    return handler_for(module) is None and has_params and next(module.children(), None) is not None


def find_blocks(model: nn.Module, example: Any, exclude: tuple[str, ...] = ()) -> list[Block]:
    """Removable blocks of ``model`` with their scores (eval mode, no grad)."""
    entries: list[tuple[str, int, nn.Module]] = []
    for name, box in model.named_modules():
        if not isinstance(box, nn.ModuleList | nn.Sequential) or len(box) < 2:
            continue
        if isinstance(box, nn.ModuleList) and len({type(m) for m in box}) != 1:
            continue
        entries += [(name, i, m) for i, m in enumerate(box) if _is_block(m)]
    stats: dict[int, list[float]] = {}

    def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
        x = first_tensor(args) if first_tensor(args) is not None else first_tensor(kwargs)
        y = first_tensor(output)
        ok = x is not None and y is not None and x.shape == y.shape and x.is_floating_point()
        change = float((y - x).norm() / x.norm().clamp_min(1e-12)) if ok else math.nan  # type: ignore[operator,union-attr]
        stats.setdefault(id(module), []).append(change)

    handles = [m.register_forward_hook(hook, with_kwargs=True) for _, _, m in entries]
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            call(model, example)
    finally:
        for h in handles:
            h.remove()
        for m, training in modes:
            m.training = training
    blocks = []
    for container, index, module in entries:
        calls = stats.get(id(module), [])
        name = f"{container}.{index}" if container else str(index)
        inside = [n for n, _ in module.named_modules(prefix=name)]
        if len(calls) != 1 or math.isnan(calls[0]) or any(re.search(p, n) for p in exclude for n in inside):
            continue
        blocks.append(Block(container, index, calls[0]))
    return blocks


def removed_count(ratio: float, blocks: int) -> int:
    """``ratio · blocks`` rounded to the nearest count, and at least one block for any ``ratio`` > 0: a model
    with one removable block (resnet-small) would otherwise never lose it, at any ratio below 1."""
    return 0 if ratio <= 0 or blocks == 0 else max(1, math.floor(ratio * blocks + 0.5))


def choose(
    blocks: list[Block], ratio: float, model: nn.Module, *, random: torch.Generator | None = None
) -> list[Block]:
    """The ``removed_count(ratio, len(blocks))`` lowest-scoring blocks (random order with ``random``), keeping
    at least one entry in every container."""
    if random is not None:
        order = torch.randperm(len(blocks), generator=random).tolist()
        ranked = [blocks[i] for i in order]
    else:
        ranked = sorted(blocks, key=lambda b: (b.score, b.container, b.index))
    left = {b.container: len(model.get_submodule(b.container)) for b in blocks}  # type: ignore[arg-type]
    chosen: list[Block] = []
    for block in ranked:
        if len(chosen) >= removed_count(ratio, len(blocks)):
            break
        nested = any(c.name.startswith(block.name + ".") or block.name.startswith(c.name + ".") for c in chosen)
        if left[block.container] > 1 and not nested:
            chosen.append(block)
            left[block.container] -= 1
    return chosen


def remove_blocks(model: nn.Module, blocks: list[Block]) -> Callable[[], None]:
    """Delete the chosen ModuleList entries (highest index first) and replace Sequential ones by Identity;
    returns a function that puts them back."""
    undo: list[tuple[nn.Module, int, nn.Module]] = []
    for block in sorted(blocks, key=lambda b: (b.container, -b.index)):
        box = model.get_submodule(block.container)
        undo.append((box, block.index, box[block.index]))  # type: ignore[index]
        if isinstance(box, nn.ModuleList):
            del box[block.index]
        else:
            setattr(box, str(block.index), nn.Identity())

    def restore() -> None:
        for box, index, module in reversed(undo):
            if isinstance(box, nn.ModuleList):
                box.insert(index, module)
            else:
                setattr(box, str(index), module)

    return restore
