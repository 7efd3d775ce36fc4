"""Consistent views (function matching): each batch is augmented on the fly and the teacher labels that view."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from slimtune.data import DataSplits
from slimtune.distill import DistillationTask, KDConfig, TeacherCache, ViewsConfig, distill_, make_view
from slimtune.errors import ConfigError
from slimtune.models import build
from slimtune.train import TrainConfig, fit, predict


def test_view_shifts_mixes_and_stays_in_range() -> None:
    x = torch.rand(16, 1, 8, 8)
    y = torch.arange(16) % 10
    torch.manual_seed(0)
    view = make_view(x, y, ViewsConfig(max_shift=2, noise=0.1, mixup=1.0))
    torch.manual_seed(0)
    again = make_view(x, y, ViewsConfig(max_shift=2, noise=0.1, mixup=1.0))
    torch.testing.assert_close(view.x, again.x)  # seeded: the same views
    assert view.x.shape == x.shape and 0 < view.lam < 1
    assert float(view.x.min()) >= float(x.min()) and float(view.x.max()) <= float(x.max())
    assert torch.equal(view.y_a, y) and sorted(view.y_b.tolist()) == sorted(y.tolist())
    assert not torch.allclose(view.x, x)
    plain = make_view(x, y, ViewsConfig(max_shift=0, noise=0.0, mixup=0.0))
    assert torch.equal(plain.x, x) and plain.lam == 1.0


def test_mixup_mixes_the_label_term_and_the_teacher_sees_the_view() -> None:
    teacher, student = nn.Linear(4, 3), nn.Linear(4, 3)
    seen: list[torch.Tensor] = []
    teacher.register_forward_hook(lambda m, i, o: seen.append(i[0].clone()))
    x, y = torch.rand(8, 4), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    config = KDConfig(temperature=2.0, alpha=0.5)
    task = DistillationTask(teacher, config, views=ViewsConfig(mixup=1.0))
    torch.manual_seed(3)
    loss, _ = task.loss(student, x, y)
    torch.manual_seed(3)
    view = make_view(x, y, ViewsConfig(mixup=1.0))
    torch.testing.assert_close(seen[-1], view.x)  # the teacher labelled the student's view, not the raw batch
    with torch.no_grad():
        t = teacher(view.x)
    s = student(view.x)
    kl = F.kl_div(F.log_softmax(s / 2, 1), F.softmax(t / 2, 1), reduction="batchmean") * 4
    ce = view.lam * F.cross_entropy(s, view.y_a) + (1 - view.lam) * F.cross_entropy(s, view.y_b)
    torch.testing.assert_close(loss, 0.5 * ce + 0.5 * kl)


def test_distilling_on_views_trains_a_student_and_bypasses_the_cache(digits: DataSplits) -> None:
    torch.manual_seed(0)
    teacher = build("mlp", input_shape=digits.input_shape, num_classes=10, hidden=[64])
    fit(teacher, digits, config=TrainConfig(epochs=20, lr=3e-3, batch_size=32))
    cache = TeacherCache.build(teacher, digits.train.x)  # type: ignore[arg-type]
    torch.manual_seed(0)
    student = build("mlp", input_shape=digits.input_shape, num_classes=10, hidden=[16])
    distill_(
        student, teacher=teacher, data=digits, config=KDConfig(temperature=1.0, alpha=0.0),
        train=TrainConfig(epochs=20, lr=1e-2, batch_size=32), cache=cache, views=ViewsConfig(max_shift=0, mixup=0.2),
    )  # fmt: skip
    assert cache.hits == 0 and cache.misses == 0  # every view is new: the teacher ran live
    assert isinstance(digits.test.x, torch.Tensor)
    accuracy = float((predict(student, digits.test.x).argmax(1) == digits.test.y).float().mean())
    assert accuracy > 0.8  # 0.90 measured, chance 0.1; 8×8 digits are too small to shift


def test_views_reject_token_ids_and_bad_values() -> None:
    with pytest.raises(ConfigError, match="views augment float inputs"):
        make_view(torch.zeros(2, 5, dtype=torch.long), torch.zeros(2, dtype=torch.long), ViewsConfig())
    with pytest.raises(ConfigError, match=r"views.mixup must be >= 0"):
        ViewsConfig(mixup=-1)
