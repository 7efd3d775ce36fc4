"""Greedy latency-aware planning (HALP-style): starting from the whole model, remove one step of units at a time
(a group's channel block, its lowest-scoring units) from the group where the importance lost per millisecond saved
(predicted by the measured ``LatencyTable``) is lowest, until the target (a latency or a MAC budget) is met.
Scores are compared across groups relative to each group's mean, so a layer with large weights does not keep
everything."""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable

import torch
from torch import nn

from slimtune.errors import ConfigError
from slimtune.prune.structured.config import StructuredPruneConfig
from slimtune.prune.structured.graph import Group
from slimtune.prune.structured.latency import LatencyTable, time_model
from slimtune.prune.structured.planning import Plan, Scored, apply_plan, plan

log = logging.getLogger("slimtune.prune")
_IN = {"in_channels", "in_features"}
_OUT = {"out_channels", "out_features"}


def widths_of(groups: list[Group], kept: list[int], table: LatencyTable) -> dict[str, tuple[float, float]]:
    """(input, output) widths of every tabled layer when group ``i`` keeps ``kept[i]`` of its units: each cut
    axis shrinks by the group's kept fraction (a concatenation's reader by the kept share of the whole axis)."""
    scale = {n: [1.0, 1.0] for n in table.layers}
    cats: dict[tuple[str, int, int], tuple[list[int], dict[int, int]]] = {}
    for g, k in zip(groups, kept):
        for m in g.members:
            for attr in m.cut.attrs:
                owner = ".".join(filter(None, (m.name, attr.rpartition(".")[0])))
                leaf = attr.rpartition(".")[2]
                if owner not in scale:
                    continue
                for axis, names in ((0, _IN), (1, _OUT)):
                    if leaf not in names:
                        continue
                    if m.layout is None:
                        scale[owner][axis] *= k / g.units
                    else:
                        entry = cats.setdefault((owner, axis, id(m.layout)), (m.layout.sizes, {}))
                        entry[1][m.part] = k * g.unit * m.inner
    for (owner, axis, _), (sizes, parts) in cats.items():
        scale[owner][axis] *= sum(parts.get(i, n) for i, n in enumerate(sizes)) / sum(sizes)
    return {n: (c.full[0] * scale[n][0], c.full[1] * scale[n][1]) for n, c in table.layers.items()}


def predictor(groups: list[Group], table: LatencyTable) -> Callable[[list[int]], float]:
    return lambda kept: table.predict(widths_of(groups, kept, table))


def calibrate(
    table: LatencyTable,
    model: nn.Module,
    scored: Scored,
    config: StructuredPruneConfig,
    example: torch.Tensor,
    ratios: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75),
) -> None:
    """Fit the table's mapping to whole-model latency on copies of ``model`` pruned uniformly at ``ratios``
    (each exported and timed at the table's batch and threads)."""
    groups = [g for g, _ in scored]
    layouts = {id(m.layout): m.layout for g in groups for m in g.members if m.layout is not None}
    sizes = {k: list(v.sizes) for k, v in layouts.items()}  # cutting a copy rewrites the shared layouts
    points = []
    try:
        for ratio in ratios:
            chosen = plan(scored, ratio, config)
            layer_sum = table.layer_sum(widths_of(groups, [len(k) for _, k in chosen], table))
            pruned = copy.deepcopy(model)
            apply_plan(pruned, chosen)
            points.append((layer_sum, time_model(pruned, example, batch=table.batch, threads=table.threads)))
            for k, v in layouts.items():
                v.sizes[:] = sizes[k]
    finally:
        for k, v in layouts.items():
            v.sizes[:] = sizes[k]
    if not table.calibrate(points):
        fit = [(round(a, 3), round(b, 3)) for a, b in points]
        log.info("latency table: whole-model timings %s do not fit it (a loaded machine?); used uncalibrated", fit)


def greedy_plan(
    scored: Scored,
    config: StructuredPruneConfig,
    *,
    latency: Callable[[list[int]], float],
    budget: float,
    stop: Callable[[Plan], float] | None = None,
    what: str = "target_latency",
) -> Plan:
    """Remove units until ``stop(plan)`` (default: the predicted ``latency``) is at most ``budget``; each step
    takes the block of units whose removal loses the least relative importance per millisecond saved (when no
    step saves time, the least important block)."""
    groups = [g for g, _ in scored]
    order = [torch.sort(s, descending=True, stable=True).indices for _, s in scored]
    rel = []
    for _, s in scored:
        mean = float(s.float().abs().mean())
        rel.append(s.float().abs() / (mean if mean > 0 else 1.0))
    kept = [g.units for g in groups]

    def step_of(i: int) -> int:
        g = groups[i]
        multiple = config.multiple(g.target, g.units, g.unit)
        return multiple * max(1, round(g.units / 32 / multiple))

    def floor_of(i: int) -> int:
        g = groups[i]
        multiple = config.multiple(g.target, g.units, g.unit)
        return min(g.units, math.ceil(config.min_keep / multiple) * multiple)

    def as_plan(counts: list[int]) -> Plan:
        return [(g, order[i][:k].sort().values) for i, (g, k) in enumerate(zip(groups, counts))]

    def cost() -> float:
        return stop(as_plan(kept)) if stop is not None else latency(kept)

    while cost() > budget:
        now = latency(kept)
        best: tuple[float, float, int, int] | None = None  # (-saved per importance, importance, group, new count)
        for i in range(len(groups)):
            new = max(floor_of(i), math.ceil((kept[i] - step_of(i)) / step_of(i)) * step_of(i))
            if new >= kept[i]:
                continue
            lost = float(rel[i][order[i][new : kept[i]]].sum()) + 1e-9
            saved = now - latency([new if j == i else k for j, k in enumerate(kept)])
            key = (-saved / lost if saved > 1e-6 else math.inf, lost, i, new)
            if best is None or key < best:
                best = key
        if best is None:
            raise ConfigError(
                f"{what} is out of reach: every prunable group is down to min_keep; raise {what}, "
                "add targets or remove exclusions"
            )
        kept[best[2]] = best[3]
    return as_plan(kept)
