"""The search's decisions as plain functions: budget tests, halving, the Pareto front, the choice, options."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from slimtune.errors import ConfigError
from slimtune.search import SearchConfig, build_space, parse_duration
from slimtune.search.pareto import pareto_front
from slimtune.search.strategy import choose, cost, feasible, full_order, hopeless, rank_bases, rungs, survivors


def rec(id: str, acc: float, size: int, base: str = "b") -> dict[str, Any]:
    return {"id": id, "name": id, "base": base, "val_accuracy": acc, "bytes": size, "macs": size, "config": {}}


def test_rungs_grow_by_eta_below_the_full_recovery() -> None:
    assert rungs(SearchConfig(proxy_epochs=1, full_epochs=8, eta=2)) == [1, 2, 4]
    assert rungs(SearchConfig(proxy_epochs=2, full_epochs=9, eta=3)) == [2, 6]
    assert rungs(SearchConfig(proxy_epochs=3, full_epochs=3)) == [3]


def test_budget_tests_in_points() -> None:
    cfg = SearchConfig(max_accuracy_drop=1.0, hopeless_margin=5.0, full_epochs=4)
    assert feasible(0.95, 0.96, cfg) and not feasible(0.9499, 0.96, cfg)
    assert not hopeless(0.90, 0.96, cfg, epochs=4) and hopeless(0.89, 0.96, cfg, epochs=4)
    assert not hopeless(0.89, 0.96, cfg, epochs=1)  # a short proxy gets a wider margin (5 × sqrt(4))
    lossless = SearchConfig(max_accuracy_drop=0.0)
    assert feasible(0.96, 0.96, lossless) and not feasible(0.959, 0.96, lossless)


def test_pareto_front_keeps_only_undominated_points() -> None:
    points = [("a", 0.9, 10.0), ("b", 0.95, 20.0), ("c", 0.85, 15.0), ("d", 0.95, 20.0), ("e", 0.97, float("inf"))]
    assert pareto_front(points) == ["a", "b", "d"]


def test_choose_cheapest_within_budget_else_most_accurate() -> None:
    cfg = SearchConfig(max_accuracy_drop=1.0, objective="size")
    recs = [rec("small", 0.90, 10), rec("mid", 0.955, 50), rec("big", 0.97, 90)]
    chosen, met = choose(recs, 0.96, cfg, teacher_cost=100)
    assert met and chosen is not None and chosen["id"] == "mid"
    chosen, met = choose(recs, 0.96, cfg, teacher_cost=40)  # within budget but not cheaper than the teacher
    assert not met and chosen is not None and chosen["id"] == "big"
    chosen, met = choose(recs, 0.99, SearchConfig(max_accuracy_drop=0.0, objective="size"))
    assert not met and chosen is not None and chosen["id"] == "big"
    assert choose([], 0.9, cfg) == (None, False)


def test_halving_ranks_useful_bases_by_cost_then_the_rest_by_accuracy() -> None:
    cfg = SearchConfig(max_accuracy_drop=1.0, objective="macs")
    groups = {
        "slow-ok": [rec("x", 0.96, 80, "slow-ok")],
        "fast-ok": [rec("y", 0.955, 30, "fast-ok"), rec("y2", 0.5, 5, "fast-ok")],
        "bad": [rec("z", 0.80, 5, "bad")],
        "worse": [rec("w", 0.70, 5, "worse")],
    }
    ranked = rank_bases(groups, 0.96, cfg, teacher_cost=100)
    assert ranked == ["fast-ok", "slow-ok", "bad", "worse"]
    assert survivors(ranked, 2) == ["fast-ok", "slow-ok"] and survivors(ranked[:1], 3) == ["fast-ok"]


def test_full_recovery_goes_first_to_cheap_bases_near_the_budget() -> None:
    """Seen on resnet-small: prune-0.5 was 1.6 pt short after 2 epochs and 2x faster than the feasible
    prune-0.25, but the budget ran out while prune-0.25 got its full recovery first."""
    cfg = SearchConfig(max_accuracy_drop=1.0, objective="macs", hopeless_margin=5.0)
    front = [
        rec("p25", 0.915, 50, "prune-0.25"),  # within budget
        rec("p50", 0.8925, 25, "prune-0.5"),  # 1.6 pt short, cheap: can still make it
        rec("p50q", 0.891, 20, "prune-0.5"),
        rec("s50", 0.76, 10, "student-0.5"),  # 15 pt short
        rec("p75", 0.87, 15, "prune-0.75"),  # 3.9 pt short, cheaper still
    ]
    assert full_order(front, 0.909, cfg) == ["prune-0.75", "prune-0.5", "prune-0.25", "student-0.5"]


def test_latency_cost_prefers_the_careful_measurement() -> None:
    r = {"quick_latency_ms": 2.0}
    assert cost(r, "latency") == 2.0
    r["latency_ms"] = {"batch1": 1.5, "batch8": 3.0}
    assert cost(r, "latency") == 1.5 and cost({}, "size") == float("inf")


def test_space_has_stable_ids_and_every_combination() -> None:
    cfg = SearchConfig(prune_ratios=(0.5,), student_widths=(0.5,), sparsities=(0.8,), int8=("dynamic",))
    names = [c.name for c in build_space(cfg)]
    assert names == [
        "teacher+int8-dynamic", "prune-0.5", "prune-0.5+int8-dynamic", "student-0.5", "student-0.5+int8-dynamic",
        "sparse-0.8-4bit", "sparse-0.8-4bit+int8-dynamic",
    ]  # fmt: skip
    assert [c.id for c in build_space(cfg)] == [c.id for c in build_space(cfg)]
    assert len({c.id for c in build_space(cfg)}) == len(names)
    assert [c.name for c in build_space(SearchConfig(techniques=("prune",), prune_ratios=(0.25,)))] == ["prune-0.25"]
    composed = SearchConfig(techniques=("prune", "student"), prune_ratios=(0.5,), student_widths=(0.5,),
                            combine_ratios=(0.25, 0.5))  # fmt: skip
    assert [c.name for c in build_space(composed)] == ["prune-0.5", "student-0.5", "student-0.5-prune-0.25",
                                                       "student-0.5-prune-0.5"]  # fmt: skip
    assert [c.name for c in build_space(replace(composed, techniques=("student",)))] == ["student-0.5"]


def test_durations() -> None:
    assert parse_duration("30m") == 1800 and parse_duration("1.5h") == 5400 and parse_duration(90) == 90
    assert parse_duration("45s") == 45 and parse_duration("12") == 12 and parse_duration(None) is None


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"objective": "speed"}, r"objective: 'speed' is not one of 'latency', 'size', 'macs'"),
        ({"max_accuracy_drop": -1}, "max_accuracy_drop must be >= 0"),
        ({"time_budget": "soon"}, "time_budget must be a duration like 90s, 30m or 2h"),
        ({"time_budget": -5}, "time_budget must be positive"),
        ({"techniques": ["prune", "nas"]}, "unknown technique 'nas'"),
        ({"prune_ratios": [1.5]}, r"prune_ratios must be in \(0, 1\)"),
        ({"combine_ratios": [0]}, r"combine_ratios must be in \(0, 1\)"),
        ({"full_epochs": 0}, "full_epochs must be >= proxy_epochs"),
        ({"budget": 1}, "unknown key 'budget'"),
        ({"student_lr": 0}, "student_lr must be > 0"),
    ],
)
def test_bad_options_are_one_clear_config_error(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        SearchConfig.from_dict(options, where="search")
    assert "\n" not in str(info.value)


def test_direct_construction_is_checked_too() -> None:
    with pytest.raises(ConfigError, match="objective must be one of latency, size, macs, got 'speed'"):
        SearchConfig(objective="speed")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="max_accuracy_drop must be >= 0 points"):
        SearchConfig(max_accuracy_drop=-0.5)


def test_progress_says_why_the_best_so_far_is_not_chosen() -> None:
    from types import SimpleNamespace

    from slimtune.search.progress import _why_not

    search: Any = SimpleNamespace(reference=0.90, config=SearchConfig(max_accuracy_drop=1.0, objective="latency"))
    assert _why_not({"val_accuracy": 0.895}, search) == ", within budget but not faster than the model itself"
    assert _why_not({"val_accuracy": 0.85}, search) == ", over budget"


def test_students_distil_at_their_own_learning_rate(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    import slimtune.distill
    from slimtune.search import techniques
    from slimtune.search.space import Base

    seen: dict[str, float] = {}
    monkeypatch.setattr(slimtune.distill, "distill_", lambda model, **kw: seen.update(student=kw["train"].lr))
    monkeypatch.setattr(techniques, "fit", lambda model, data, **kw: seen.update(pruned=kw["config"].lr))
    config = SearchConfig(lr=5e-5, student_lr=1e-4)
    for kind in ("student", "prune"):
        base = Base(kind, {"width": 0.5} if kind == "student" else {"ratio": 0.5})
        techniques.train_base(None, base, None, None, epochs=1, config=config, cache=tmp_path)  # type: ignore[arg-type]
    assert seen == {"student": 1e-4, "pruned": 5e-5}
    seen.clear()
    techniques.train_base(
        None, Base("student", {"width": 0.5}), None, None, epochs=1, config=SearchConfig(lr=5e-5), cache=tmp_path
    )  # type: ignore[arg-type]
    assert seen == {"student": 5e-5}


def test_final_pick_names_the_provisional_leader_when_they_differ() -> None:
    from slimtune.search.finish import leader_note

    chosen = {"id": "a", "name": "prune-0.5 int8-dynamic"}
    assert leader_note(None, chosen) == "" and leader_note(dict(chosen), chosen) == ""
    note = leader_note({"id": "b", "name": "student-0.25 fp32"}, chosen)
    assert "provisional leader was student-0.25 fp32" in note and "re-times the front" in note
