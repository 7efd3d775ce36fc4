"""``structured_prune``: remove layers, find the dependency groups, rank units, choose how many each group
keeps (a ratio, or the ratio that meets a MAC budget), and cut. The result is an ordinary smaller module."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from slimtune.data.core import DataSplits
from slimtune.errors import ConfigError, UnsupportedModelError
from slimtune.evaluate.macs import count_macs
from slimtune.prune.structured.config import StructuredPruneConfig
from slimtune.prune.structured.graph import Group, build_groups
from slimtune.prune.structured.handlers import unsupported
from slimtune.prune.structured.importance import taylor_saliency, unit_scores
from slimtune.prune.structured.layers import choose, find_blocks, remove_blocks
from slimtune.prune.structured.planning import apply_plan, fit_budget, plan
from slimtune.prune.structured.summary import Outcome, outcomes, record
from slimtune.prune.structured.summary import lines as summary_lines

log = logging.getLogger("slimtune.prune")


@dataclass
class StructuredResult:
    """What was removed: per group (name, target) → (units before, units kept), the removed blocks, the
    ratio used (found by bisection for ``target_macs``), and the groups left whole with the reason.
    ``outcomes``: every group, cut or whole, and why (``lines()`` for people, ``summary()`` for reports);
    ``macs``: (before, after) on one example."""

    groups: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)
    removed_layers: list[str] = field(default_factory=list)
    ratio: float = 0.0
    frozen: dict[str, str] = field(default_factory=dict)  # groups never cut, and why
    outcomes: list[Outcome] = field(default_factory=list)
    macs: tuple[int, int] | None = None
    config: StructuredPruneConfig | None = None
    latency: tuple[float, float] | None = None  # predicted ORT ms before/after (latency-aware planning)

    def lines(self) -> list[str]:
        return summary_lines(self, self.macs)

    def summary(self) -> dict[str, Any]:
        return record(self.config or StructuredPruneConfig(), self, self.macs)


def example_input(model: nn.Module, data: DataSplits | None) -> torch.Tensor:
    """A small input batch: the first training examples, else random inputs of the model spec's shape."""
    if data is not None and isinstance(data.train.x, torch.Tensor):
        return data.train.x[:4]
    spec = getattr(model, "slimtune_spec", None)
    if not isinstance(spec, dict) or "input_shape" not in spec:
        raise ConfigError(
            "structured pruning runs the model once to find coupled layers: pass data=... (or example_inputs), "
            "or build the model with slimtune.models.build so its spec gives the input shape"
        )
    shape = tuple(int(s) for s in spec["input_shape"])
    g = torch.Generator().manual_seed(0)
    embedding = next((m for m in model.modules() if isinstance(m, nn.Embedding)), None)
    if len(shape) == 1 and embedding is not None:  # token ids; 0 is padding
        return torch.randint(1, embedding.num_embeddings, (2, *shape), generator=g)
    return torch.randn((2, *shape), generator=g)


def check_exclude(model: nn.Module, exclude: tuple[str, ...]) -> None:
    names = [n for n, _ in model.named_modules() if n]
    for pattern in exclude:
        if not any(re.search(pattern, n) for n in names):
            raise ConfigError(
                f"exclude pattern {pattern!r} matches no module of {type(model).__name__}; "
                f"module names look like: {', '.join(names[:6])}"
            )


def prunable(groups: list[Group], config: StructuredPruneConfig) -> tuple[list[Group], dict[int, str]]:
    """Groups to cut: not frozen, of a requested target, no excluded member (those: id → the pattern); an
    unknown layer in one raises."""
    chosen, excluded = [], {}
    for g in groups:
        if g.frozen or g.target not in config.unit_targets:
            continue
        pattern = next((p for p in config.exclude for name in g.modules if re.search(p, name)), None)
        if pattern is not None:
            excluded[id(g)] = pattern
            continue
        if g.unknown:
            name, module = g.unknown[0]
            raise unsupported(name, module)
        chosen.append(g)
    return chosen, excluded


def structured_prune(
    model: nn.Module,
    config: StructuredPruneConfig,
    *,
    data: DataSplits | None = None,
    example_inputs: Any = None,
) -> StructuredResult:
    """Prune ``model`` in place by ``config``; ``example_inputs`` (else the data's first examples, else random
    inputs of the spec's shape) are run to trace the model and count MACs."""
    if config.importance == "taylor" and data is None:
        raise ConfigError(
            "importance 'taylor' needs training data for its gradients: pass data=... to prune_ "
            "(recipes do this), or use importance 'l1'"
        )
    check_exclude(model, config.exclude)
    x = example_inputs if example_inputs is not None else example_input(model, data)
    device = next(model.parameters(), torch.empty(0)).device
    x = x.to(device) if isinstance(x, torch.Tensor) else x
    one = x[:1] if isinstance(x, torch.Tensor) else x
    result = StructuredResult(config=config)
    full = count_macs(model, one)
    undo: Callable[[], None] | None = None
    if "layers" in config.targets:
        blocks = find_blocks(model, x, config.exclude)
        if not blocks:
            raise UnsupportedModelError(
                f"{type(model).__name__} has no removable layers (entries of a ModuleList/Sequential with "
                "parameters whose output has the input's shape); drop 'layers' from targets"
            )
        rng = torch.Generator().manual_seed(config.seed) if config.importance == "random" else None
        gone = choose(blocks, config.layers_ratio, model, random=rng)
        undo = remove_blocks(model, gone)
        result.removed_layers = [b.name for b in gone]
    if config.unit_targets:
        try:
            _prune_units(model, config, data, x, one, full, result)
        except Exception:
            if undo is not None:
                undo()  # a failed call leaves the model as it was
            raise
    result.macs = (full, count_macs(model, one))
    for line in result.lines():
        log.info("%s", line)
    return result


