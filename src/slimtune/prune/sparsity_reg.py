"""L1-regularised sparsity training: train with λ·sign(p) added to the gradients of the weights
(``on: weights``) or of the norm scales γ (``on: norm-scales``, network slimming, Liu et al. 2017), then
zero what the penalty drove to (near) zero, by ``threshold`` or to a target ``sparsity``.

For norm scales a pruned channel gets γ = β = 0 and, after a BatchNorm, the output filter (and bias) of the
Linear/Conv feeding it is zeroed too; the model computes the same either way, and a structured pruner can
then remove the channel. Each norm layer keeps at least its largest-|γ| channel.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from slimtune.config import Config, check
from slimtune.data.core import DataSplits
from slimtune.errors import ConfigError, UnsupportedModelError
from slimtune.prune.api import PruneContext, register_pruner
from slimtune.prune.unstructured import (
    PRUNABLE,
    apply_masks_,
    check_exclude,
    check_sparsity,
    checkpoint_subdir,
    hold_existing_zeros,
    prunable_weights,
    score_masks,
)
from slimtune.train.callbacks import Callback, LoopState
from slimtune.train.loop import TrainConfig, fit

NORMS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm)


@dataclass(frozen=True, kw_only=True)
class L1SparsityConfig(Config):
    """Train (``train``) with an L1 penalty λ on the weights or the norm scales, then prune |p| < ``threshold``
    or the lowest ``sparsity`` fraction (of weights, or of norm channels). ``exclude`` patterns match
    Linear/Conv names (``on: weights``) or norm-layer names (``on: norm-scales``)."""

    penalty: float = 1e-4
    on: Literal["weights", "norm-scales"] = "weights"
    threshold: float | None = 1e-2
    sparsity: float | None = None
    exclude: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check(self.penalty > 0, f"penalty must be > 0, got {self.penalty}")
        check(
            (self.sparsity is None) != (self.threshold is None),
            "give exactly one of threshold (|p| below it is zeroed) or sparsity (a fraction in [0, 1))",
        )
        if self.sparsity is not None:
            check_sparsity(self.sparsity)
        if self.threshold is not None:
            check(self.threshold >= 0, f"threshold must be >= 0, got {self.threshold}")
        check_exclude(self.exclude)


class L1PenaltyCallback(Callback):
    """Adds ``penalty``·sign(p) to the gradient of every tensor in ``params`` after each backward pass
    (the subgradient of λ·Σ|p|)."""

    def __init__(self, params: Sequence[torch.Tensor], penalty: float) -> None:
        self.params, self.penalty = list(params), penalty

    @torch.no_grad()
    def on_after_backward(self, state: LoopState) -> None:
        for p in self.params:
            if p.grad is not None:
                p.grad.add_(torch.sign(p), alpha=self.penalty)


def norm_layers(model: nn.Module, exclude: tuple[str, ...] = ()) -> dict[str, nn.Module]:
    """Affine BatchNorm/LayerNorm layers by name, minus those matching an ``exclude`` pattern."""
    found = {n: m for n, m in model.named_modules() if isinstance(m, NORMS) and getattr(m, "weight", None) is not None}
    for pattern in exclude:
        if not any(re.search(pattern, n) for n in found):
            raise ConfigError(
                f"exclude pattern {pattern!r} matches no norm layer; norm layers are: {', '.join(list(found)[:8])}"
            )
    kept: dict[str, nn.Module] = {n: m for n, m in found.items() if not any(re.search(p, n) for p in exclude)}
    if not kept:
        raise UnsupportedModelError(f"{type(model).__name__} has no affine BatchNorm/LayerNorm for on: norm-scales")
    return kept


@torch.no_grad()
def norm_producers(model: nn.Module, norms: dict[str, nn.Module], sample: torch.Tensor) -> dict[str, str]:
    """For each BatchNorm whose input is exactly the output of a Linear/Conv: that layer's name (traced with
    one forward pass in eval mode, so no running statistics change)."""
    outputs: dict[int, tuple[str, torch.Tensor]] = {}
    found: dict[str, str] = {}
    names = {id(m): n for n, m in norms.items()}
    hooks = []

    def record(name: str) -> Any:
        def hook(module: nn.Module, args: Any, out: Any) -> None:
            if isinstance(out, torch.Tensor):
                outputs[id(out)] = (name, out)  # keeps the tensor alive, so its id stays unique

        return hook

    def match(module: nn.Module, args: Any) -> None:
        x = args[0] if args else None
        hit = outputs.get(id(x))
        if hit is not None and hit[1] is x and isinstance(module, nn.modules.batchnorm._BatchNorm):
            found[names[id(module)]] = hit[0]

    for name, m in model.named_modules():
        if isinstance(m, PRUNABLE):
            hooks.append(m.register_forward_hook(record(name)))
        elif id(m) in names:
            hooks.append(m.register_forward_pre_hook(match))
    was_training = model.training
    model.eval()
    try:
        model(sample)
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return found


@torch.no_grad()
def prune_norm_channels_(model: nn.Module, channel_masks: dict[str, torch.Tensor], producers: dict[str, str]) -> None:
    """Zero γ and β of the masked-out channels and the producers' matching output filters and biases."""
    modules = dict(model.named_modules())
    for name, keep in channel_masks.items():
        norm = modules[name]
        for p in (norm.weight, getattr(norm, "bias", None)):
            if isinstance(p, torch.Tensor):
                p.mul_(keep.view(p.shape).to(p.dtype))
        producer = modules[producers[name]] if name in producers else None
        if producer is not None and producer.weight.shape[0] == keep.numel():
            shape = (-1,) + (1,) * (producer.weight.dim() - 1)
            producer.weight.mul_(keep.view(shape).to(producer.weight.dtype))
            if producer.bias is not None:
                producer.bias.mul_(keep.to(producer.bias.dtype))


