"""Structured pruning through concatenations: each concatenated producer keeps its own group, and every
layer reading the concatenation (a follower BatchNorm, a conv, a Linear after flatten) is cut at that
producer's offset. Removing channels whose weights are zero must leave the outputs unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from slimtune.evaluate.macs import count_macs
from slimtune.export.onnx import export_onnx, parity
from slimtune.prune import StructuredPruneConfig, structured_prune
from slimtune.prune.structured.graph import build_groups


class Inception(nn.Module):
    """Two branches concatenated with a raw input channel (a part nothing can cut), a BatchNorm over the
    concatenation, a conv reading it, and a head reading a flattened map concatenated with pooled features."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(3, 6, 1)
        self.bn = nn.BatchNorm2d(15)
        self.c = nn.Conv2d(15, 10, 3, padding=1)
        self.fc = nn.Linear(10 * 4 * 4 + 15, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat([self.a(x), x[:, :1] * 1.0, self.b(x).relu()], 1)
        y = self.bn(y).relu()
        z = nn.functional.adaptive_avg_pool2d(self.c(y), 4).flatten(1)
        return self.fc(torch.cat([z, y.mean((2, 3))], dim=1))


def _silence(model: Inception) -> None:
    """Zero half of each branch's channels (weights, bias, BN scale, shift and mean), so L1 removes exactly those
    and they contributed nothing: the pruned model must compute the same function."""
    with torch.no_grad():
        for conv, lo in ((model.a, 0), (model.b, 8 + 1)):
            n = conv.out_channels
            gone = torch.arange(n // 2, n)
            conv.weight[gone] = 0
            conv.bias[gone] = 0
            for t in (model.bn.weight, model.bn.bias, model.bn.running_mean):
                t[lo + gone] = 0
        model.c.weight[5:] = 0
        model.c.bias[5:] = 0


def _model() -> Inception:
    torch.manual_seed(0)
    model = Inception().eval()
    with torch.no_grad():
        model.bn.running_var.uniform_(0.5, 2.0)
        model.bn.running_mean.normal_()
    return model


def test_every_concatenated_producer_is_its_own_group() -> None:
    model = _model()
    groups = {g.name: g for g in build_groups(model, torch.randn(2, 3, 8, 8))}
    assert not groups["a"].frozen and not groups["b"].frozen and not groups["c"].frozen
    assert {m.name for m in groups["a"].members} == {"a", "bn", "c", "fc"}
    assert {m.name for m in groups["c"].members} == {"c", "fc"}


def test_cutting_through_concatenations_keeps_the_function(tmp_path: Path) -> None:
    model, x = _model(), torch.randn(4, 3, 8, 8)
    _silence(model)
    before, macs = model(x), count_macs(model, x[:1])
    result = structured_prune(model, StructuredPruneConfig(ratio=0.5), example_inputs=x)
    assert result.groups == {("a", "channels"): (8, 4), ("b", "channels"): (6, 3), ("c", "channels"): (10, 5)}
    assert (model.bn.num_features, model.c.in_channels, model.fc.in_features) == (8, 8, 5 * 16 + 8)
    torch.testing.assert_close(model(x), before, rtol=1e-5, atol=1e-5)
    assert count_macs(model, x[:1]) < 0.6 * macs
    onnx = export_onnx(model, x[:1], tmp_path / "cat.onnx")
    assert parity(model, onnx, x)["max_abs_diff"] < 1e-4


def test_target_macs_through_a_concatenation_is_met() -> None:
    model, x = _model(), torch.randn(2, 3, 8, 8)
    full = count_macs(model, x[:1])
    structured_prune(model, StructuredPruneConfig(target_macs=0.5), example_inputs=x)
    assert count_macs(model, x[:1]) <= 0.5 * full
    assert model(x).shape == (2, 5)


class Stacked(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.a, self.b = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(3, 4, 3, padding=1)
        self.c = nn.Conv2d(4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c(torch.cat([self.a(x), self.b(x)], self.dim)).flatten(1)


@pytest.mark.parametrize("dim", [0, 2])
def test_cat_along_another_axis_freezes_its_inputs(dim: int) -> None:
    groups = {g.name: g for g in build_groups(Stacked(dim).eval(), torch.randn(2, 3, 6, 6))}
    assert groups["a"].frozen and groups["b"].frozen
