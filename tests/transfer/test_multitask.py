from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from slimtune.data import DataSplits, Split
from slimtune.errors import ConfigError, DataError
from slimtune.models import build, load_model, save_model
from slimtune.train import TrainConfig
from slimtune.train.multitask import LossWeighting, MultiTaskSource
from slimtune.transfer import (
    MultiTaskConfig,
    TaskSpec,
    evaluate_tasks,
    export_task,
    fit_multitask,
    multitask_model,
)


def parity_of(digits: DataSplits, *, keep: int | None = None) -> DataSplits:
    """A second task on the same images: is the digit even or odd (optionally fewer training examples)."""

    def relabel(split: Split, n: int | None = None) -> Split:
        return Split(split.x[:n], split.y[:n] % 2)

    return replace(
        digits,
        name="parity",
        train=relabel(digits.train, keep),
        val=relabel(digits.val),
        test=relabel(digits.test),
        num_classes=2,
        label_names=["even", "odd"],
    )


@pytest.mark.parametrize("weighting", ["fixed", "uncertainty"])
def test_multitask_training_improves_both_heads(digits: DataSplits, weighting: str, tmp_path: Path) -> None:
    tasks = [TaskSpec("digit", digits), TaskSpec("parity", parity_of(digits, keep=150), weight=0.5)]
    base = build("mlp", input_shape=digits.input_shape, num_classes=10, hidden=[64])
    model = multitask_model(base, tasks, weighting=weighting, reuse_head="digit")  # type: ignore[arg-type]
    initial = evaluate_tasks(model, tasks)
    cfg = MultiTaskConfig(weighting=weighting, train=TrainConfig(epochs=8, batch_size=32, lr=1e-2))  # type: ignore[arg-type]
    result = fit_multitask(model, tasks, cfg)
    for name in ("digit", "parity"):
        assert result.test[name]["loss"] < 0.5 * initial[name]["loss"], (name, initial, result.test)
    assert result.test["digit"]["accuracy"] > 0.85 and result.test["parity"]["accuracy"] > 0.85
    row = result.fit.history[-1]
    assert {"val_accuracy/digit", "val_accuracy/parity", "val_loss/digit", "val_loss/parity"} <= set(row)
    assert row["val_accuracy"] == pytest.approx((row["val_accuracy/digit"] + row["val_accuracy/parity"]) / 2)
    weights = result.task_weights
    if weighting == "fixed":
        assert weights == {"digit": 1.0, "parity": 0.5}
    else:
        assert weights["digit"] != 1.0 and weights["parity"] != 0.5  # the log-variances were learned

    # trunk + one head → an ordinary single-task model that saves and reloads
    single = export_task(model, "parity", label_names=["even", "odd"])
    assert single.slimtune_spec["num_classes"] == 2
    again = load_model(save_model(single, tmp_path / "parity"))
    assert isinstance(digits.test.x, torch.Tensor)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(digits.test.x), model(digits.test.x)["parity"])


def test_every_step_holds_every_task_and_smaller_tasks_cycle(digits: DataSplits) -> None:
    tasks = [TaskSpec("digit", digits), TaskSpec("parity", parity_of(digits, keep=50))]
    source = MultiTaskSource(tasks)
    cfg = TrainConfig(batch_size=40, seed=3)
    steps = source.steps_per_epoch(cfg, 1)
    assert steps == -(-len(digits.train) // 40)
    batches = list(source.batches(cfg, 0, 0, 1))
    assert len(batches) == steps
    for x, y, n in batches:
        assert len(x) == len(y) == n and set(y[:, 0].tolist()) == {0, 1}
    parity_rows = sum(int((y[:, 0] == 1).sum()) for _, y, _ in batches)
    assert parity_rows > 50  # the 50 parity examples went round more than once
    shards = [list(source.batches(cfg, 0, rank, 2)) for rank in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == source.steps_per_epoch(cfg, 2)
    for (_, y0, _), (_, y1, _) in zip(*shards):
        assert (y0[:, 0] == 1).sum() == (y1[:, 0] == 1).sum()  # equal shares of every task on every rank


def test_uncertainty_weighting_is_kendall() -> None:
    w = LossWeighting([1.0, 2.0], learned=True)
    assert w.log_vars is not None
    with torch.no_grad():
        w.log_vars.copy_(torch.tensor([0.0, 1.0]))
    losses = torch.tensor([0.5, 3.0])
    expected = 1.0 * 0.5 + 2.0 * (torch.exp(torch.tensor(-1.0)) * 3.0 + 0.5)
    torch.testing.assert_close(w(losses), expected)
    assert LossWeighting([1.0, 2.0])(losses).item() == pytest.approx(6.5)


def test_bad_task_setups(digits: DataSplits) -> None:
    with pytest.raises(ConfigError, match="unique"):
        MultiTaskSource([TaskSpec("a", digits), TaskSpec("a", digits)])
    flat = replace(digits, train=Split(digits.train.x.flatten(1), digits.train.y))  # type: ignore[union-attr]
    with pytest.raises(DataError, match="one shape"):
        MultiTaskSource([TaskSpec("a", digits), TaskSpec("b", flat)])
    with pytest.raises(ConfigError, match="contain no"):
        TaskSpec("a.b", digits)
    base = build("mlp", input_shape=digits.input_shape, num_classes=10, hidden=[8])
    model = multitask_model(base, [TaskSpec("a", digits)])
    with pytest.raises(ConfigError, match="weighting"):
        fit_multitask(model, [TaskSpec("a", digits)], MultiTaskConfig(weighting="uncertainty"))
    with pytest.raises(ConfigError, match="no task 'b'"):
        export_task(model, "b")
