from __future__ import annotations

import pytest
import torch

from slimtune.data import DataSplits
from slimtune.errors import ConfigError
from slimtune.evaluate import sparsity
from slimtune.models import build
from slimtune.prune import MagnitudePruneConfig, MaskCallback, masks_from_zeros, prunable_weights, prune_
from slimtune.train import TrainConfig, fit


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_target_sparsity_is_met(scope: str) -> None:
    model = build("lenet5", input_shape=(1, 8, 8), num_classes=10)
    prune_(model, MagnitudePruneConfig(sparsity=0.8, scope=scope))  # type: ignore[arg-type]
    weights = prunable_weights(model)
    zeros = sum(int((w == 0).sum()) for w in weights.values())
    total = sum(w.numel() for w in weights.values())
    assert abs(zeros / total - 0.8) < 0.01
    if scope == "layer":
        for w in weights.values():
            assert abs(float((w == 0).float().mean()) - 0.8) < 0.05


def test_global_keeps_largest_weights() -> None:
    model = build("mlp", input_shape=(4,), num_classes=2, hidden=[4])
    before = {n: w.detach().clone() for n, w in prunable_weights(model).items()}
    prune_(model, MagnitudePruneConfig(sparsity=0.5))
    flat = torch.cat([w.abs().flatten() for w in before.values()])
    cut = flat.kthvalue(flat.numel() // 2).values
    for n, w in prunable_weights(model).items():
        assert torch.equal(w != 0, before[n].abs() > cut)


def test_threshold_mode_zeroes_below_theta() -> None:
    model = build("mlp", input_shape=(16,), num_classes=2, hidden=[16])
    prune_(model, MagnitudePruneConfig(sparsity=None, threshold=0.1))
    for w in prunable_weights(model).values():
        assert bool(((w == 0) | (w.abs() >= 0.1)).all())
        assert bool((w[w != 0].abs() >= 0.1).all())


def test_masks_survive_training(digits: DataSplits) -> None:
    model = build("mlp", input_shape=digits.input_shape, num_classes=10, hidden=[64])
    prune_(model, MagnitudePruneConfig(sparsity=0.9))
    masks = masks_from_zeros(model)
    fit(model, digits, config=TrainConfig(epochs=2, weight_decay=0.01), callbacks=[MaskCallback(masks)])
    assert sparsity(model) >= 0.89
    for n, w in prunable_weights(model).items():
        assert bool((w[~masks[n]] == 0).all()), n


def test_pruned_weights_get_no_gradient(digits: DataSplits) -> None:
    """The mask is applied to the gradients too (not only to the weights after each step), so optimizer state
    (momentum, Adam moments) never builds up for pruned weights."""
    from slimtune.train.callbacks import Callback, LoopState

    model = build("mlp", input_shape=digits.input_shape, num_classes=10, hidden=[64])
    prune_(model, MagnitudePruneConfig(sparsity=0.9))
    masks = masks_from_zeros(model)
    seen: list[dict[str, torch.Tensor]] = []

    class Record(Callback):
        def on_after_backward(self, state: LoopState) -> None:
            seen.append({n: state.model.get_submodule(n).weight.grad.clone() for n in masks})

    fit(model, digits, config=TrainConfig(epochs=1, batch_size=64), callbacks=[MaskCallback(masks), Record()])
    assert seen
    for grads in seen:
        for n, g in grads.items():
            assert bool((g[~masks[n]] == 0).all()) and bool((g[masks[n]] != 0).any()), n


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sparsity": 1.0}, r"sparsity must be in \[0, 1\), got 1.0"),
        ({"sparsity": -0.1}, r"sparsity must be in \[0, 1\)"),
        ({"sparsity": 0.5, "threshold": 0.1}, "exactly one of sparsity"),
        ({"exclude": ("[",)}, "not a valid regular expression"),
    ],
)
def test_bad_config(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        MagnitudePruneConfig(**kwargs)


def test_unknown_layer_pattern_is_named() -> None:
    model = build("mlp", input_shape=(4,), num_classes=2, hidden=[4])
    with pytest.raises(ConfigError, match=r"exclude pattern 'encoder' matches no prunable layer; layers are: net.1"):
        prune_(model, MagnitudePruneConfig(sparsity=0.5, exclude=("encoder",)))
