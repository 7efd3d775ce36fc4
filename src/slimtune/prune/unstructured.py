"""Unstructured pruning: magnitude (global or per layer, by target sparsity or threshold), random (a
baseline) and movement (Sanh et al. 2020, scores accumulated while fine-tuning), plus the mask
callback that keeps pruned weights at zero through later training. Schedules (gradual, iterative)
live in :mod:`slimtune.prune.schedules`, L1 sparsity training in :mod:`slimtune.prune.sparsity_reg`."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from slimtune._io import atomic_path
from slimtune.config import Config, check
from slimtune.errors import ConfigError, UnsupportedModelError
from slimtune.prune.api import PruneContext, register_pruner
from slimtune.train.callbacks import Callback, LoopState
from slimtune.train.loop import fit

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
        check_exclude(self.exclude)


def check_sparsity(value: float, name: str = "sparsity") -> None:
    """One-line ConfigError unless ``value`` is a fraction in [0, 1)."""
    check(0 <= value < 1, f"{name} must be in [0, 1), got {value}")


def check_exclude(exclude: Sequence[str]) -> None:
    """One-line ConfigError for an ``exclude`` pattern that is not a regular expression."""
    for pattern in exclude:
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
    """Masks of an already-pruned model: every exact zero stays zero (GPT-2's ``Conv1D`` layers included)."""
    masks = {n: w != 0 for n, w in prunable_weights(model).items()}
    conv1d = {n: m.weight != 0 for n, m in model.named_modules() if type(m).__name__ == "Conv1D" and hasattr(m, "nf")}
    return {**masks, **conv1d}


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


def _keep_top(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    k = int(sparsity * scores.numel())
    keep = torch.ones(scores.numel(), dtype=torch.bool, device=scores.device)
    if k > 0:
        keep[torch.topk(scores.flatten(), k, largest=False).indices] = False
    return keep.view(scores.shape)


@torch.no_grad()
def score_masks(
    scores: dict[str, torch.Tensor], sparsity: float, scope: Literal["global", "layer"] = "global"
) -> dict[str, torch.Tensor]:
    """Masks that drop exactly ``int(sparsity * n)`` lowest scores, over all layers or per layer (ties
    broken by position, so the count is exact)."""
    if scope == "layer":
        return {n: _keep_top(s, sparsity) for n, s in scores.items()}
    keep = _keep_top(torch.cat([s.flatten() for s in scores.values()]), sparsity)
    parts = torch.split(keep, [s.numel() for s in scores.values()])
    return {n: m.view(s.shape) for (n, s), m in zip(scores.items(), parts)}


def hold_existing_zeros(model: nn.Module) -> list[Callback]:
    """A MaskCallback for zeros already in ``model`` (from an earlier stage), or nothing if it is dense."""
    masks = masks_from_zeros(model)
    return [MaskCallback(masks)] if any(not bool(m.all()) for m in masks.values()) else []


def checkpoint_subdir(ctx: PruneContext, name: str) -> Path | None:
    return ctx.checkpoint_dir / name if ctx.checkpoint_dir is not None else None


@dataclass(frozen=True, kw_only=True)
class RandomPruneConfig(Config):
    """Zero a uniformly random ``sparsity`` fraction of weights: the baseline every method must beat."""

    sparsity: float = 0.8
    scope: Literal["global", "layer"] = "global"
    exclude: tuple[str, ...] = ()
    seed: int = 0

    def __post_init__(self) -> None:
        check_sparsity(self.sparsity)
        check_exclude(self.exclude)


@register_pruner("random", RandomPruneConfig, help="unstructured baseline: zero a random fraction of weights")
def random_prune(model: nn.Module, config: RandomPruneConfig, ctx: PruneContext) -> None:
    g = torch.Generator().manual_seed(config.seed)
    weights = prunable_weights(model, config.exclude)
    scores = {n: torch.rand(w.shape, generator=g).to(w.device) for n, w in weights.items()}
    apply_masks_(model, score_masks(scores, config.sparsity, config.scope))


@dataclass(frozen=True, kw_only=True)
class MovementPruneConfig(Config):
    """Fine-tune (``train``) while scoring weights, then zero the lowest scores. ``movement``: S = −Σ_t w·∂L/∂w
    (Sanh et al. 2020; weights moving towards zero score low); ``least-change``: |w_final − w_initial|."""

    sparsity: float = 0.8
    scope: Literal["global", "layer"] = "global"
    exclude: tuple[str, ...] = ()
    criterion: Literal["movement", "least-change"] = "movement"

    def __post_init__(self) -> None:
        check_sparsity(self.sparsity)
        check_exclude(self.exclude)


class MovementScoreCallback(Callback):
    """Accumulates S = −Σ_t w·∂L/∂w for the named weights after every backward pass. With ``store`` the
    scores are saved after each epoch and, with ``resume``, picked up again by a resumed ``fit``."""

    def __init__(self, names: Sequence[str], *, store: Path | None = None, resume: bool = False) -> None:
        self.names = list(names)
        self.store, self.resume = store, resume
        self.scores: dict[str, torch.Tensor] = {}
        self._weights: dict[str, torch.Tensor] = {}
        self._first_epoch = True

    def on_fit_start(self, state: LoopState) -> None:
        modules = dict(state.model.named_modules())
        self._weights = {n: modules[n].weight for n in self.names}
        self.scores = {n: torch.zeros_like(w, dtype=torch.float32) for n, w in self._weights.items()}
        self._first_epoch = True

    def on_epoch_start(self, state: LoopState) -> None:
        if self._first_epoch and self.resume and self.store is not None and self.store.exists():
            saved = torch.load(self.store, map_location="cpu", weights_only=True)
            if saved["epoch"] == state.epoch:  # the scores of exactly the epochs the checkpoint holds
                self.scores = {n: saved["scores"][n].to(w.device) for n, w in self._weights.items()}
        self._first_epoch = False

    @torch.no_grad()
    def on_after_backward(self, state: LoopState) -> None:
        for n, w in self._weights.items():
            if w.grad is not None:
                self.scores[n].sub_((w * w.grad).float())

    def on_epoch_end(self, state: LoopState) -> None:
        if self.store is not None:
            with atomic_path(self.store) as tmp:
                torch.save({"epoch": state.epoch + 1, "scores": {n: s.cpu() for n, s in self.scores.items()}}, tmp)


@register_pruner("movement", MovementPruneConfig, help="unstructured: fine-tune, zero weights moving towards 0")
def movement_prune(model: nn.Module, config: MovementPruneConfig, ctx: PruneContext) -> None:
    data, train = ctx.require_data("movement"), ctx.require_train("movement")
    weights = prunable_weights(model, config.exclude)
    initial = {n: w.detach().clone() for n, w in weights.items()}
    ckpt = checkpoint_subdir(ctx, "movement")
    scorer = MovementScoreCallback(list(weights), store=ckpt / "scores.pt" if ckpt else None, resume=ctx.resume)
    fit(
        model, data, config=train, callbacks=[scorer, *hold_existing_zeros(model)],
        checkpoint_dir=ckpt, resume=ctx.resume, progress=ctx.progress, desc="movement",
    )  # fmt: skip
    with torch.no_grad():
        if config.criterion == "movement":
            scores = scorer.scores
        else:
            scores = {n: (w - initial[n]).abs().float() for n, w in weights.items()}
        scores = {n: s.masked_fill(weights[n] == 0, -torch.inf) for n, s in scores.items()}  # held zeros go first
    apply_masks_(model, score_masks(scores, config.sparsity, config.scope))
