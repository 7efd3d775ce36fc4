"""Paired per-round latency decisions on fake timings: a shared load that changes from round to round
(×0.5–×3, as seen on the 2-core machine) plus per-call noise. The paired decision picks the truly faster
candidate every time, where one-after-another medians are fooled; near ties are re-timed (bounded), and a
tie goes to the candidate listed first."""

from __future__ import annotations

import random
import statistics
from collections.abc import Mapping, Sequence

import pytest

from slimtune.errors import ConfigError
from slimtune.evaluate.paired import decide, loaded_warning, ratio_stats, verdict


class FakeMachine:
    """``costs`` ms per call; each round (a call of ``time_round``) runs under one load drawn per round,
    each measurement gets ``noise`` relative jitter."""

    def __init__(self, costs: Mapping[str, float], *, seed: int, noise: float = 0.05) -> None:
        self.costs, self.rng, self.noise, self.calls = dict(costs), random.Random(seed), noise, 0

    def load(self) -> float:
        return self.rng.choice([0.5, 1.0, 1.0, 1.5, 3.0])

    def time_round(self, keys: Sequence[str]) -> dict[str, float]:
        self.calls += 1
        load = self.load()
        return {k: self.costs[k] * load * (1 + self.rng.uniform(-self.noise, self.noise)) for k in keys}

    def sequential_medians(self, keys: Sequence[str], rounds: int) -> dict[str, float]:
        """Each model timed alone for ``rounds`` calls, one after another: each sees its own loads."""
        out = {}
        for k in keys:
            load = self.load()  # the load changes between models, not within one model's timing
            out[k] = statistics.median(self.costs[k] * load * (1 + self.rng.uniform(-self.noise, self.noise))
                                       for _ in range(rounds))  # fmt: skip
        return out


def test_paired_ratios_pick_the_truly_faster_candidate_under_noise() -> None:
    costs = {"fp32": 1.0, "static": 0.85, "dynamic": 0.95}
    naive_wrong = 0
    for seed in range(20):
        machine = FakeMachine(costs, seed=seed)
        d = decide(["dynamic", "static"], machine.time_round, reference="fp32", rounds=15)
        assert d.winner == "static" and d.ties == []
        assert d.ratio["static"]["median"] == pytest.approx(0.85, abs=0.05)
        assert d.ratio["static"]["low"] <= d.ratio["static"]["median"] <= d.ratio["static"]["high"]
        medians = machine.sequential_medians(["fp32", "dynamic", "static"], 15)
        naive_wrong += min(("dynamic", "static"), key=medians.__getitem__) != "static"
    assert naive_wrong >= 3  # the same noise fools one-after-another timing


def test_a_tie_goes_to_the_candidate_listed_first_every_time() -> None:
    costs = {"fp32": 1.0, "small": 0.80, "big": 0.79}  # 1% apart: inside the 3% band
    winners = {decide(["small", "big"], FakeMachine(costs, seed=s).time_round, reference="fp32").winner
               for s in range(15)}  # fmt: skip
    assert winners == {"small"}
    # outside the band the faster one wins, whatever the order
    costs["big"] = 0.70
    winners = {decide(["small", "big"], FakeMachine(costs, seed=s).time_round, reference="fp32").winner
               for s in range(15)}  # fmt: skip
    assert winners == {"big"}


def test_near_ties_are_timed_again_until_they_separate_or_the_rounds_run_out() -> None:
    costs = {"fp32": 1.0, "a": 0.90, "b": 0.86}  # 4.4% apart, per-call noise ±15%: 15 rounds do not settle it
    machine = FakeMachine(costs, seed=3, noise=0.15)
    d = decide(["a", "b"], machine.time_round, reference="fp32", rounds=15, max_rounds=200)
    assert d.rounds > 15 and d.winner == "b" and d.declared == []
    bounded = decide(["a", "b"], FakeMachine(costs, seed=3, noise=0.6).time_round, reference="fp32",
                     rounds=5, max_rounds=10)  # fmt: skip
    assert bounded.rounds <= 10
    if bounded.declared:  # still unsure at the bound: a declared tie, which goes to the first listed
        assert bounded.winner == "a" and bounded.declared == ["b"]


def test_verdict_and_stats() -> None:
    assert verdict([0.8, 0.82, 0.79, 0.85], band=0.03) == "faster"
    assert verdict([1.2, 1.25, 1.3], band=0.03) == "slower"
    assert verdict([0.99, 1.01, 1.0, 1.02], band=0.03) == "tie"
    assert verdict([0.7, 1.3, 0.8, 1.2], band=0.03) == "unsure"
    assert verdict([], band=0.03) == "unsure"
    s = ratio_stats([1.0, 2.0, 3.0, 4.0, 5.0])
    assert (s["median"], s["low"], s["high"], s["rounds"]) == (3.0, 2.0, 4.0, 5)


def test_a_loaded_machine_is_reported() -> None:
    d = decide(["a"], FakeMachine({"r": 1.0, "a": 0.5}, seed=0, noise=0.9).time_round, reference="r")
    d.load = {"load_average": 9.0, "load_per_cpu": 4.5}
    assert "loaded machine" in loaded_warning(d) and "load average 9" in loaded_warning(d)
    quiet = decide(["a"], FakeMachine({"r": 1.0, "a": 0.5}, seed=0, noise=0.0).time_round, reference="r")
    quiet.load = {"load_average": 0.5, "load_per_cpu": 0.25}
    assert loaded_warning(quiet) == ""


def test_bad_arguments_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="no candidates"):
        decide([], lambda keys: {}, reference="r")
    with pytest.raises(ConfigError, match="max_rounds"):
        decide(["a"], lambda keys: {}, reference="r", rounds=10, max_rounds=5)
