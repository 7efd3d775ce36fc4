"""L1 sparsity training: penalty on weights or on norm scales (network slimming), then prune."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from slimtune.data import DataSplits
from slimtune.errors import ConfigError, UnsupportedModelError
from slimtune.models import build
from slimtune.prune import (
    L1PenaltyCallback,
    L1SparsityConfig,
    MaskCallback,
    masks_from_zeros,
    norm_layers,
    norm_producers,
    prunable_weights,
    prune_,
    prune_norm_channels_,
)
from slimtune.train import TrainConfig, fit, predict

TRAIN = TrainConfig(epochs=10, lr=1e-2)


def accuracy(model: nn.Module, data: DataSplits) -> float:
    assert isinstance(data.test.x, torch.Tensor)
    return float((predict(model, data.test.x).argmax(1) == data.test.y).float().mean())


def mlp(data: DataSplits) -> nn.Module:
    torch.manual_seed(0)
    return build("mlp", input_shape=data.input_shape, num_classes=10, hidden=[64])


def near_zero(model: nn.Module, below: float = 1e-2) -> float:
    flat = torch.cat([w.detach().abs().flatten() for w in prunable_weights(model).values()])
    return float((flat < below).float().mean())


def test_penalty_drives_weights_towards_zero(digits: DataSplits) -> None:
    plain, penalised = mlp(digits), mlp(digits)
    fit(plain, digits, config=TRAIN)
    weights = list(prunable_weights(penalised).values())
    fit(penalised, digits, config=TRAIN, callbacks=[L1PenaltyCallback(weights, 1e-3)])
    assert near_zero(penalised) > near_zero(plain) + 0.3  # measured 0.50 vs 0.06


def test_threshold_prunes_what_the_penalty_shrank_and_keeps_accuracy(digits: DataSplits) -> None:
    model = mlp(digits)
    prune_(model, L1SparsityConfig(penalty=1e-3, threshold=1e-2), data=digits, train=TRAIN)
    weights = prunable_weights(model)
    assert all(bool(((w == 0) | (w.abs() >= 1e-2)).all()) for w in weights.values())
    zeros = sum(int((w == 0).sum()) for w in weights.values()) / sum(w.numel() for w in weights.values())
    assert zeros > 0.4  # measured 0.50
    masks = masks_from_zeros(model)
    fit(model, digits, config=TrainConfig(epochs=2, lr=1e-2), callbacks=[MaskCallback(masks)])
    assert all(bool((w[~masks[n]] == 0).all()) for n, w in prunable_weights(model).items())
    assert accuracy(model, digits) >= 0.85  # measured 0.89 (dense without penalty: 0.93)


def test_sparsity_target_is_met_and_exclude_honoured(digits: DataSplits) -> None:
    model = mlp(digits)
    before = prunable_weights(model)["net.3"].detach().clone()
    config = L1SparsityConfig(penalty=1e-3, threshold=None, sparsity=0.75, exclude=(r"net\.3",))
    prune_(model, config, data=digits, train=TrainConfig(epochs=2, lr=1e-2))
    first = prunable_weights(model)["net.1"]
    assert abs(float((first == 0).float().mean()) - 0.75) < 0.01
    last = prunable_weights(model)["net.3"]
    assert bool((last != 0).all()) and not torch.equal(last, before)  # trained, but neither penalised nor pruned


def resnet(data: DataSplits) -> nn.Module:
    torch.manual_seed(0)
    return build("resnet-small", input_shape=data.input_shape, num_classes=10, widths=[4, 8], blocks=1)


def test_norm_scales_zero_channels_and_their_filters(digits: DataSplits) -> None:
    model = resnet(digits)
    train = TrainConfig(epochs=2, lr=1e-2, batch_size=128)
    prune_(
        model, L1SparsityConfig(penalty=1e-2, on="norm-scales", threshold=None, sparsity=0.25), data=digits, train=train
    )
    norms = norm_layers(model)
    gammas = torch.cat([m.weight.detach().flatten() for m in norms.values()])  # type: ignore[union-attr]
    assert abs(float((gammas == 0).float().mean()) - 0.25) < 0.01  # 9 of 36 channels
    producers = norm_producers(model, norms, digits.train.x[:2])  # type: ignore[index]
    assert producers["stem.1"] == "stem.0" and producers["layers.1.downsample.1"] == "layers.1.downsample.0"
    modules = dict(model.named_modules())
    for name, norm in norms.items():
        gone = norm.weight == 0  # type: ignore[operator]
        assert bool(gone.logical_not().any())  # every layer keeps a channel
        assert bool((norm.bias[gone] == 0).all())  # type: ignore[index]
        filters = modules[producers[name]].weight
        assert bool((filters[gone] == 0).all()) and bool((filters[~gone] != 0).any())


def test_zeroing_filters_after_batchnorm_keeps_outputs(digits: DataSplits) -> None:
    model = resnet(digits).eval()
    norms = norm_layers(model)
    keep = {n: torch.arange(m.weight.numel()) % 3 != 0 for n, m in norms.items()}  # type: ignore[union-attr]
    x = digits.test.x[:16]  # type: ignore[index]
    prune_norm_channels_(model, keep, {})
    only_norms = model(x)
    prune_norm_channels_(model, keep, norm_producers(model, norms, x))
    assert torch.equal(model(x), only_norms)


def test_layernorm_scales_are_zeroed_but_not_its_producer(digits: DataSplits) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.LayerNorm(32), nn.ReLU(), nn.Linear(32, 10))
    config = L1SparsityConfig(penalty=1e-2, on="norm-scales", threshold=None, sparsity=0.5)
    prune_(model, config, data=digits, train=TrainConfig(epochs=1, lr=1e-2))
    assert int((model[2].weight == 0).sum()) == 16 and int((model[2].bias == 0).sum()) >= 16
    assert bool((model[1].weight != 0).all())  # zeroing rows before a LayerNorm would change its statistics


def test_norm_scales_need_norm_layers_and_patterns_must_match(digits: DataSplits) -> None:
    with pytest.raises(UnsupportedModelError, match="no affine BatchNorm/LayerNorm"):
        prune_(mlp(digits), L1SparsityConfig(on="norm-scales"), data=digits, train=TRAIN)
    with pytest.raises(ConfigError, match="exclude pattern 'head' matches no norm layer"):
        prune_(resnet(digits), L1SparsityConfig(on="norm-scales", exclude=("head",)), data=digits, train=TRAIN)
