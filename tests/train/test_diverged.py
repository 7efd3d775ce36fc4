"""Training that turns NaN/inf stops with one line naming where (stage, epoch) and what to change."""

from __future__ import annotations

import copy

import pytest

from slimtune.data import DataSplits
from slimtune.errors import TrainingDivergedError
from slimtune.models import build
from slimtune.train import TrainConfig, fit


def test_a_nan_loss_stops_training_with_the_epoch_and_a_fix(digits: DataSplits) -> None:
    data = copy.deepcopy(digits)
    data.train.x[:, 0, 0, 0] = float("nan")  # every batch sees a NaN input
    model = build("mlp", input_shape=data.input_shape, num_classes=data.num_classes, hidden=[8])
    message = r"recover: the loss became nan in epoch 1 .*lower the learning rate"
    with pytest.raises(TrainingDivergedError, match=message):
        fit(model, data, config=TrainConfig(epochs=2), desc="recover", progress=False)
