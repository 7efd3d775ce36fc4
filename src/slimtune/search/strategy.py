"""The search strategy as plain functions over candidate records (dicts from ``search.json``):
rung epochs of successive halving, hopeless and feasible tests against the budget, the ranking that
decides which bases get more epochs, the cost of a candidate under an objective, and the final choice.
Nothing here trains or measures, so the same decisions replay exactly when a search is resumed."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from slimtune.search.pareto import pareto_front
from slimtune.search.space import SearchConfig

Record = dict[str, Any]
EPS = 1e-9


def rungs(config: SearchConfig) -> list[int]:
    """Epochs of each successive-halving rung: proxy, proxy·eta, … below ``full_epochs`` (which only the
    front gets); a single rung at ``full_epochs`` when the proxy already is the full recovery."""
    out, epochs = [], config.proxy_epochs
    while epochs < config.full_epochs:
        out.append(epochs)
        epochs *= config.eta
    return out or [config.full_epochs]


def points_drop(accuracy: float, reference: float) -> float:
    """Accuracy lost against the teacher, in percentage points (negative: better than the teacher)."""
    return 100.0 * (reference - accuracy)


def feasible(accuracy: float, reference: float, config: SearchConfig) -> bool:
    return points_drop(accuracy, reference) <= config.max_accuracy_drop + EPS


def hopeless(accuracy: float, reference: float, config: SearchConfig, *, epochs: int) -> bool:
    """More than ``hopeless_margin`` points below the budget, the margin widened for short proxies
    (× sqrt(full_epochs / epochs): 1 of 8 epochs allows 2.8× the margin), since recovery goes on."""
    margin = config.hopeless_margin * math.sqrt(config.full_epochs / max(1, epochs))
    return points_drop(accuracy, reference) > config.max_accuracy_drop + margin + EPS


def view_at(record: Record, epochs: float) -> Record | None:
    """``record`` as it stood after ``epochs`` of recovery (its latest evaluation up to then), or None:
    decisions are made on these views, so a resumed search replays them exactly."""
    done = [e for e in record["evaluations"] if e["epochs"] <= epochs]
    if not done or (record["status"] == "failed" and record.get("failed_at", 0) <= epochs):
        return None
    return {**record, "val_accuracy": done[-1]["val_accuracy"], "epochs": done[-1]["epochs"]}


def hopeless_at(record: Record, reference: float, config: SearchConfig, epochs: float) -> Record | None:
    """The evaluation (up to ``epochs``) at which ``record`` became hopeless, if it did."""
    for e in record["evaluations"]:
        if e["epochs"] <= epochs and hopeless(e["val_accuracy"], reference, config, epochs=e["epochs"]):
            return dict(e)
    return None


def cost(record: Record, objective: str) -> float:
    """Lower is better: measured ORT latency at batch 1 (the short proxy timing until the careful one
    exists), bytes of the deployed file, or MACs of one example."""
    if objective == "latency":
        measured = record.get("latency_ms") or {}
        value = measured.get("batch1", record.get("quick_latency_ms"))
    elif objective == "size":
        value = record.get("bytes")
    else:
        value = record.get("macs")
    return math.inf if value is None else float(value)


def useful(record: Record, reference: float, config: SearchConfig, teacher_cost: float) -> bool:
    """Within the accuracy budget and cheaper than the teacher itself on the objective."""
    ok = feasible(record["val_accuracy"], reference, config)
    return ok and cost(record, config.objective) < teacher_cost


def rank_bases(
    groups: Mapping[str, Sequence[Record]], reference: float, config: SearchConfig, teacher_cost: float
) -> list[str]:
    """Base ids, most promising first: bases with a useful candidate by that candidate's cost, then the
    others by their best accuracy."""

    def key(base_id: str) -> tuple[int, float, str]:
        recs = [r for r in groups[base_id] if r.get("val_accuracy") is not None]
        ok = [cost(r, config.objective) for r in recs if useful(r, reference, config, teacher_cost)]
        if ok:
            return 0, min(ok), base_id
        return 1, -max((r["val_accuracy"] for r in recs), default=0.0), base_id

    return sorted(groups, key=key)


def survivors(ranked: Sequence[str], eta: int) -> list[str]:
    """Successive halving: the best ``ceil(n / eta)`` go on to the next rung."""
    return list(ranked[: max(1, math.ceil(len(ranked) / eta))])


def front(records: Iterable[Record], objective: str) -> list[Record]:
    """The Pareto front (validation accuracy up, cost down) of the evaluated records."""
    recs = [r for r in records if r.get("val_accuracy") is not None]
    ids = set(pareto_front([(r["id"], r["val_accuracy"], cost(r, objective)) for r in recs]))
    return [r for r in recs if r["id"] in ids]


def full_order(records: Sequence[Record], reference: float, config: SearchConfig) -> list[str]:
    """The bases of the front ``records`` in the order they get their full recovery (which a time budget
    may cut short): first those not yet within the budget but within ``hopeless_margin`` of it, cheapest
    first (more epochs can change the outcome); then those already within it, cheapest first; the rest
    last, most accurate first."""
    best: dict[str, tuple[int, float, float]] = {}
    for r in records:
        drop, c = points_drop(r["val_accuracy"], reference), cost(r, config.objective)
        if drop <= config.max_accuracy_drop + EPS:
            key = (1, c, -r["val_accuracy"])
        elif drop <= config.max_accuracy_drop + config.hopeless_margin + EPS:
            key = (0, c, -r["val_accuracy"])
        else:
            key = (2, -r["val_accuracy"], c)
        best[r["base"]] = min(best.get(r["base"], key), key)
    return sorted(best, key=lambda b: (*best[b], b))


def choose(
    records: Sequence[Record], reference: float, config: SearchConfig, teacher_cost: float = math.inf
) -> tuple[Record | None, bool]:
    """The cheapest useful record (within budget, cheaper than the teacher; ties: the more accurate) and
    True; or, when none is useful, the most accurate one (ties: the cheaper) and False."""
    recs = [r for r in records if r.get("val_accuracy") is not None]
    ok = [r for r in recs if useful(r, reference, config, teacher_cost)]
    if ok:
        return min(ok, key=lambda r: (cost(r, config.objective), -r["val_accuracy"], r["id"])), True
    if not recs:
        return None, False
    return max(recs, key=lambda r: (r["val_accuracy"], -cost(r, config.objective), r["id"])), False


__all__ = [
    "choose",
    "cost",
    "feasible",
    "front",
    "full_order",
    "hopeless",
    "points_drop",
    "rank_bases",
    "rungs",
    "survivors",
    "useful",
]
