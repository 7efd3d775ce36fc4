"""distill_ freezes the teacher for the run only: afterwards it trains again (e.g. pruning a copy of the teacher
and recovering it by distillation from the original used to fail with "nothing to train")."""

from __future__ import annotations

import copy
import dataclasses

import torch

from slimtune.data import DataSplits
from slimtune.distill import KDConfig, distill_
from slimtune.models import build
from slimtune.train import TrainConfig, fit


def test_teacher_flags_and_mode_are_restored(digits: DataSplits) -> None:
    small = dataclasses.replace(digits, train=digits.train.take(64))
    torch.manual_seed(0)
    teacher = build("mlp", input_shape=digits.input_shape, num_classes=10, hidden=[16])
    first = next(teacher.parameters())
    first.requires_grad_(False)  # a user's own freezing is kept as it was
    teacher.train()
    student = build("mlp", input_shape=digits.input_shape, num_classes=10, hidden=[8])
    distill_(student, teacher=teacher, data=small, config=KDConfig(), train=TrainConfig(epochs=1), progress=False)
    assert teacher.training
    flags = [p.requires_grad for p in teacher.parameters()]
    assert flags[0] is False and all(flags[1:])
    before = [p.detach().clone() for p in teacher.parameters()]
    fit(copy.deepcopy(teacher), small, config=TrainConfig(epochs=1), progress=False)  # a copy trains
    assert all(torch.equal(a, b) for a, b in zip(before, teacher.parameters()))  # the teacher did not move
