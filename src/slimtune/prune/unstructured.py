"""Unstructured magnitude pruning (global or per layer, by target sparsity or threshold) and the
mask callback that keeps pruned weights at zero through recovery fine-tuning."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from slimtune.config import Config, check
from slimtune.errors import ConfigError, UnsupportedModelError
from slimtune.prune.api import PruneContext, register_pruner
from slimtune.train.callbacks import Callback, LoopState

PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass(frozen=True, kw_only=True)
class MagnitudePruneConfig(Config):
    """Zero the smallest-magnitude weights: to a target ``sparsity`` or below ``threshold``."""

    sparsity: float | None = 0.8
    threshold: float | None = None
    scope: Literal["global", "layer"] = "global"
    exclude: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check(
            (self.sparsity is None) != (self.threshold is None),
            "give exactly one of sparsity (a fraction in [0, 1)) or threshold (|w| below it is zeroed)",
        )
        if self.sparsity is not None:
            check(0 <= self.sparsity < 1, f"sparsity must be in [0, 1), got {self.sparsity}")
        if self.threshold is not None:
            check(self.threshold >= 0, f"threshold must be >= 0, got {self.threshold}")
        for pattern in self.exclude:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ConfigError(f"exclude pattern {pattern!r} is not a valid regular expression: {exc}") from None


def prunable_weights(model: nn.Module, exclude: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """Weights of Linear/Conv layers, by module name, minus those matching an ``exclude`` pattern."""
    found = {name: m.weight for name, m in model.named_modules() if isinstance(m, PRUNABLE)}
    for pattern in exclude:
        if not any(re.search(pattern, name) for name in found):
            raise ConfigError(
                f"exclude pattern {pattern!r} matches no prunable layer; layers are: {', '.join(list(found)[:8])}"
            )
    kept = {n: w for n, w in found.items() if not any(re.search(p, n) for p in exclude)}
    if not kept:
        raise UnsupportedModelError(f"{type(model).__name__} has no Linear/Conv weights to prune (after exclusions)")
    return kept


@torch.no_grad()
def magnitude_masks(model: nn.Module, config: MagnitudePruneConfig) -> dict[str, torch.Tensor]:
    weights = prunable_weights(model, config.exclude)
    if config.threshold is not None:
        return {n: w.abs() >= config.threshold for n, w in weights.items()}
    assert config.sparsity is not None
    if config.scope == "global":
        flat = torch.cat([w.detach().abs().flatten() for w in weights.values()])
        k = int(config.sparsity * flat.numel())
        cut = flat.kthvalue(k).values if k > 0 else flat.new_tensor(-1.0)
        return {n: w.abs() > cut for n, w in weights.items()}
    masks = {}
    for n, w in weights.items():
        k = int(config.sparsity * w.numel())
        cut = w.abs().flatten().kthvalue(k).values if k > 0 else w.new_tensor(-1.0)
        masks[n] = w.abs() > cut
    return masks


@torch.no_grad()
def apply_masks_(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    modules = dict(model.named_modules())
    for name, mask in masks.items():
        weight = modules[name].weight
        weight.mul_(mask.to(weight.dtype))


@register_pruner("magnitude", MagnitudePruneConfig, help="unstructured: zero the smallest |w| (global or per layer)")
def magnitude_prune(model: nn.Module, config: MagnitudePruneConfig, ctx: PruneContext) -> None:
    apply_masks_(model, magnitude_masks(model, config))


def masks_from_zeros(model: nn.Module) -> dict[str, torch.Tensor]:
    """Masks of an already-pruned model: every exact zero stays zero."""
    return {n: w != 0 for n, w in prunable_weights(model).items()}


class MaskCallback(Callback):
    """Keeps pruned weights at zero during training: zero their gradients and re-apply after each step."""

    def __init__(self, masks: dict[str, torch.Tensor]) -> None:
        self.masks = masks

    def on_after_backward(self, state: LoopState) -> None:
        modules = dict(state.model.named_modules())
        for name, mask in self.masks.items():
            grad = modules[name].weight.grad
            if grad is not None:
                grad.mul_(mask.to(grad.dtype))

    def on_step_end(self, state: LoopState) -> None:
        apply_masks_(state.model, self.masks)
