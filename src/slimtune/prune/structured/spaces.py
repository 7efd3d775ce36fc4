"""Channel spaces: the units of a traced model that must be cut together (see ``trace.py``).

A ``Space`` is the output channels of one or more producers (coupled by an add), with every ``Member`` (a
module's tensors on that axis) cut with them; a ``Track`` says where a tensor carries a space, a ``CatTrack``
where it carries a concatenation of spaces. ``unit`` is how many channels are cut together: a head's size, or
a grouped conv's channels per group (``require_unit``), so a conv feeding a grouped conv loses whole groups.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from torch import nn

from slimtune.prune.structured.handlers import Cut


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

    def require_unit(self, n: int) -> bool:
        """Cut in blocks of ``n`` channels too (a grouped conv's groups): the unit becomes the least common
        multiple, unless it no longer divides the channels or the units are attention heads (their count is
        channels / head size). False when it cannot."""
        root = self.root()
        unit = math.lcm(root.unit, n)
        if unit == root.unit:
            return True
        if root.size % unit or any(t == "heads" for _, t in root.producers):
            return False
        root.unit = unit
        return True


def merge(a: Space, b: Space) -> Space:
    ra, rb = a.root(), b.root()
    if ra is rb:
        return ra
    if ra.size != rb.size or not (ra.require_unit(rb.unit) and rb.require_unit(ra.unit)):
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
