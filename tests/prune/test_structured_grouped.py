"""Grouped and depthwise convolutions prune in whole groups, through a channel concatenation, a
squeeze-excitation gate over it and a residual whose shortcut changes the width (a MobileNet/ResNeXt-style
custom CNN). Removing units whose every tensor is zero must leave the outputs unchanged."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from slimtune.evaluate.macs import count_macs
from slimtune.export.onnx import export_onnx, parity
from slimtune.prune import StructuredPruneConfig, prune_, structured_prune
from slimtune.prune.structured.graph import Group, build_groups


class SE(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(channels, channels // 4, 1), nn.Conv2d(channels // 4, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(x, 1)))))


class Net(nn.Module):
    """stem → [1×1 → depthwise 3×3] ‖ [1×1 → grouped 3×3 (4 groups of 8)] → cat → SE → 1×1 projection, plus
    a 1×1 shortcut from 16 to 32 channels → pool → Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.a1, self.a_bn1 = nn.Conv2d(16, 16, 1), nn.BatchNorm2d(16)
        self.a_dw, self.a_bn2 = nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.BatchNorm2d(16)
        self.b1, self.b_bn1 = nn.Conv2d(16, 32, 1), nn.BatchNorm2d(32)
        self.b_g, self.b_bn2 = nn.Conv2d(32, 32, 3, padding=1, groups=4), nn.BatchNorm2d(32)
        self.se = SE(48)
        self.proj, self.proj_bn = nn.Conv2d(48, 32, 1), nn.BatchNorm2d(32)
        self.short = nn.Conv2d(16, 32, 1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        a = self.a_bn2(self.a_dw(F.relu(self.a_bn1(self.a1(x)))))
        b = F.relu(self.b_bn2(self.b_g(F.relu(self.b_bn1(self.b1(x))))))
        y = self.se(torch.cat([a, b], 1))
        y = F.relu(self.proj_bn(self.proj(y)) + self.short(x))
        return self.fc(F.adaptive_avg_pool2d(y, 1).flatten(1))


def _net() -> tuple[Net, torch.Tensor]:
    torch.manual_seed(0)
    model = Net().eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_var.uniform_(0.5, 2.0)
                m.running_mean.normal_()
    return model, torch.randn(4, 3, 16, 16)


@torch.no_grad()
def _zero_units(model: nn.Module, group: Group, units: torch.Tensor) -> None:
    """Zero every tensor entry of ``units`` in every member of ``group``: those units then carry exact zeros
    and have the lowest L1 score, so removing them cannot change what the model computes."""
    chans = group.channels(units)
    for m in group.members:
        offset, width = m.span(group.size)
        entries = (chans[:, None] * m.inner + torch.arange(m.inner)).flatten() + offset
        idx = (torch.arange(m.outer)[:, None] * width + entries).flatten()
        module = model.get_submodule(m.name)
        for path, dim in m.cut.params.items():
            t = module.get_parameter(path) if path in dict(module.named_parameters()) else module.get_buffer(path)
            t.index_fill_(dim, idx, 0.0)


def test_grouped_convs_are_cut_in_whole_groups_through_the_concatenation() -> None:
    model, x = _net()
    groups = {g.name: g for g in build_groups(model, x)}
    assert (groups["b1"].units, groups["b1"].unit) == (4, 8) and not groups["b1"].frozen
    assert {m.name for m in groups["b1"].members} >= {"b1", "b_bn1", "b_g", "b_bn2", "se.fc1", "se.fc2", "proj"}
    assert not groups["a1"].frozen and "a_dw" in {m.name for m in groups["a1"].members}
    assert "se.fc2" not in groups  # the gate is cut with the concatenation's parts, not on its own
    structured_prune(model, StructuredPruneConfig(ratio=0.5, channel_round_to=1), example_inputs=x)
    assert (model.b_g.in_channels, model.b_g.out_channels, model.b_g.groups) == (16, 16, 2)
    assert (model.a_dw.in_channels, model.a_dw.groups) == (8, 8)
    assert (model.se.fc2.out_channels, model.proj.in_channels, model.stem[0].out_channels) == (24, 24, 8)
    assert model(x).shape == (4, 10)


def test_half_ratio_removes_at_least_40_percent_of_the_macs(tmp_path: Path) -> None:
    model, x = _net()
    macs = count_macs(model, x[:1])
    prune_(model, StructuredPruneConfig(ratio=0.5), example_inputs=x)
    assert count_macs(model, x[:1]) <= 0.6 * macs
    onnx = export_onnx(model, x[:1], tmp_path / "net.onnx")
    assert parity(model, onnx, x)["max_abs_diff"] < 1e-4


def test_removing_zero_importance_groups_keeps_the_outputs(tmp_path: Path) -> None:
    model, x = _net()
    config = StructuredPruneConfig(ratio=0.5, channel_round_to=1)
    for g in build_groups(model, x):
        if not g.frozen:
            _zero_units(model, g, torch.arange(g.units // 2, g.units))  # the upper half of every group
    before = model(x)
    result = structured_prune(model, config, example_inputs=x)
    assert result.groups[("b1", "channels")] == (4, 2)
    torch.testing.assert_close(model(x), before, rtol=1e-5, atol=1e-5)
    onnx = export_onnx(model, x[:1], tmp_path / "net.onnx")
    assert parity(model, onnx, x)["max_abs_diff"] < 1e-4


class Odd(nn.Module):
    """A grouped conv with more outputs than inputs per group, and a gate that is also an output."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.g = nn.Conv2d(3, 8, 1), nn.Conv2d(8, 16, 3, padding=1, groups=8)
        self.b, self.c = nn.Conv2d(3, 8, 1), nn.Conv2d(3, 8, 1)
        self.gate = nn.Conv2d(16, 16, 1)
        self.head = nn.Conv2d(32, 4, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.cat([self.b(x), self.c(x)], 1)
        s = torch.sigmoid(self.gate(y.mean((2, 3), keepdim=True)))
        return self.head(torch.cat([self.g(self.a(x)), y * s], 1)), s


def test_what_cannot_be_cut_in_groups_stays_whole() -> None:
    model, x = Odd().eval(), torch.randn(2, 3, 8, 8)
    groups = {g.name: g for g in build_groups(model, x)}
    why = "a grouped conv with 1 input and 2 output channels per group cannot be cut"
    assert groups["a"].frozen == [f"it passes through 'g' (Conv2d): {why}"]
    for name in ("b", "c", "gate"):  # the gate is also the model's output: it cannot follow the parts' cuts
        assert "the gate 'gate' it is multiplied by is used elsewhere" in groups[name].frozen


class InvertedResidual(nn.Module):
    """MobileNetV2/EfficientNet block (expand → depthwise → SE → project, plus the identity) and a
    ResNeXt-style grouped conv inside a residual: the residual stream is cut in the grouped conv's groups."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.expand, self.bn1 = nn.Conv2d(16, 64, 1), nn.BatchNorm2d(64)
        self.dw, self.bn2 = nn.Conv2d(64, 64, 3, padding=1, groups=64), nn.BatchNorm2d(64)
        self.se = SE(64)
        self.project, self.bn3 = nn.Conv2d(64, 16, 1), nn.BatchNorm2d(16)
        self.grouped = nn.Conv2d(16, 16, 3, padding=1, groups=4)
        self.head = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        y = F.relu6(self.bn2(self.dw(F.relu6(self.bn1(self.expand(x))))))
        x = x + self.bn3(self.project(self.se(y)))
        x = x + self.grouped(x).relu()
        return self.head(x.mean((2, 3)))


def test_inverted_residual_with_se_and_a_grouped_residual_keeps_the_function() -> None:
    torch.manual_seed(0)
    model, x = InvertedResidual().eval(), torch.randn(2, 3, 8, 8)
    groups = {g.name: g for g in build_groups(model, x)}
    assert (groups["stem"].units, groups["stem"].unit) == (4, 4)  # the residual stream, in the grouped conv's groups
    assert {"dw", "se.fc2", "project"} <= {m.name for m in groups["expand"].members}
    for g in groups.values():
        if not g.frozen:
            _zero_units(model, g, torch.arange(g.units // 2, g.units))
    before, macs = model(x), count_macs(model, x[:1])
    structured_prune(model, StructuredPruneConfig(ratio=0.5, channel_round_to=1), example_inputs=x)
    assert (model.grouped.groups, model.dw.groups, model.se.fc2.out_channels) == (2, 32, 32)
    torch.testing.assert_close(model(x), before, rtol=1e-5, atol=1e-5)
    assert count_macs(model, x[:1]) < 0.4 * macs


class GroupedOverCat(nn.Module):
    """A grouped conv (4 groups of 4) reading a concatenation of two 8-channel branches: each branch loses
    whole groups of 4, at its own offset."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(3, 8, 1)
        self.g, self.bn = nn.Conv2d(16, 16, 3, padding=1, groups=4), nn.BatchNorm2d(16)
        self.out = nn.Conv2d(16, 6, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.bn(self.g(torch.cat([self.a(x), self.b(x).relu()], 1))).relu()).mean((2, 3))


def test_a_grouped_conv_reading_a_concatenation_cuts_each_part_in_its_groups() -> None:
    torch.manual_seed(0)
    model, x = GroupedOverCat().eval(), torch.randn(2, 3, 8, 8)
    groups = {g.name: g for g in build_groups(model, x)}
    assert [(groups[n].units, groups[n].unit) for n in ("a", "b")] == [(2, 4), (2, 4)]
    for name in ("a", "b"):
        _zero_units(model, groups[name], torch.tensor([1]))
    before = model(x)
    structured_prune(model, StructuredPruneConfig(ratio=0.5, targets=("channels",)), example_inputs=x)
    assert (model.g.in_channels, model.g.groups, model.bn.num_features, model.out.in_channels) == (8, 2, 8, 8)
    torch.testing.assert_close(model(x), before, rtol=1e-5, atol=1e-5)
