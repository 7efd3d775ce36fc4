"""Teacher-output cache: same losses as a live teacher, correct under shuffling, reused from disk."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from slimtune.data import DataSplits
from slimtune.distill import DistillationTask, KDConfig, TeacherCache, distill_
from slimtune.distill.cache import row_digests
from slimtune.models import build
from slimtune.train import TrainConfig, predict


def _teacher(digits: DataSplits) -> torch.nn.Module:
    return build("mlp", input_shape=digits.input_shape, num_classes=10, hidden=[32]).eval()


def test_cached_loss_equals_live_loss_on_shuffled_batches(digits: DataSplits) -> None:
    teacher = _teacher(digits)
    x, y = digits.train.x, digits.train.y
    assert isinstance(x, torch.Tensor)
    cache = TeacherCache.build(teacher, x)
    student = build("mlp", input_shape=digits.input_shape, num_classes=10, hidden=[8])
    live, cached = DistillationTask(teacher, KDConfig()), DistillationTask(teacher, KDConfig(), cache=cache)
    for seed in range(3):
        idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:64]
        a, b = live.loss(student, x[idx], y[idx])[0], cached.loss(student, x[idx], y[idx])[0]
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    assert cache.hits == 3 * 64 and cache.misses == 0


def test_unseen_rows_go_through_the_teacher(digits: DataSplits) -> None:
    teacher = _teacher(digits)
    x = digits.train.x
    assert isinstance(x, torch.Tensor)
    cache = TeacherCache.build(teacher, x[:100])
    mixed = torch.cat([x[90:100], x[200:205]])
    torch.testing.assert_close(cache.logits_for(mixed, teacher), predict(teacher, mixed), rtol=1e-5, atol=1e-6)
    assert (cache.hits, cache.misses) == (10, 5)


def test_identical_rows_share_a_key_and_distinct_rows_do_not() -> None:
    x = torch.tensor([[0.0, 1.0], [0.0, 1.0], [1.0, 0.0], [0.0, -0.0]])
    d = row_digests(x)
    assert d[0] == d[1] and len({d[0], d[2], d[3]}) == 3  # -0.0 differs bitwise from 0.0: a miss, still exact


def test_saved_cache_is_reused_only_for_the_same_teacher(digits: DataSplits, tmp_path: Path) -> None:
    teacher = _teacher(digits)
    x = digits.train.x
    assert isinstance(x, torch.Tensor)
    path = tmp_path / "teacher_logits.safetensors"
    first = TeacherCache.build(teacher, x, path=path)
    assert path.exists()
    again = TeacherCache.load(path)
    torch.testing.assert_close(again.logits, first.logits)
    assert again.digests == first.digests and again.teacher_fingerprint == first.teacher_fingerprint
    with torch.no_grad():
        next(teacher.parameters()).add_(1.0)
    rebuilt = TeacherCache.build(teacher, x, path=path)  # other weights: recomputed, not loaded
    assert rebuilt.teacher_fingerprint != first.teacher_fingerprint
    assert not torch.allclose(rebuilt.logits, first.logits)


def test_distill_with_cache_matches_without(digits: DataSplits, tmp_path: Path) -> None:
    teacher = _teacher(digits)
    results = []
    for cache in (False, tmp_path / "c.safetensors"):
        torch.manual_seed(0)
        student = build("mlp", input_shape=digits.input_shape, num_classes=10, hidden=[8])
        r = distill_(student, teacher=teacher, data=digits, train=TrainConfig(epochs=2, lr=1e-2), cache=cache)
        results.append([h["train_loss"] for h in r.history])
    assert results[0] == pytest.approx(results[1], rel=1e-5)


def test_extend_adds_only_new_rows(digits: DataSplits) -> None:
    teacher = _teacher(digits)
    x = digits.train.x
    assert isinstance(x, torch.Tensor)
    cache = TeacherCache.build(teacher, x[:50])
    cache.extend(teacher, torch.cat([x[40:60], x[55:60]]))
    assert len(cache) == 60
    torch.testing.assert_close(cache.logits_for(x[:60], teacher), predict(teacher, x[:60]), rtol=1e-5, atol=1e-6)
    assert cache.misses == 0
