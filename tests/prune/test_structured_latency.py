"""Latency-aware structured pruning: the table's interpolation, widths predicted from a plan, the greedy planner
cutting where the table says time is saved, target_latency / target_macs with a table, save/load and bad input."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from slimtune.data import DataSplits
from slimtune.errors import ConfigError
from slimtune.evaluate.macs import count_macs
from slimtune.models import build
from slimtune.prune.structured.config import StructuredPruneConfig
from slimtune.prune.structured.core import prunable, structured_prune
from slimtune.prune.structured.graph import build_groups
from slimtune.prune.structured.importance import unit_scores
from slimtune.prune.structured.latency import LatencyTable, LayerCurve, layer_shapes, measure_latency_table
from slimtune.prune.structured.latency_plan import greedy_plan, predictor, widths_of
from slimtune.prune.structured.planning import apply_plan, plan


def resnet(digits: DataSplits) -> nn.Module:
    torch.manual_seed(0)
    return build("resnet-small", input_shape=digits.input_shape, num_classes=10)


def fake_table(model: nn.Module, x: torch.Tensor, cost: dict[str, float] | None = None) -> LatencyTable:
    """ms = cost[layer] (default 1) x cin x cout / 1000 on a grid of every width: a table without timing."""
    table = LatencyTable(batch=32, threads=1, model_ms=0.0)
    for name, (m, _) in layer_shapes(model, x).items():
        full = (m.in_features, m.out_features) if isinstance(m, nn.Linear) else (m.in_channels, m.out_channels)
        cins, couts = list(range(1, full[0] + 1)), list(range(1, full[1] + 1))
        k = (cost or {}).get(name, 1.0)
        ms = [[k * i * o / 1000 for o in couts] for i in cins]
        table.layers[name] = LayerCurve("linear" if isinstance(m, nn.Linear) else "conv", full, cins, couts, ms)
    total = table.layer_sum({})
    table.model_ms = total + 1.0
    assert table.calibrate([(0.0, 1.0), (total / 2, total / 2 + 1.0), (total, total + 1.0)])  # offset 1, scale 1
    return table


def scored_groups(model: nn.Module, x: torch.Tensor, config: StructuredPruneConfig) -> list:
    groups, _ = prunable(build_groups(model, x), config)
    gen = torch.Generator().manual_seed(0)
    return [(g, unit_scores(g, model, "l1", generator=gen)) for g in groups]


def test_curve_interpolates_between_grid_points() -> None:
    curve = LayerCurve("conv", (16, 16), [8, 16], [8, 16], [[1.0, 2.0], [3.0, 4.0]])
    assert curve.at(8, 8) == 1.0 and curve.at(16, 16) == 4.0
    assert curve.at(12, 12) == pytest.approx(2.5)
    assert curve.at(4, 4) == 1.0  # clamped below the grid
    dw = LayerCurve("depthwise", (16, 16), [8, 16], [8, 16], [[1.0], [3.0]])
    assert dw.at(12, 12) == pytest.approx(2.0)


def test_predicted_widths_match_the_pruned_model(digits: DataSplits) -> None:
    model = resnet(digits)
    x = digits.train.x[:2]
    config = StructuredPruneConfig(ratio=0.5, channel_round_to=1)
    scored = scored_groups(model, x, config)
    chosen = plan(scored, 0.5, config)
    table = fake_table(model, x)
    predicted = widths_of([g for g, _ in scored], [len(k) for _, k in chosen], table)
    pruned = copy.deepcopy(model)
    apply_plan(pruned, chosen)
    for name, (m, _) in layer_shapes(pruned, x).items():
        real = (m.in_features, m.out_features) if isinstance(m, nn.Linear) else (m.in_channels, m.out_channels)
        assert predicted[name] == pytest.approx(real), name
    assert any(predicted[n] != c.full for n, c in table.layers.items())


def test_greedy_cuts_where_the_table_says_time_goes(digits: DataSplits) -> None:
    model = resnet(digits)
    x = digits.train.x[:2]
    config = StructuredPruneConfig(target_latency=0.8, channel_round_to=1)
    scored = scored_groups(model, x, config)
    groups = [g for g, _ in scored]
    deep = {name: 50.0 for name in ("layers.2.conv1", "layers.2.conv2")}
    shallow = {name: 50.0 for name in ("layers.0.conv1", "layers.0.conv2")}
    # the residual channels (group stem.0) run through both shallow convs: cutting them saves in each
    for dear, cut, whole in ((deep, "layers.2.conv1", "layers.0.conv1"), (shallow, "stem.0", "layers.2.conv1")):
        table = fake_table(model, x, dear)
        latency = predictor(groups, table)
        before = latency([g.units for g in groups])
        chosen = greedy_plan(scored, config, latency=latency, budget=0.8 * before)
        assert latency([len(k) for _, k in chosen]) <= 0.8 * before
        kept = {g.name: len(k) / g.units for g, k in chosen}
        assert kept[cut] < 1.0 and kept[whole] == 1.0  # time is saved where the table says it goes


def test_target_latency_and_target_macs_with_a_table(digits: DataSplits, tmp_path: Path) -> None:
    model = resnet(digits)
    x = digits.train.x[:2]
    path = fake_table(model, x, {"layers.0.conv1": 20.0, "layers.0.conv2": 20.0}).save(tmp_path / "table.json")
    pruned = copy.deepcopy(model)
    result = structured_prune(pruned, StructuredPruneConfig(target_latency=0.5, latency_table=str(path)), data=digits)
    assert result.latency is not None and result.latency[1] <= 0.5 * result.latency[0]
    summary = result.summary()
    assert summary["target_latency"] == 0.5 and summary["latency_ms_predicted"]["after"] <= 0.5 * summary[
        "latency_ms_predicted"]["before"]  # fmt: skip
    assert "predicted ORT latency" in result.lines()[0]
    assert pruned(x).shape == model(x).shape
    by_macs = copy.deepcopy(model)
    structured_prune(by_macs, StructuredPruneConfig(target_macs=0.5, latency_table=str(path)), data=digits)
    assert count_macs(by_macs, x[:1]) <= 0.5 * count_macs(model, x[:1])


def test_table_round_trip_and_bad_input(digits: DataSplits, tmp_path: Path) -> None:
    model = resnet(digits)
    table = fake_table(model, digits.train.x[:2])
    again = LatencyTable.load(table.save(tmp_path / "t.json"))
    assert again.predict({}) == pytest.approx(table.predict({}))
    assert again.layers["fc"].full == table.layers["fc"].full
    with pytest.raises(ConfigError, match="does not exist"):
        LatencyTable.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ConfigError, match="not a slimtune latency table"):
        LatencyTable.load(tmp_path / "bad.json")
    with pytest.raises(ConfigError, match="not ratio and target_latency"):
        StructuredPruneConfig(ratio=0.5, target_latency=0.5)
    with pytest.raises(ConfigError, match="latency_table guides"):
        StructuredPruneConfig(latency_table="t.json")
    with pytest.raises(ConfigError, match="target_latency must be in"):
        StructuredPruneConfig(target_latency=1.5)


def test_calibration_is_kept_only_when_it_explains_the_timings() -> None:
    table = LatencyTable(
        batch=1, threads=1, model_ms=5.0, layers={"a": LayerCurve("linear", (4, 4), [4], [4], [[4.0]])}
    )
    assert table.predict({}) == pytest.approx(5.0)  # uncalibrated: offset = what the layers leave of model_ms
    assert table.calibrate([(1.0, 2.5), (2.0, 4.0), (4.0, 7.0)])  # 1 + 1.5 x
    assert (table.scale, table.offset) == (pytest.approx(1.5), pytest.approx(1.0))
    noisy = LatencyTable(batch=1, threads=1, model_ms=5.0, layers=table.layers)
    assert not noisy.calibrate([(1.0, 9.0), (2.0, 2.0), (4.0, 30.0)])  # nonsense from a loaded machine
    assert noisy.predict({}) == pytest.approx(5.0)


def test_measured_table_covers_every_layer(digits: DataSplits) -> None:
    torch.manual_seed(0)
    model = build("mlp", input_shape=digits.input_shape, num_classes=10, hidden=[32])
    table = measure_latency_table(model, digits.train.x[:2], batch=4, threads=1, step=8, budget_s=0.005, repeats=5)
    assert set(table.layers) == {n for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    for curve in table.layers.values():
        assert curve.cin[-1] == curve.full[0] and curve.cout[-1] == curve.full[1]
        assert all(ms > 0 for row in curve.ms for ms in row)
    assert table.model_ms > 0
