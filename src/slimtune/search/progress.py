"""Progress of a search: one event (and one line) per evaluation: candidates measured of all, the candidate
leading so far, the time left. The leader is provisional — ranked on whatever recovery epochs each candidate
has had and on its quick timing — so the line labels it as such; the final pick re-times the Pareto front
together after full recovery, and the search's closing message names the leader when the pick differs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from slimtune.search import strategy
from slimtune.search.space import Base

if TYPE_CHECKING:
    from slimtune.search.runner import Search


@dataclass(frozen=True)
class ProgressEvent:
    """Sent after every new evaluation: candidates ``done`` of ``total``, the best so far, the time left."""

    done: int
    total: int
    evaluations: int
    base: str
    epochs: int
    best: str
    time_left_s: float | None
    line: str


Progress = Callable[[ProgressEvent], None]


LEADING = "leading so far (provisional)"
NOT_CHEAPER = {"latency": "not faster", "size": "not smaller", "macs": "no fewer MACs"}


def _why_not(best: dict[str, Any], search: Search) -> str:
    """Why the best so far does not meet the goal: over the accuracy budget, or within it but no cheaper
    than the model itself on the objective."""
    if strategy.feasible(best["val_accuracy"], search.reference, search.config):
        return f", within budget but {NOT_CHEAPER[search.config.objective]} than the model itself"
    return ", over budget"


def progress_event(search: Search, base: Base, epochs: int) -> ProgressEvent:
    """The event after ``base`` was evaluated at ``epochs``."""
    records = search.records.values()
    done = sum(1 for r in records if r["evaluations"] or r["status"] == "failed")
    best, met = strategy.choose(search.evaluated(), search.reference, search.config, search.teacher_cost)
    if best is None:
        best_text = "none yet"
    else:
        drop = strategy.points_drop(best["val_accuracy"], search.reference)
        best_text = f"{best['name']} {100 * best['val_accuracy']:.1f}% ({-drop:+.1f} pt)" + (
            "" if met else _why_not(best, search)
        )
    accs = ", ".join(
        f"{r['config']['precision']} {100 * r['val_accuracy']:.1f}%"
        for r in search.live(base)
        if r.get("val_accuracy") is not None
    )
    left = search.time_left()
    left_text = "no time limit" if left is None else f"{max(0.0, left):.0f} s left"
    line = (
        f"[{done}/{len(search.records)} candidates measured, evaluation {search.evaluations}] "
        f"{base.name} @ {epochs} ep: {accs or 'no live candidate'} | {LEADING}: {best_text} | {left_text}"
    )
    return ProgressEvent(done, len(search.records), search.evaluations, base.name, epochs, best_text, left, line)
