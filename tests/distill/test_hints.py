"""Feature (FitNets) hints: hooked layers, learned projections that train, a clean student afterwards."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import pytest
import torch

from slimtune.data import DataSplits
from slimtune.distill import DistillationTask, DistillModel, FeatureKDConfig, KDConfig, distill_
from slimtune.distill.hints import FeatureTerm
from slimtune.errors import ConfigError
from slimtune.models import build, load_model, save_model
from slimtune.testing.tiny import tiny
from slimtune.train import TrainConfig, fit, predict


def _pair(digits: DataSplits) -> tuple[torch.nn.Module, torch.nn.Module]:
    teacher = build("mlp", input_shape=digits.input_shape, num_classes=10, hidden=[64, 32])
    student = build("mlp", input_shape=digits.input_shape, num_classes=10, hidden=[16])
    return teacher, student


def test_projection_is_trained_and_dropped_from_the_student(digits: DataSplits, tmp_path: Path) -> None:
    teacher, student = _pair(digits)
    fit(teacher, digits, config=TrainConfig(epochs=3, lr=1e-2))
    hint = FeatureKDConfig(pairs={"net.2": "net.4"})  # student ReLU (16) → teacher second ReLU (32)
    task = DistillationTask(teacher, KDConfig(), hints=[hint])
    assert isinstance(digits.train.x, torch.Tensor)
    wrapped = task.wrap(student, digits.train.x[:4])
    assert isinstance(wrapped, DistillModel)
    adapter = wrapped.terms[0].adapters[0]  # type: ignore[index]
    assert isinstance(adapter, torch.nn.Linear) and tuple(adapter.weight.shape) == (32, 16)
    before = adapter.weight.detach().clone()
    x, y = digits.train.x[:64], digits.train.y[:64]
    first = task.loss(wrapped, x, y)[0].item()
    fit(wrapped, digits, config=TrainConfig(epochs=3, lr=1e-2), task=task)
    assert not torch.equal(adapter.weight, before)  # the optimizer saw the projection
    assert task.loss(wrapped, x, y)[0].item() < first
    bare = wrapped.unwrap()
    assert bare is student and all(k.startswith("net.") for k in student.state_dict())
    assert not student._forward_hooks and not any(m._forward_hooks for m in student.modules())
    again = load_model(save_model(student, tmp_path / "s"))
    torch.testing.assert_close(predict(again, digits.test.x), predict(student, digits.test.x))  # type: ignore[arg-type]


def test_distill_verb_with_cosine_hint(digits: DataSplits) -> None:
    teacher, student = _pair(digits)
    result = distill_(
        student,
        teacher=teacher,
        data=digits,
        hints=[FeatureKDConfig(pairs={"net.1": "net.3"}, loss="cosine", weight=0.5)],
        train=TrainConfig(epochs=2, lr=1e-2),
    )
    assert len(result.history) == 2 and all(k.startswith("net.") for k in student.state_dict())
    assert not any(m._forward_hooks for m in teacher.modules())


def test_conv_feature_maps_get_a_1x1_projection() -> None:
    teacher, data = tiny("resnet-small")  # stem output (8, 8, 8)
    student = build("lenet5", input_shape=data.input_shape, num_classes=data.num_classes)
    task = DistillationTask(teacher, hints=[FeatureKDConfig(pairs={"features.2": "stem.2"})])
    assert isinstance(data.train.x, torch.Tensor)
    wrapped = task.wrap(student, data.train.x[:2])
    adapter = wrapped.terms[0].adapters[0]  # type: ignore[index,union-attr]
    assert isinstance(adapter, torch.nn.Conv2d) and (adapter.in_channels, adapter.out_channels) == (6, 8)
    loss, logits = task.loss(wrapped, data.train.x[:8], data.train.y[:8])
    assert logits.shape == (8, data.num_classes) and torch.isfinite(loss)


def test_unknown_layer_names_the_layer_and_near_matches(digits: DataSplits) -> None:
    teacher, student = _pair(digits)
    task = DistillationTask(teacher, hints=[FeatureKDConfig(pairs={"net.22": "net.4"})])
    assert isinstance(digits.train.x, torch.Tensor)
    with pytest.raises(ConfigError, match=r"student has no layer 'net.22'; near matches: net.2") as info:
        task.wrap(student, digits.train.x[:2])
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match=r"teacher has no layer 'nett.4'"):
        DistillationTask(teacher, hints=[FeatureKDConfig(pairs={"net.2": "nett.4"})]).wrap(student, digits.train.x[:2])


def test_hints_without_wrapping_and_bad_configs_are_clear(digits: DataSplits) -> None:
    teacher, student = _pair(digits)
    task = DistillationTask(teacher, hints=[FeatureKDConfig(pairs={"net.2": "net.4"})])
    assert isinstance(digits.train.x, torch.Tensor)
    with pytest.raises(ConfigError, match="distill_"):
        task.loss(student, digits.train.x[:4], digits.train.y[:4])
    with pytest.raises(ConfigError, match="give pairs"):
        FeatureKDConfig(pairs={})
    with pytest.raises(ConfigError, match=r"'huber' is not one of"):
        FeatureKDConfig.from_dict({"pairs": {"a": "b"}, "loss": "huber"})


def _feature_loss(s: Any, t: Any, loss: Literal["mse", "cosine"]) -> float:
    """The term's value for hooked outputs ``s`` (student) and ``t`` (teacher) of identity layers."""
    student, teacher = torch.nn.Sequential(torch.nn.Identity()), torch.nn.Sequential(torch.nn.Identity())
    xs, xt = torch.tensor(s), torch.tensor(t)
    term = FeatureTerm(FeatureKDConfig(pairs={"0": "0"}, loss=loss), student, teacher, xs)
    assert isinstance(term.adapters[0], torch.nn.Identity)  # same width: no projection
    term.capturing = True
    student(xs)
    term.after_student()
    teacher(xt)
    return float(term.loss())


def test_feature_losses_match_hand_computed_values() -> None:
    s, t = [[1.0, 2.0, 3.0], [0.0, -1.0, 2.0]], [[0.0, 2.0, 5.0], [1.0, 1.0, 1.0]]
    # MSE: squared differences 1, 0, 4 and 1, 4, 1 averaged over all 6 entries (a sum would be 11)
    assert _feature_loss(s, t, "mse") == pytest.approx(11 / 6, abs=1e-6)
    # cosine: 1 - s·t / (|s||t|) per row (the width is the last dim), averaged over the 2 rows
    rows = [
        1 - sum(a * b for a, b in zip(u, v)) / math.sqrt(sum(a * a for a in u) * sum(b * b for b in v))
        for u, v in zip(s, t)
    ]
    assert rows == pytest.approx([1 - 19 / math.sqrt(14 * 29), 1 - 1 / math.sqrt(5 * 3)])
    assert _feature_loss(s, t, "cosine") == pytest.approx(sum(rows) / 2, abs=1e-6)
    # an (N, C, H, W) map: cosine over the channels (dim 1) at each of the 2 positions, then the mean
    # position 0: (1, 0)·(1, 1), position 1: (0, 2)·(2, 0); over W instead it would be 1 - 1/√5 and 1
    s4, t4 = [[[[1.0, 0.0]], [[0.0, 2.0]]]], [[[[1.0, 2.0]], [[1.0, 0.0]]]]
    assert _feature_loss(s4, t4, "cosine") == pytest.approx(((1 - 1 / math.sqrt(2)) + 1) / 2, abs=1e-6)
