"""Dependency groups: units (channels, neurons, attention heads) that must be removed together, with every
tensor indexed by them, built from the traced channel spaces (``trace.py``) and layers' inner units."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from slimtune.prune.structured.trace import Member, Space, trace


@dataclass
class Group:
    """``size`` channels in units of ``unit`` (a head's size, else 1), cut together across ``members``."""

    name: str
    target: str
    size: int
    unit: int
    members: list[Member]
    frozen: list[str] = field(default_factory=list)
    unknown: list[tuple[str, nn.Module]] = field(default_factory=list)

    @property
    def units(self) -> int:
        return self.size // self.unit

    @property
    def modules(self) -> list[str]:
        return sorted({m.name for m in self.members} | {name for name, _ in self.unknown})

    def channels(self, keep_units: torch.Tensor) -> torch.Tensor:
        """Sorted channel indices of the kept units."""
        keep = keep_units.sort().values
        return (keep[:, None] * self.unit + torch.arange(self.unit)).flatten()

    def apply(self, model: nn.Module, keep_units: torch.Tensor) -> None:
        """Cut ``model`` (this group's module names) down to ``keep_units``."""
        chans = self.channels(keep_units)
        for m in self.members:
            offset, width = m.span(self.size)
            kept = (chans[:, None] * m.inner + torch.arange(m.inner)[None, :]).flatten() + offset
            if m.layout is not None:  # a part of a concatenation: the other parts' entries stay
                end = offset + self.size * m.inner
                kept = torch.cat([torch.arange(offset), kept, torch.arange(end, width)])
                m.layout.sizes[m.part] = len(chans) * m.inner
            idx = (torch.arange(m.outer)[:, None] * width + kept[None, :]).flatten()
            m.cut.apply(model.get_submodule(m.name), idx, self.unit)


def _dedupe(members: list[Member]) -> list[Member]:
    seen: dict[tuple[str, int, int, int, int, int], Member] = {}
    for m in members:
        seen.setdefault((m.name, id(m.cut), m.outer, m.inner, id(m.layout), m.part), m)
    return list(seen.values())


def _target(space: Space, attention_blocks: list[str]) -> str:
    targets = {t for _, t in space.producers}
    if "heads" in targets:
        return "heads"
    if "channels" in targets:
        return "channels"
    name = space.producers[0][0]
    if any(name.startswith(block + ".") for block in attention_blocks):
        return "ffn"
    return "neurons"


def _block(model: nn.Module, name: str) -> str:
    """The repeated layer holding ``name``: its closest ancestor that is an entry of a ModuleList/Sequential
    (an encoder layer), else its parent."""
    parts = name.split(".")
    for i in range(len(parts) - 1, 0, -1):
        if isinstance(model.get_submodule(".".join(parts[: i - 1])), nn.ModuleList | nn.Sequential):
            return ".".join(parts[:i])
    return ".".join(parts[:-1])


def build_groups(model: nn.Module, example: Any) -> list[Group]:
    """Every group of ``model``, prunable or frozen (``Group.frozen`` says why), in module order."""
    spaces, inner = trace(model, example)
    heads = [n for s in spaces for n, t in s.producers if t == "heads"]
    heads += [n for n, (_, units) in inner.items() if any(u.target == "heads" for u in units)]
    attention_blocks = [b for b in {_block(model, n) for n in heads} if b]  # Linear units in these are 'ffn'
    order = {name: i for i, (name, _) in enumerate(model.named_modules())}
    groups: list[Group] = []
    for space in spaces:
        if not space.producers:
            continue
        groups.append(
            Group(
                name=min((n for n, _ in space.producers), key=lambda n: order.get(n, len(order))),  # the first
                target=_target(space, attention_blocks),
                size=space.size,
                unit=space.unit,
                members=_dedupe(space.members),
                frozen=list(dict.fromkeys(space.frozen)),
                unknown=space.unknown,
            )
        )
    for name, (_, units) in inner.items():
        for u in units:
            members = [Member(name, u.produce), Member(name, u.consume)]
            groups.append(Group(name, u.target, u.size, u.unit, members))
    return sorted(groups, key=lambda g: order.get(g.name, len(order)))