def _prune_units(
    model: nn.Module,
    config: StructuredPruneConfig,
    data: DataSplits | None,
    x: Any,
    one: Any,
    full: int,
    result: StructuredResult,
) -> None:
    every = build_groups(model, x)
    result.frozen = {g.name: g.frozen[0] for g in every if g.frozen}
    groups, excluded = prunable(every, config)
    if not groups:
        result.outcomes = outcomes(every, {}, excluded, set(), config, config.effective_ratio)
        if result.removed_layers:
            return
        whole = [o.line() for o in result.outcomes if o.target in config.unit_targets][:2]
        raise UnsupportedModelError(
            f"structured pruning found no {'/'.join(config.unit_targets)} to remove in {type(model).__name__} "
            "(every group is frozen, excluded or of another target" + (f"; {'; '.join(whole)})" if whole else ")")
        )
    saliency = None
    if config.importance == "taylor":
        assert data is not None
        saliency = taylor_saliency(model, data, batches=config.taylor_batches)
    gen = torch.Generator().manual_seed(config.seed)
    scores = [unit_scores(g, model, config.importance, saliency=saliency, generator=gen) for g in groups]
    scored = [(g, s) for g, s in zip(groups, scores) if s is not None]
    if not scored:
        raise ConfigError(
            f"importance '{config.importance}' applies to none of the groups of {type(model).__name__}"
            + (" (no BatchNorm follows a pruned layer); use importance 'l1'" if config.importance == "bn-scale" else "")
        )
    ratio = config.effective_ratio
    if config.target_latency is not None or config.latency_table is not None:
        chosen = _latency_plan(model, scored, config, full, one, result)
        ratio = 1 - sum(len(k) for _, k in chosen) / sum(g.units for g, _ in chosen)
    elif config.target_macs is not None:
        ratio, chosen = fit_budget(model, scored, config, full, one)
    else:
        chosen = plan(scored, ratio, config)
    apply_plan(model, chosen)
    result.ratio = ratio
    result.groups = {(g.name, g.target): (g.units, len(k)) for g, k in chosen}
    unscored = {id(g) for g, s in zip(groups, scores) if s is None}
    kept = {id(g): len(k) for g, k in chosen}
    result.outcomes = outcomes(every, kept, excluded, unscored, config, ratio)


def _latency_plan(
    model: nn.Module,
    scored: list[tuple[Group, torch.Tensor]],
    config: StructuredPruneConfig,
    full: int,
    one: Any,
    result: StructuredResult,
) -> list[tuple[Group, torch.Tensor]]:
    """Plan by the measured latency table: to ``target_latency`` of the predicted latency, or to ``target_macs``
    with units chosen by importance lost per millisecond saved."""
    from slimtune.prune.structured.latency import LatencyTable, measure_latency_table
    from slimtune.prune.structured.latency_plan import calibrate, greedy_plan, predictor
    from slimtune.prune.structured.planning import macs_counter

    if not isinstance(one, torch.Tensor):
        raise ConfigError("latency-aware pruning times the model on one input tensor; pass example_inputs as a tensor")
    if config.latency_table is not None:
        table = LatencyTable.load(config.latency_table)
        if (table.batch, table.threads) != (config.latency_batch, config.latency_threads):
            log.info("latency table %s was measured at batch %d, %d threads", config.latency_table, table.batch,
                     table.threads)  # fmt: skip
    else:
        steps = {m.name: config.multiple(g.target, g.units, g.unit) * g.unit for g, _ in scored for m in g.members}
        table = measure_latency_table(model, one, batch=config.latency_batch, threads=config.latency_threads,
                                      step=steps)  # fmt: skip
    groups = [g for g, _ in scored]
    if not table.calibration:
        calibrate(table, model, scored, config, one)
    latency = predictor(groups, table)
    before = latency([g.units for g in groups])
    if config.target_latency is not None:
        chosen = greedy_plan(scored, config, latency=latency, budget=config.target_latency * before)
    else:
        assert config.target_macs is not None
        chosen = greedy_plan(scored, config, latency=latency, budget=config.target_macs * full,
                             stop=macs_counter(model, groups, one), what="target_macs")  # fmt: skip
    result.latency = (before, latency([len(k) for _, k in chosen]))
    return chosen
