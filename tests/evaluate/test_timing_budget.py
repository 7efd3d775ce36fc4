"""Proportional measurement: latency is time-boxed per batch size (a slow model gets fewer rounds, not a
longer measurement), its spread is reported, and a loaded machine or a wide spread is a visible warning."""

from __future__ import annotations

import time

import torch

from slimtune.evaluate import Report, StageRow, measure_latency
from slimtune.recipe.measure import measure_torch, timing_warnings


def test_a_slow_model_gets_few_rounds_within_the_budget() -> None:
    calls: list[int] = []

    def slow(n: int) -> None:  # each call takes at least 20 ms (sleep never returns early)
        calls.append(n)
        time.sleep(0.02)

    result = measure_latency(slow, lambda n: n, batch_sizes=(1, 4), warmup=10, repeats=1000, budget_s=0.05,
                             min_repeats=3)  # fmt: skip
    # one warm-up call (a quarter of the budget is spent), then min_repeats calls (the budget is spent)
    assert calls == [1] * 4 + [4] * 4
    assert result["rounds"] == {"batch1": 3, "batch4": 3} and result["repeats"] == 3
    assert set(result["spread"]) == {"batch1", "batch4"} and all(v >= 0 for v in result["spread"].values())


def test_a_fast_model_stops_at_the_repeat_cap() -> None:
    calls: list[int] = []
    result = measure_latency(calls.append, lambda n: n, batch_sizes=(1,), warmup=2, repeats=40, budget_s=60)
    assert len(calls) == 42 and result["rounds"] == {"batch1": 40}


def test_loaded_machine_and_wide_spread_are_warnings() -> None:
    quiet = {"load_average": 0.4, "spread": {"batch1": 0.1, "batch32": 0.2}}
    assert timing_warnings("student", quiet, cores=2) == []
    loaded = timing_warnings("student", {**quiet, "load_average": 6.5}, cores=2)
    assert len(loaded) == 1 and "load average 6.5 on 2 cores" in loaded[0] and "unreliable" in loaded[0]
    noisy = timing_warnings("student", {**quiet, "spread": {"batch1": 0.1, "batch32": 1.7}}, cores=2)
    assert len(noisy) == 1 and "170%" in noisy[0] and "batch32" in noisy[0]


def test_measured_row_records_spread_rounds_and_load(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from slimtune.data import load
    from slimtune.models import build, save_model

    data = load("digits", seed=0, limit=100)
    torch.manual_seed(0)
    model = build("mlp", input_shape=data.input_shape, num_classes=data.num_classes, hidden=[8])
    row = measure_torch("m", model, data, artifact=save_model(model, tmp_path / "m"))
    assert set(row.extra["latency_spread"]) == {"batch1", "batch32"}
    assert all(n >= 3 for n in row.extra["latency_rounds"].values())
    assert "load_average" in row.extra
    table = Report(rows=[row]).table()
    assert " ±" in table.splitlines()[2]  # the latency cells show their spread


def test_report_latency_cell_shows_spread() -> None:
    row = StageRow(name="a", artifact=None, metrics={}, params=1, nonzero_params=1, bytes_on_disk=1, macs=1,
                   latency_ms={"batch1": 2.0, "batch32": 10.0}, extra={"latency_spread": {"batch1": 0.2}})  # fmt: skip
    cells = Report(rows=[row]).table().splitlines()[2]
    assert "| 2 ±10% | 10 |" in cells


def test_accuracy_warnings_come_first_and_loaded_machine_lines_merge() -> None:
    from slimtune.evaluate.report_warnings import add_warning, loaded_machine_warning

    rows = []
    for name, load in (("a", 5.0), ("b", 7.5)):
        row = StageRow(name=name, artifact=None, metrics={}, params=1, nonzero_params=1, bytes_on_disk=1, macs=1,
                       latency_ms={}, extra={"load_average": load})  # fmt: skip
        add_warning(row, loaded_machine_warning(name, load, 2))
        rows.append(row)
    add_warning(rows[1], "stage 'b' lost 30.00 points of accuracy vs 'a' (90.00% → 60.00%), more than warn_drop 2")
    lines = Report(rows=rows).warnings()
    assert lines[0].startswith("stage 'b' lost 30.00 points")
    assert lines[1:] == [
        "stages 'a', 'b' were timed on a loaded machine (load average up to 7.5): their latency columns are "
        "unreliable; rerun on an idle machine to compare speeds"
    ]
    single = Report(rows=rows[:1]).warnings()
    assert single == [loaded_machine_warning("a", 5.0, 2)]
