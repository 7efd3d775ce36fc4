from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from slimtune.data import DataSplits
from slimtune.errors import ConfigError
from slimtune.models import build
from slimtune.train import Callback, LoopState, TrainConfig, fit, predict


def accuracy(model: torch.nn.Module, data: DataSplits) -> float:
    assert isinstance(data.test.x, torch.Tensor)
    return float((predict(model, data.test.x).argmax(1) == data.test.y).float().mean())


def test_training_learns_digits(digits: DataSplits) -> None:
    model = build("mlp", input_shape=digits.input_shape, num_classes=10, hidden=[64])
    before = accuracy(model, digits)
    result = fit(model, digits, config=TrainConfig(epochs=15, lr=1e-2, batch_size=32))
    assert accuracy(model, digits) > max(0.9, before + 0.5)
    assert len(result.history) == 15 and result.best_epoch >= 1


def test_same_seed_same_result(digits: DataSplits) -> None:
    outs = []
    for _ in range(2):
        torch.manual_seed(0)
        model = build("mlp", input_shape=digits.input_shape, num_classes=10, hidden=[32], dropout=0.2)
        fit(model, digits, config=TrainConfig(epochs=2, seed=3))
        outs.append(model.state_dict())
    for k in outs[0]:
        assert torch.equal(outs[0][k], outs[1][k])


def test_early_stopping_restores_best(digits: DataSplits) -> None:
    model = build("mlp", input_shape=digits.input_shape, num_classes=10, hidden=[16])
    result = fit(model, digits, config=TrainConfig(epochs=40, lr=0.5, optimizer="sgd", patience=2))
    assert len(result.history) < 40
    assert result.best_val_accuracy == max(h["val_accuracy"] for h in result.history)


def test_callbacks_see_every_step(digits: DataSplits) -> None:
    class Count(Callback):
        steps = 0

        def on_step_end(self, state: LoopState) -> None:
            Count.steps += 1

    model = build("mlp", input_shape=digits.input_shape, num_classes=10, hidden=[8])
    fit(model, digits, config=TrainConfig(epochs=2, batch_size=100), callbacks=[Count()])
    assert Count.steps == 2 * -(-len(digits.train) // 100)


def test_frozen_model_has_nothing_to_train(digits: DataSplits) -> None:
    model = build("mlp", input_shape=digits.input_shape, num_classes=10, hidden=[8])
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(ConfigError, match="nothing to train"):
        fit(model, digits, config=TrainConfig(epochs=1))


SCRIPT = textwrap.dedent(
    """
    import json, os, signal, sys, torch
    from slimtune.data import load
    from slimtune.models import build
    from slimtune.train import Callback, TrainConfig, fit, predict

    ckpt, kill_epoch, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]

    class KillMidEpoch(Callback):
        def on_step_end(self, state):
            if state.epoch == kill_epoch and state.step == 3:
                os.kill(os.getpid(), signal.SIGKILL)

    data = load("digits", seed=0, limit=400)
    torch.manual_seed(0)
    model = build("mlp", input_shape=data.input_shape, num_classes=10, hidden=[32], dropout=0.1)
    cfg = TrainConfig(epochs=4, batch_size=32, seed=5)
    fit(model, data, config=cfg, checkpoint_dir=ckpt, resume=True, callbacks=[KillMidEpoch()])
    logits = predict(model, data.test.x)
    acc = float((logits.argmax(1) == data.test.y).float().mean())
    json.dump({"acc": acc, "sum": float(logits.sum())}, open(out, "w"))
    """
)


def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def run(ckpt: str, kill_epoch: int, out: str) -> int:
        return subprocess.run([sys.executable, str(script), ckpt, str(kill_epoch), out], env=env).returncode

    assert run(str(tmp_path / "a"), -1, str(tmp_path / "a.json")) == 0
    killed = run(str(tmp_path / "b"), 2, str(tmp_path / "b.json"))
    assert killed == -9 and not (tmp_path / "b.json").exists()
    assert (tmp_path / "b" / "last.pt").exists()
    assert run(str(tmp_path / "b"), -1, str(tmp_path / "b.json")) == 0
    a, b = json.loads((tmp_path / "a.json").read_text()), json.loads((tmp_path / "b.json").read_text())
    assert a == b