def _channel_masks(gammas: dict[str, torch.Tensor], config: L1SparsityConfig) -> dict[str, torch.Tensor]:
    largest = {n: g.abs().flatten().argmax() for n, g in gammas.items()}
    if config.threshold is not None:
        masks = {n: g.abs().flatten() >= config.threshold for n, g in gammas.items()}
    else:
        assert config.sparsity is not None
        scores = {n: g.abs().flatten().index_fill(0, largest[n], torch.inf) for n, g in gammas.items()}
        masks = score_masks(scores, config.sparsity, "global")
    for n, m in masks.items():
        m[largest[n]] = True  # never remove a whole layer
    return masks


@register_pruner("l1", L1SparsityConfig, help="unstructured: L1 sparsity training (weights or norm scales), then prune")
def l1_prune(model: nn.Module, config: L1SparsityConfig, ctx: PruneContext) -> None:
    data, train = ctx.require_data("l1"), ctx.require_train("l1")
    if config.on == "weights":
        targets = prunable_weights(model, config.exclude)
        _train(model, data, train, ctx, list(targets.values()), config.penalty)
        with torch.no_grad():
            if config.threshold is not None:
                masks = {n: w.abs() >= config.threshold for n, w in targets.items()}
            else:
                assert config.sparsity is not None
                masks = score_masks({n: w.abs() for n, w in targets.items()}, config.sparsity, "global")
        apply_masks_(model, masks)
        return
    norms = norm_layers(model, config.exclude)
    gammas: dict[str, torch.Tensor] = {n: m.weight for n, m in norms.items() if isinstance(m.weight, torch.Tensor)}
    _train(model, data, train, ctx, list(gammas.values()), config.penalty)
    producers: dict[str, str] = {}
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in norms.values()):
        assert isinstance(data.train.x, torch.Tensor)  # fit has checked
        sample = data.train.x[:2].to(next(model.parameters()).device)
        producers = norm_producers(model, norms, sample)
    prune_norm_channels_(model, _channel_masks(gammas, config), producers)


def _train(
    model: nn.Module, data: DataSplits, train: TrainConfig, ctx: PruneContext, params: list[torch.Tensor], lam: float
) -> None:
    fit(
        model, data, config=train, callbacks=[L1PenaltyCallback(params, lam), *_held(model)],
        checkpoint_dir=checkpoint_subdir(ctx, "l1"), resume=ctx.resume, progress=ctx.progress, desc="l1",
    )  # fmt: skip


def _held(model: nn.Module) -> list[Callback]:
    return hold_existing_zeros(model) if any(isinstance(m, PRUNABLE) for m in model.modules()) else []
