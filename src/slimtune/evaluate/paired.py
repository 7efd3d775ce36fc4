"""Speed decisions that survive a noisy machine: candidates are timed in rounds (every candidate and the
reference once per round, interleaved), compared by their **per-round ratios** (a load change hits the
whole round, so it cancels in the ratio), near ties are timed again until they separate or are declared
a tie (at most ``max_rounds``), and a tie goes to the candidate listed first (the caller lists the smaller
/ more faithful ones first). Every decision records the rounds it used and the spread of its ratios.

On a shared 2-core machine one search timed static int8 at 0.381 ms vs the teacher's 0.255 ms, a careful
benchmark 0.212 vs 0.240 ms (benchmarks/results/search_vs_peers.md): sequential medians flip; paired
ratios with a tie band do not."""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from slimtune.errors import ConfigError

Verdict = Literal["faster", "slower", "tie", "unsure"]
TimeRound = Callable[[Sequence[str]], Mapping[str, float]]  # keys → ms per call, all timed in one round


def _quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def ratios(rounds: Sequence[Mapping[str, float]], a: str, b: str) -> list[float]:
    """``a``'s time over ``b``'s in every round that timed both."""
    return [r[a] / r[b] for r in rounds if a in r and b in r and r[b] > 0]


def ratio_stats(values: Sequence[float]) -> dict[str, float]:
    """Median per-round ratio, its quartiles (the spread) and how many rounds it rests on."""
    if not values:
        return {"median": float("nan"), "low": float("nan"), "high": float("nan"), "rounds": 0}
    return {
        "median": statistics.median(values),
        "low": _quantile(values, 0.25),
        "high": _quantile(values, 0.75),
        "rounds": len(values),
    }


def verdict(values: Sequence[float], *, band: float) -> Verdict:
    """How ``a`` compares with ``b`` from the per-round ratios a/b: ``faster`` when three rounds in four
    say so and the median is more than ``band`` below 1, ``slower`` likewise, ``tie`` when the middle
    half of the ratios lies within 1 ± ``band``, else ``unsure`` (time more rounds)."""
    s = ratio_stats(values)
    if s["rounds"] == 0:
        return "unsure"
    if s["high"] < 1 and s["median"] < 1 - band:
        return "faster"
    if s["low"] > 1 and s["median"] > 1 + band:
        return "slower"
    if 1 - band <= s["low"] and s["high"] <= 1 + band:
        return "tie"
    return "unsure"


@dataclass
class Decision:
    """``winner``: the chosen key; ``ratio``: per key, its per-round ratio to the reference (median, low,
    high, rounds); ``ties``: keys judged as fast as the winner (it was listed before them);
    ``declared``: pairs still unsure after ``max_rounds``, declared ties; ``rounds``: rounds timed;
    ``times``: per key, its ms per call in every round that timed it; ``load``: the load average."""

    winner: str
    ratio: dict[str, dict[str, float]]
    ties: list[str] = field(default_factory=list)
    declared: list[str] = field(default_factory=list)
    rounds: int = 0
    load: dict[str, float] = field(default_factory=dict)
    times: dict[str, list[float]] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {"winner": self.winner, "ties": self.ties, "declared_ties": self.declared,
                "rounds": self.rounds, "ratio_to_reference": self.ratio, **self.load}  # fmt: skip


def _pick(keys: Sequence[str], rounds: Sequence[Mapping[str, float]], band: float) -> tuple[str, list, list]:
    """Walk ``keys`` in preference order; a later key replaces the current best only when it is
    ``faster``. Returns the best, the keys tied with it, the keys still unsure against it."""
    best = keys[0]
    for k in keys[1:]:
        if verdict(ratios(rounds, k, best), band=band) == "faster":
            best = k
    ties, unsure = [], []
    for k in keys:
        v = verdict(ratios(rounds, k, best), band=band) if k != best else "slower"
        if v in ("tie", "faster"):  # faster only in a non-transitive tangle: the preference order holds
            ties.append(k)
        elif v == "unsure":
            unsure.append(k)
    return best, ties, unsure


def machine_load() -> dict[str, float]:
    """The 1-minute load average per CPU while timing (``load_per_cpu`` > 1: others were competing)."""
    try:
        one = os.getloadavg()[0]
    except OSError:
        return {}
    return {"load_average": round(one, 2), "load_per_cpu": round(one / max(1, os.cpu_count() or 1), 2)}


def decide(
    keys: Sequence[str],
    time_round: TimeRound,
    *,
    reference: str,
    rounds: int = 15,
    max_rounds: int = 60,
    band: float = 0.03,
    also: Sequence[str] = (),
) -> Decision:
    """The fastest of ``keys`` (listed most preferred first: ties go to the earlier one), timed against
    ``reference`` in rounds of ``time_round``; ``rounds`` first, then more rounds of the still unsure keys
    (with the current best and the reference) until every pair separates or ``max_rounds`` are in.
    ``also``: keys timed in the first rounds only, for the record (their ratios are reported, not judged)."""
    if not keys:
        raise ConfigError("decide: no candidates to compare; pass at least one key")
    if rounds < 1 or max_rounds < rounds or not 0 <= band < 1:
        raise ConfigError(f"need 1 <= rounds <= max_rounds and 0 <= band < 1, got {rounds}, {max_rounds}, {band}")
    everyone = list(dict.fromkeys([reference, *keys, *also]))
    timed: list[Mapping[str, float]] = []
    load = machine_load()
    for r in range(rounds):
        timed.append(time_round(everyone[r % len(everyone) :] + everyone[: r % len(everyone)]))
    best, ties, unsure = _pick(keys, timed, band)
    while unsure and len(timed) < max_rounds:
        again = list(dict.fromkeys([reference, best, *unsure]))
        for r in range(min(rounds, max_rounds - len(timed))):
            timed.append(time_round(again[r % len(again) :] + again[: r % len(again)]))
        best, ties, unsure = _pick(keys, timed, band)
    after = machine_load()
    if load and after:
        load = {"load_average": max(load["load_average"], after["load_average"]),
                "load_per_cpu": max(load["load_per_cpu"], after["load_per_cpu"])}  # fmt: skip
    ratio = {k: ratio_stats(ratios(timed, k, reference)) for k in dict.fromkeys([*keys, *also])}
    times = {k: [r[k] for r in timed if k in r] for k in everyone}
    return Decision(best, ratio, ties + unsure, list(unsure), len(timed), load, times)


def loaded_warning(decision: Decision, *, spread: float = 0.25) -> str:
    """One line when the machine was busy while timing (load per CPU > 1, or the winner's ratio spread
    wider than ``spread``), else ''."""
    parts = []
    if decision.load.get("load_per_cpu", 0) > 1:
        parts.append(f"load average {decision.load['load_average']:g} on {os.cpu_count()} CPUs")
    s = decision.ratio.get(decision.winner, {})
    if s.get("rounds") and s["high"] - s["low"] > spread * s["median"]:
        parts.append(f"ratio spread {s['low']:.2f}–{s['high']:.2f}")
    return f"timed on a loaded machine ({', '.join(parts)}): latency ratios are less certain" if parts else ""
