"""How many units each group keeps: a ratio per group (or one global ranking), or, for ``target_macs``,
the smallest ratio that fits the MAC budget, with the MACs left under the budget spent on the best of
the removed units (so coarse groups, like 4 attention heads, do not make the target unreachable)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from slimtune.errors import ConfigError
from slimtune.evaluate.macs import count_macs_by_layer
from slimtune.prune.structured.config import StructuredPruneConfig
from slimtune.prune.structured.graph import Group
from slimtune.prune.structured.trace import Member

Scored = list[tuple[Group, torch.Tensor]]  # group, one score per unit
Plan = list[tuple[Group, torch.Tensor]]  # group, kept unit indices (sorted)


def _keep_count(group: Group, removed: int, config: StructuredPruneConfig) -> int:
    n, multiple = group.units, config.multiple(group.target, group.units, group.unit)
    keep = max(n - removed, min(config.min_keep, n))
    return min(n, math.ceil(keep / multiple) * multiple)


def _best(scores: torch.Tensor, n: int) -> torch.Tensor:
    return torch.sort(scores, descending=True, stable=True).indices[:n].sort().values


def plan(scored: Scored, ratio: float, config: StructuredPruneConfig) -> Plan:
    """The units each group keeps at ``ratio``: its best-scoring ones (ties: lower index first)."""
    removed = [math.floor(ratio * g.units + 1e-9) for g, _ in scored]
    if config.global_ranking:
        removed = [0] * len(scored)
        budget = math.floor(ratio * sum(g.units for g, _ in scored) + 1e-9)
        ranked = sorted((float(s[u]), i, u) for i, (_, s) in enumerate(scored) for u in range(len(s)))
        for _, i, _ in ranked:
            if budget == 0:
                break
            if removed[i] < scored[i][0].units - min(config.min_keep, scored[i][0].units):
                removed[i] += 1
                budget -= 1
    return [(g, _best(s, _keep_count(g, r, config))) for (g, s), r in zip(scored, removed)]


def apply_plan(model: nn.Module, chosen: Plan) -> None:
    for g, keep in chosen:
        if len(keep) < g.units:
            g.apply(model, keep)


def _owners(member: Member) -> set[str]:
    """Modules whose size a member's cut changes: the owners of its tensors and attributes."""
    paths = [*member.cut.params, *member.cut.attrs, *member.cut.unit_attrs]
    return {".".join(filter(None, (member.name, p.rpartition(".")[0]))) for p in paths}


def macs_counter(model: nn.Module, groups: list[Group], x: Any) -> Callable[[Plan], float]:
    """MACs of ``model`` cut by a plan, without cutting: each layer's MACs (counted once) scale with the kept
    fraction of every axis cut in it (a Linear's by in × out, an attention's matmuls by its heads)."""
    base = count_macs_by_layer(model, x)
    hits = [[o for m in g.members if m.layout is None for o in _owners(m) if o in base] for g in groups]
    parts = [[(o, m) for m in g.members if m.layout is not None for o in _owners(m) if o in base] for g in groups]

    def macs(chosen: Plan) -> float:
        scale = dict.fromkeys(base, 1.0)
        cats: dict[tuple[str, int], tuple[list[int], dict[int, int]]] = {}  # a layer reading a concatenation
        for (g, keep), names, reads in zip(chosen, hits, parts):
            for name in names:
                scale[name] *= len(keep) / g.units
            for name, m in reads:
                assert m.layout is not None
                cats.setdefault((name, id(m.layout)), (m.layout.sizes, {}))[1][m.part] = len(keep) * g.unit * m.inner
        for (name, _), (sizes, kept) in cats.items():  # scales with the kept share of the whole axis
            scale[name] *= sum(kept.get(i, n) for i, n in enumerate(sizes)) / sum(sizes)
        return sum(base[n] * scale[n] for n in base)

    return macs


def _top_up(scored: Scored, chosen: Plan, config: StructuredPruneConfig, budget: float, macs: Any) -> Plan:
    """Add back removed units, best score first and a group's multiple at a time, while the MACs (recounted
    for every addition: growing one group makes its neighbours' units dearer) fit the budget."""
    keeps = [set(k.tolist()) for _, k in chosen]
    orders = [torch.sort(s, descending=True, stable=True).indices.tolist() for _, s in scored]

    def next_units(i: int) -> list[int]:
        g = chosen[i][0]
        return [u for u in orders[i] if u not in keeps[i]][: config.multiple(g.target, g.units, g.unit)]

    def current(grow: int = -1, extra: tuple[int, ...] = ()) -> Plan:
        return [
            (g, torch.tensor(sorted(keeps[i] | set(extra) if i == grow else keeps[i])))
            for i, (g, _) in enumerate(chosen)
        ]

    full: set[int] = set()  # groups whose next units no longer fit: costs only rise as others grow, so they never will
    ranked = sorted(((float(s[u]), i, u) for i, (_, s) in enumerate(scored) for u in range(len(s))), reverse=True)
    for _, i, u in ranked:
        if i in full or u in keeps[i]:
            continue
        extra = tuple(next_units(i))
        if macs(current(i, extra)) <= budget:
            keeps[i] |= set(extra)
        else:
            full.add(i)
    return current()


def fit_budget(
    model: nn.Module, scored: Scored, config: StructuredPruneConfig, full: int, x: Any
) -> tuple[float, Plan]:
    """The smallest ratio whose pruned model keeps at most ``target_macs`` of the ``full`` MACs (bisection on
    pruned copies), and its plan topped up to spend what is left under the budget."""
    assert config.target_macs is not None
    budget = config.target_macs * full
    macs = macs_counter(model, [g for g, _ in scored], x)
    lo, hi = 0.0, 1 - 1e-9
    if macs(plan(scored, hi, config)) > budget:
        least = macs(plan(scored, hi, config)) / full
        raise ConfigError(
            f"target_macs {config.target_macs} is out of reach: keeping only min_keep units of every prunable "
            f"group leaves {least:.1%} of the MACs; raise target_macs, add targets or remove exclusions"
        )
    if macs(plan(scored, lo, config)) <= budget:
        return 0.0, plan(scored, lo, config)
    for _ in range(24):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if macs(plan(scored, mid, config)) <= budget else (mid, hi)
    return hi, _top_up(scored, plan(scored, hi, config), config, budget, macs)
