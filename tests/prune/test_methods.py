"""Random and movement pruning, and the contract every unstructured method shares (configs, data/train)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from slimtune.data import DataSplits
from slimtune.errors import ConfigError
from slimtune.models import build
from slimtune.prune import (
    PRUNERS,
    GradualPruneConfig,
    IterativePruneConfig,
    L1SparsityConfig,
    MagnitudePruneConfig,
    MaskCallback,
    MovementPruneConfig,
    MovementScoreCallback,
    RandomPruneConfig,
    magnitude_masks,
    masks_from_zeros,
    prunable_weights,
    prune_,
)
from slimtune.train import Callback, LoopState, TrainConfig, fit, predict

TRAIN = TrainConfig(epochs=3, lr=1e-2)


def zero_fraction(model: nn.Module, exclude: tuple[str, ...] = ()) -> float:
    weights = prunable_weights(model, exclude)
    return sum(int((w == 0).sum()) for w in weights.values()) / sum(w.numel() for w in weights.values())


def accuracy(model: nn.Module, data: DataSplits) -> float:
    assert isinstance(data.test.x, torch.Tensor)
    return float((predict(model, data.test.x).argmax(1) == data.test.y).float().mean())


@pytest.fixture(scope="module")
def trained(digits: DataSplits) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = build("mlp", input_shape=digits.input_shape, num_classes=10, hidden=[64])
    fit(model, digits, config=TrainConfig(epochs=8, lr=1e-2))
    return model.state_dict()


def mlp(digits: DataSplits, state: dict[str, torch.Tensor]) -> nn.Module:
    model = build("mlp", input_shape=digits.input_shape, num_classes=10, hidden=[64])
    model.load_state_dict(state)
    return model


def test_every_method_is_registered() -> None:
    assert {"magnitude", "random", "movement", "gradual", "iterative", "l1"} <= set(PRUNERS)
    cfg = PRUNERS.get("movement").from_dict({"sparsity": 0.5, "criterion": "least-change"})
    assert cfg == MovementPruneConfig(sparsity=0.5, criterion="least-change")


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_random_reaches_target_and_is_seeded(scope: str) -> None:
    models = [build("lenet5", input_shape=(1, 8, 8), num_classes=10) for _ in range(3)]
    for model, seed in zip(models, (0, 0, 1)):
        prune_(model, RandomPruneConfig(sparsity=0.7, scope=scope, seed=seed))  # type: ignore[arg-type]
        assert abs(zero_fraction(model) - 0.7) < 0.01
    zeros = [[w == 0 for w in prunable_weights(m).values()] for m in models]
    assert all(torch.equal(a, b) for a, b in zip(zeros[0], zeros[1]))
    assert not all(torch.equal(a, b) for a, b in zip(zeros[0], zeros[2]))
    if scope == "layer":
        for w in prunable_weights(models[0]).values():
            assert abs(float((w == 0).float().mean()) - 0.7) < 0.05


def test_random_honours_exclude() -> None:
    model = build("lenet5", input_shape=(1, 8, 8), num_classes=10)
    prune_(model, RandomPruneConfig(sparsity=0.9, exclude=(r"^features\.",)))
    assert abs(zero_fraction(model, (r"^features\.",)) - 0.9) < 0.01
    assert all(bool((m.weight != 0).all()) for m in model.features if isinstance(m, nn.Conv2d))


@pytest.mark.parametrize(("criterion", "floor"), [("movement", 0.85), ("least-change", 0.75)])
def test_movement_reaches_target_differs_from_magnitude_and_recovers(
    digits: DataSplits, trained: dict[str, torch.Tensor], criterion: str, floor: float
) -> None:
    model = mlp(digits, trained)
    prune_(model, MovementPruneConfig(sparsity=0.7, criterion=criterion), data=digits, train=TRAIN)  # type: ignore[arg-type]
    assert abs(zero_fraction(model) - 0.7) < 0.01
    kept = {n: w != 0 for n, w in prunable_weights(model).items()}
    by_magnitude = magnitude_masks(mlp(digits, trained), MagnitudePruneConfig(sparsity=0.7))
    overlap = sum(int((kept[n] & by_magnitude[n]).sum()) for n in kept) / sum(int(m.sum()) for m in kept.values())
    assert overlap < 0.9  # a different selection, not magnitude in disguise
    masks = masks_from_zeros(model)
    fit(model, digits, config=TRAIN, callbacks=[MaskCallback(masks)])
    assert all(bool((w[~masks[n]] == 0).all()) for n, w in prunable_weights(model).items())
    assert accuracy(model, digits) >= floor  # dense 0.90; measured 0.93 (movement), 0.81 (least-change)


def test_movement_scores_differ_between_criteria(digits: DataSplits, trained: dict[str, torch.Tensor]) -> None:
    kept = []
    for criterion in ("movement", "least-change"):
        model = mlp(digits, trained)
        prune_(model, MovementPruneConfig(sparsity=0.5, criterion=criterion), data=digits, train=TRAIN)  # type: ignore[arg-type]
        kept.append([w != 0 for w in prunable_weights(model).values()])
    assert not all(torch.equal(a, b) for a, b in zip(*kept))


def test_movement_honours_exclude_and_earlier_zeros(digits: DataSplits, trained: dict[str, torch.Tensor]) -> None:
    model = mlp(digits, trained)
    prune_(model, MagnitudePruneConfig(sparsity=0.3))
    earlier = masks_from_zeros(model)
    prune_(model, MovementPruneConfig(sparsity=0.6, exclude=(r"net\.3",)), data=digits, train=TRAIN)
    assert abs(zero_fraction(model, (r"net\.3",)) - 0.6) < 0.01
    weights = prunable_weights(model)
    assert all(bool((w[~earlier[n]] == 0).all()) for n, w in weights.items())  # held while fine-tuning
    assert int((weights["net.3"] == 0).sum()) == int((~earlier["net.3"]).sum())  # excluded: no new zeros


DATA_DRIVEN = [
    ("movement", MovementPruneConfig(sparsity=0.5)),
    ("gradual", GradualPruneConfig(final_sparsity=0.5)),
    ("iterative", IterativePruneConfig(final_sparsity=0.5)),
    ("l1", L1SparsityConfig()),
]


@pytest.mark.parametrize(("name", "config"), DATA_DRIVEN, ids=[n for n, _ in DATA_DRIVEN])
def test_data_driven_methods_need_data_and_train(digits: DataSplits, name: str, config: object) -> None:
    model = build("mlp", input_shape=digits.input_shape, num_classes=10, hidden=[8])
    with pytest.raises(ConfigError, match=f"pruning method '{name}' needs training data"):
        prune_(model, config, train=TRAIN)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=f"pruning method '{name}' trains while pruning"):
        prune_(model, config, data=digits)  # type: ignore[arg-type]


BAD = [
    (RandomPruneConfig, {"sparsity": 1.0}, r"sparsity must be in \[0, 1\), got 1.0"),
    (RandomPruneConfig, {"exclude": ("(",)}, "not a valid regular expression"),
    (MovementPruneConfig, {"sparsity": -0.2}, r"sparsity must be in \[0, 1\)"),
    (GradualPruneConfig, {"final_sparsity": 1.5}, r"final_sparsity must be in \[0, 1\)"),
    (GradualPruneConfig, {"initial_sparsity": 0.6, "final_sparsity": 0.5}, "must not exceed final_sparsity"),
    (GradualPruneConfig, {"start_epoch": 3, "end_epoch": 3}, "end_epoch must be after start_epoch"),
    (GradualPruneConfig, {"frequency": 0}, "frequency must be >= 1"),
    (IterativePruneConfig, {"rounds": 0}, "rounds must be >= 1"),
    (L1SparsityConfig, {"penalty": 0.0}, "penalty must be > 0"),
    (L1SparsityConfig, {"sparsity": 0.5}, "exactly one of threshold"),
    (L1SparsityConfig, {"threshold": -1.0}, "threshold must be >= 0"),
]


@pytest.mark.parametrize(("cls", "kwargs", "message"), BAD)
def test_bad_values_are_one_line_config_errors(cls: type, kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        cls(**kwargs)
    assert "\n" not in str(info.value)


def test_recipe_style_bad_literal_is_named() -> None:
    with pytest.raises(ConfigError, match="criterion: 'largest' is not one of"):
        PRUNERS.get("movement").from_dict({"criterion": "largest"}, where="movement")


class Kill(Callback):
    def on_epoch_start(self, state: LoopState) -> None:
        if state.epoch == 2:
            raise KeyboardInterrupt


def test_movement_scores_survive_a_resume(digits: DataSplits, trained: dict[str, torch.Tensor], tmp_path: Path) -> None:
    names = list(prunable_weights(mlp(digits, trained)))
    whole = MovementScoreCallback(names)
    fit(mlp(digits, trained), digits, config=TRAIN, callbacks=[whole])
    model, store = mlp(digits, trained), tmp_path / "scores.pt"
    with pytest.raises(KeyboardInterrupt):
        fit(
            model,
            digits,
            config=TRAIN,
            callbacks=[MovementScoreCallback(names, store=store), Kill()],
            checkpoint_dir=tmp_path,
        )
    resumed = MovementScoreCallback(names, store=store, resume=True)
    fit(mlp(digits, trained), digits, config=TRAIN, callbacks=[resumed], checkpoint_dir=tmp_path, resume=True)
    for n in names:
        assert torch.allclose(whole.scores[n], resumed.scores[n], atol=1e-6)
