from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch

from slimtune.config import Config
from slimtune.data import DataSplits
from slimtune.distill import (
    KD_LOSSES,
    DistillationTask,
    HardKDConfig,
    KDConfig,
    LogitKDConfig,
    SoftKDConfig,
    kd_loss,
    logit_mse,
    soft_kd_loss,
)
from slimtune.errors import ConfigError
from slimtune.models import build
from slimtune.train import TrainConfig, fit, predict

S = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]
T = [[2.0, 1.0, 0.0], [0.5, 0.5, 2.0]]
Y = [1, 2]


def softmax(z: list[float], temp: float = 1.0) -> list[float]:
    e = [math.exp(v / temp) for v in z]
    return [v / sum(e) for v in e]


def hand_kl(s: list[float], t: list[float], temp: float) -> float:
    ps, pt = softmax(s, temp), softmax(t, temp)
    return sum(p * math.log(p / q) for p, q in zip(pt, ps, strict=True))


def hand_ce(s: list[float], label: int) -> float:
    return -math.log(softmax(s)[label])


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def test_soft_loss_matches_hand_computation() -> None:
    expected = 2.0**2 * mean([hand_kl(s, t, 2.0) for s, t in zip(S, T, strict=True)])
    got = kd_loss(torch.tensor(S), torch.tensor(T), torch.tensor(Y), SoftKDConfig(temperature=2.0))
    assert got.item() == pytest.approx(expected, rel=1e-5)
    assert soft_kd_loss(torch.tensor(S), torch.tensor(T), 2.0).item() == pytest.approx(expected, rel=1e-5)


def test_hard_loss_is_cross_entropy_to_teacher_argmax() -> None:
    argmax = [max(range(3), key=lambda i, t=t: t[i]) for t in T]  # [0, 2]
    expected = mean([hand_ce(s, a) for s, a in zip(S, argmax, strict=True)])
    got = kd_loss(torch.tensor(S), torch.tensor(T), torch.tensor(Y), HardKDConfig())
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_mixed_loss_matches_hand_computation() -> None:
    alpha, temp = 0.25, 3.0
    ce = mean([hand_ce(s, y) for s, y in zip(S, Y, strict=True)])
    kl = mean([hand_kl(s, t, temp) for s, t in zip(S, T, strict=True)])
    got = kd_loss(torch.tensor(S), torch.tensor(T), torch.tensor(Y), KDConfig(temperature=temp, alpha=alpha))
    assert got.item() == pytest.approx(alpha * ce + (1 - alpha) * temp**2 * kl, rel=1e-5)


def test_t_squared_scaling_keeps_the_high_temperature_limit() -> None:
    """Hinton et al.: as T grows, T²·KL → Σ((s − s̄) − (t − t̄))² / (2C), independent of T. Without the
    T² factor the soft loss (and its gradient) would vanish like 1/T²."""
    s, t = S[0], T[0]
    cs = [v - mean(s) for v in s]
    ct = [v - mean(t) for v in t]
    limit = sum((a - b) ** 2 for a, b in zip(cs, ct, strict=True)) / (2 * len(s))
    for temp in (50.0, 200.0):
        got = soft_kd_loss(torch.tensor([s], dtype=torch.float64), torch.tensor([t], dtype=torch.float64), temp)
        assert got.item() == pytest.approx(limit, rel=2e-2)
    assert soft_kd_loss(torch.tensor([s]), torch.tensor([t]), 4.0).item() == pytest.approx(
        16 * hand_kl(s, t, 4.0), rel=1e-5
    )


def test_logit_loss_matches_hand_computation_and_is_the_soft_loss_limit() -> None:
    def centred_mse(s: list[float], t: list[float]) -> float:
        return mean([((a - mean(s)) - (b - mean(t))) ** 2 for a, b in zip(s, t, strict=True)])

    mse = mean([centred_mse(s, t) for s, t in zip(S, T, strict=True)])
    ce = mean([hand_ce(s, y) for s, y in zip(S, Y, strict=True)])
    args = (torch.tensor(S), torch.tensor(T), torch.tensor(Y))
    assert kd_loss(*args, LogitKDConfig()).item() == pytest.approx(mse, rel=1e-5)
    assert kd_loss(*args, LogitKDConfig(alpha=0.3)).item() == pytest.approx(0.3 * ce + 0.7 * mse, rel=1e-5)
    s64, t64 = torch.tensor(S, dtype=torch.float64), torch.tensor(T, dtype=torch.float64)
    assert soft_kd_loss(s64, t64, 500.0).item() == pytest.approx(0.5 * logit_mse(s64, t64).item(), rel=1e-2)
    shifted = torch.tensor(T) + torch.tensor([[5.0], [-3.0]])  # a per-example shift: the same probabilities
    assert logit_mse(shifted, torch.tensor(T)).item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ConfigError, match="alpha must be in"):
        LogitKDConfig(alpha=-0.1)


def test_identical_logits_have_zero_soft_loss() -> None:
    s = torch.randn(4, 3)
    assert soft_kd_loss(s, s.clone(), 3.0).item() == pytest.approx(0.0, abs=1e-6)


def test_soft_probability_labels_work_in_mixed_loss() -> None:
    probs = torch.tensor([softmax(t) for t in T])
    got = kd_loss(torch.tensor(S), torch.tensor(T), probs, KDConfig(alpha=1.0))
    expected = mean(
        [
            -sum(p * math.log(q) for p, q in zip(pr, softmax(s), strict=True))
            for s, pr in zip(S, probs.tolist(), strict=True)
        ]
    )
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_registry_names_and_unknown_config() -> None:
    assert {"soft", "hard", "mixed", "logits"} <= set(KD_LOSSES.names())

    @dataclass(frozen=True, kw_only=True)
    class Other(Config):
        pass

    with pytest.raises(ConfigError, match="register_kd_loss"):
        kd_loss(torch.tensor(S), torch.tensor(T), torch.tensor(Y), Other())
    with pytest.raises(ConfigError, match=r"unknown distillation loss 'sofft'.*did you mean 'soft'"):
        KD_LOSSES.get("sofft")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: KDConfig(temperature=0), "temperature must be > 0"),
        (lambda: KDConfig(alpha=1.5), "alpha must be in"),
        (lambda: SoftKDConfig(temperature=-1), "temperature must be > 0"),
    ],
)
def test_bad_config(make, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match=message) as info:
        make()
    assert "\n" not in str(info.value)


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
