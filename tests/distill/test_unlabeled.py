"""Pseudo-labels from the teacher: confidence filtering, soft or hard labels, augmented pools."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from slimtune.data import DataSplits
from slimtune.distill import UnlabeledConfig, augment, concat_splits, pseudo_label, unlabeled_data
from slimtune.errors import ConfigError, DataError
from slimtune.models import build
from slimtune.testing.tiny import tiny
from slimtune.train import TrainConfig, fit, predict


@pytest.fixture(scope="module")
def teacher(digits: DataSplits) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build("mlp", input_shape=digits.input_shape, num_classes=10, hidden=[64])
    fit(model, digits, config=TrainConfig(epochs=10, lr=1e-2, batch_size=32))
    return model


@pytest.mark.parametrize("threshold", [0.0, 0.6, 0.9])
def test_min_confidence_keeps_exactly_the_confident_rows(
    teacher: torch.nn.Module, digits: DataSplits, threshold: float
) -> None:
    x = digits.train.x
    assert isinstance(x, torch.Tensor)
    probs = torch.softmax(predict(teacher, x), dim=1)
    confident = probs.max(1).values >= threshold
    split = pseudo_label(teacher, x, min_confidence=threshold)
    assert len(split) == int(confident.sum()) and 0 < len(split) <= len(x)
    assert torch.equal(split.x, x[confident])  # type: ignore[arg-type]
    assert torch.equal(split.y, probs.argmax(1)[confident]) and split.y.dtype == torch.long


def test_soft_labels_are_the_teacher_probabilities(teacher: torch.nn.Module, digits: DataSplits) -> None:
    x = digits.train.x
    assert isinstance(x, torch.Tensor)
    split = pseudo_label(teacher, x, min_confidence=0.5, soft=True)
    assert split.y.shape == (len(split), 10) and split.y.dtype == torch.float32
    torch.testing.assert_close(split.y.sum(1), torch.ones(len(split)))
    assert float(split.y.max(1).values.min()) >= 0.5
    data = DataSplits(**{**digits.__dict__, "train": split})
    student = build("mlp", input_shape=digits.input_shape, num_classes=10, hidden=[16])
    history = fit(student, data, config=TrainConfig(epochs=2, lr=1e-2)).history  # CE on probability targets
    assert history[-1]["train_loss"] < history[0]["train_loss"] or history[-1]["val_accuracy"] > 0.5


def test_impossible_threshold_is_one_clear_line(teacher: torch.nn.Module, digits: DataSplits) -> None:
    x = digits.train.x
    assert isinstance(x, torch.Tensor)
    with pytest.raises(DataError, match=r"no input reaches min_confidence 0.999.*lower min_confidence") as info:
        pseudo_label(teacher, x[:2] * 0, min_confidence=0.999)
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match=r"min_confidence must be in \[0, 1\)"):
        UnlabeledConfig(min_confidence=1.5)


def test_augment_shifts_and_noise_stay_in_range() -> None:
    x = torch.zeros(50, 1, 8, 8)
    x[:, :, 3:5, 3:5] = 1.0
    out = augment(x, copies=2, max_shift=2, noise=0.0, seed=0)
    assert out.shape == (100, 1, 8, 8) and float(out.min()) >= 0 and float(out.max()) <= 1
    assert torch.allclose(out.sum(dim=(1, 2, 3)), torch.full((100,), 4.0))  # a 2-pixel shift keeps the blob inside
    assert (out != x.repeat(2, 1, 1, 1)).flatten(1).any(1).float().mean() > 0.8  # most copies moved
    noisy = augment(torch.rand(10, 5), noise=0.1, seed=1)
    assert noisy.shape == (10, 5) and not torch.equal(noisy, augment(torch.rand(10, 5), noise=0.1, seed=2))
    assert torch.equal(augment(x, seed=3), augment(x, seed=3))


def test_unlabeled_data_from_train_and_augment(teacher: torch.nn.Module, digits: DataSplits) -> None:
    relabelled = unlabeled_data(teacher, digits, UnlabeledConfig(source="train", min_confidence=0.7))
    assert len(relabelled.train) < len(digits.train) and relabelled.val is digits.val
    augmented = unlabeled_data(teacher, digits, UnlabeledConfig(source="augment", min_confidence=0.7))
    n = len(digits.train)
    assert n < len(augmented.train) <= 2 * n
    assert torch.equal(augmented.train.y[:n], digits.train.y)  # the labelled split is kept first
    soft = unlabeled_data(teacher, digits, UnlabeledConfig(source="augment", soft=True, copies=2))
    assert soft.train.y.shape == (3 * n, 10)
    assert torch.equal(soft.train.y[:n].argmax(1), digits.train.y)  # true labels became one-hot


def test_text_augment_is_refused_but_train_works() -> None:
    model, data = tiny("transformer-small")
    with pytest.raises(ConfigError, match="for text use from: train"):
        unlabeled_data(model, data, UnlabeledConfig(source="augment"))
    assert len(unlabeled_data(model, data, UnlabeledConfig(source="train")).train) == len(data.train)


def test_concat_mixes_ids_and_probabilities(digits: DataSplits) -> None:
    a = digits.train.take(3)
    b = pseudo_label(build("mlp", input_shape=(1, 8, 8), num_classes=10, hidden=[4]), a.x, soft=True)  # type: ignore[arg-type]
    both = concat_splits(a, b, num_classes=10)
    assert both.y.shape == (6, 10) and torch.equal(both.y[:3].argmax(1), a.y)


def test_a_cache_makes_labelling_and_distilling_share_one_teacher_pass(
    teacher: torch.nn.Module, digits: DataSplits
) -> None:
    from slimtune.distill import TeacherCache

    x = digits.train.x
    assert isinstance(x, torch.Tensor)
    config = UnlabeledConfig(source="augment", copies=2, noise=0.1, seed=3)
    plain = unlabeled_data(teacher, digits, config)
    cache = TeacherCache.build(teacher, x)
    seen: list[int] = []
    hook = teacher.register_forward_hook(lambda m, args, out: seen.append(len(args[0])))
    try:
        shared = unlabeled_data(teacher, digits, config, cache=cache)
        assert sum(seen) == 2 * len(x)  # each augmented row once, the cached training rows never
        seen.clear()
        assert isinstance(shared.train.x, torch.Tensor)
        cache.logits_for(shared.train.x, teacher)  # what distill_(cache=cache) does per batch
        assert seen == []
    finally:
        hook.remove()
    assert torch.equal(shared.train.x, plain.train.x) and torch.equal(shared.train.y, plain.train.y)


def test_augmented_copies_can_keep_their_source_labels(teacher: torch.nn.Module, digits: DataSplits) -> None:
    config = UnlabeledConfig(source="augment", copies=2, labels="source")
    out = unlabeled_data(teacher, digits, config)
    n = len(digits.train)
    assert torch.equal(out.train.y, digits.train.y.repeat(3))  # copy k of row i carries row i's true label
    by_teacher = unlabeled_data(teacher, digits, UnlabeledConfig(source="augment", copies=2))
    assert torch.equal(out.train.x, by_teacher.train.x)  # the same copies, only the labels differ
    assert not torch.equal(out.train.y[n:], by_teacher.train.y[n:])  # the teacher is wrong on some copies
    with pytest.raises(ConfigError, match="use from: augment"):
        UnlabeledConfig(source="train", labels="source")
    with pytest.raises(ConfigError, match="drop min_confidence and soft"):
        UnlabeledConfig(source="augment", labels="source", min_confidence=0.5)


def test_a_pool_from_a_file_is_labelled_and_appended(
    teacher: torch.nn.Module, digits: DataSplits, tmp_path: Path
) -> None:
    import numpy as np

    assert isinstance(digits.test.x, torch.Tensor)
    pool = digits.test.x[:40]
    np.save(tmp_path / "pool.npy", pool.numpy())
    out = unlabeled_data(teacher, digits, UnlabeledConfig(source="file", path=str(tmp_path / "pool.npy")))
    n = len(digits.train)
    assert len(out.train) == n + 40 and torch.equal(out.train.y[:n], digits.train.y)
    assert torch.equal(out.train.x[n:], pool)
    assert torch.equal(out.train.y[n:], predict(teacher, pool).argmax(1))  # the teacher's labels
    np.savez(tmp_path / "pool.npz", x=pool.reshape(40, -1).numpy()[:, :10])
    expected = r"holds inputs of shape \[40, 10\]; expected \(N, " + ", ".join(map(str, digits.input_shape))
    with pytest.raises(DataError, match=expected) as info:
        unlabeled_data(teacher, digits, UnlabeledConfig(source="file", path=str(tmp_path / "pool.npz")))
    assert "\n" not in str(info.value)
    with pytest.raises(DataError, match="not found"):
        unlabeled_data(teacher, digits, UnlabeledConfig(source="file", path=str(tmp_path / "nope.npy")))
    with pytest.raises(ConfigError, match="from: file needs path"):
        UnlabeledConfig(source="file")
    with pytest.raises(ConfigError, match="path goes only with from: file"):
        UnlabeledConfig(source="train", path="pool.npy")
