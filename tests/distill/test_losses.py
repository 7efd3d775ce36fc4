from __future__ import annotations

import math

import pytest
import torch

from slimtune.data import DataSplits
from slimtune.distill import DistillationTask, KDConfig, kd_loss, soft_kd_loss
from slimtune.errors import ConfigError
from slimtune.models import build
from slimtune.train import TrainConfig, fit, predict


def test_soft_loss_matches_hand_computation() -> None:
    s = torch.tensor([[1.0, 2.0, 0.5]])
    t = torch.tensor([[2.0, 1.0, 0.0]])
    temp = 2.0
    ps = torch.softmax(s / temp, 1)[0].tolist()
    pt = torch.softmax(t / temp, 1)[0].tolist()
    kl = sum(p * math.log(p / q) for p, q in zip(pt, ps))
    assert soft_kd_loss(s, t, temp).item() == pytest.approx(temp**2 * kl, rel=1e-5)


def test_t_squared_scaling_and_alpha_mix() -> None:
    s, t, y = torch.randn(8, 5), torch.randn(8, 5), torch.randint(0, 5, (8,))
    kl4 = torch.nn.functional.kl_div(
        torch.log_softmax(s / 4, 1), torch.log_softmax(t / 4, 1), log_target=True, reduction="batchmean"
    )
    assert soft_kd_loss(s, t, 4.0).item() == pytest.approx(16 * kl4.item(), rel=1e-5)
    ce = torch.nn.functional.cross_entropy(s, y).item()
    mixed = kd_loss(s, t, y, KDConfig(temperature=4.0, alpha=0.25)).item()
    assert mixed == pytest.approx(0.25 * ce + 0.75 * 16 * kl4.item(), rel=1e-5)


def test_identical_logits_have_zero_soft_loss() -> None:
    s = torch.randn(4, 3)
    assert soft_kd_loss(s, s.clone(), 3.0).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize(("kwargs", "message"), [({"temperature": 0}, "temperature"), ({"alpha": 1.5}, "alpha")])
def test_bad_config(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        KDConfig(**kwargs)


def test_label_set_mismatch_is_clear(digits: DataSplits) -> None:
    teacher = build("mlp", input_shape=digits.input_shape, num_classes=10, hidden=[8])
    student = build("mlp", input_shape=digits.input_shape, num_classes=5, hidden=[8])
    task = DistillationTask(teacher, KDConfig())
    assert isinstance(digits.train.x, torch.Tensor)
    with pytest.raises(ConfigError, match="same label set"):
        task.loss(student, digits.train.x[:4], digits.train.y[:4])


def test_distilled_student_learns_from_teacher(digits: DataSplits) -> None:
    teacher = build("mlp", input_shape=digits.input_shape, num_classes=10, hidden=[128])
    fit(teacher, digits, config=TrainConfig(epochs=15, lr=1e-2, batch_size=32))
    student = build("mlp", input_shape=digits.input_shape, num_classes=10, hidden=[16])
    fit(
        student,
        digits,
        config=TrainConfig(epochs=15, lr=1e-2, batch_size=32),
        task=DistillationTask(teacher, KDConfig(alpha=0.0)),
    )
    assert isinstance(digits.test.x, torch.Tensor)
    agree = (predict(student, digits.test.x).argmax(1) == predict(teacher, digits.test.x).argmax(1)).float().mean()
    assert agree > 0.85
