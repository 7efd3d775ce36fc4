"""Pruning schedules as callbacks of the one training loop.

``gradual`` (Zhu & Gupta 2017) raises the sparsity along s_t = s_f + (s_i − s_f)(1 − (t − t0)/(n·Δt))³ while
training, re-pruning by magnitude every ``frequency`` steps and holding the masks in between; ``iterative``
prunes by magnitude in ``rounds`` and fine-tunes after each. One-shot pruning is the ``magnitude`` method.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from slimtune.config import Config, check
from slimtune.errors import ConfigError
from slimtune.prune.api import PruneContext, register_pruner
from slimtune.prune.unstructured import (
    MaskCallback,
    apply_masks_,
    check_exclude,
    check_sparsity,
    checkpoint_subdir,
    hold_existing_zeros,
    masks_from_zeros,
    prunable_weights,
    score_masks,
)
from slimtune.train.callbacks import Callback, LoopState
from slimtune.train.loop import fit


def polynomial_sparsity(
    step: int, *, initial: float, final: float, begin_step: int, end_step: int, exponent: float = 3.0
) -> float:
    """Zhu & Gupta's s_t = s_f + (s_i − s_f)(1 − (t − t0)/(end − t0))^exponent, clamped to [t0, end]."""
    if end_step <= begin_step:
        return final if step >= end_step else initial
    progress = min(max((step - begin_step) / (end_step - begin_step), 0.0), 1.0)
    return final + (initial - final) * (1.0 - progress) ** exponent


def iterative_sparsity(round_: int, *, rounds: int, final: float, schedule: Literal["linear", "geometric"]) -> float:
    """Sparsity after round ``round_`` (1-based): s_f·k/R, or 1 − (1 − s_f)^(k/R) (the same share of the
    remaining weights each round)."""
    if schedule == "linear":
        return final * round_ / rounds
    return 1.0 - (1.0 - final) ** (round_ / rounds)


@dataclass(frozen=True, kw_only=True)
class GradualPruneConfig(Config):
    """Prune by magnitude while training (``train``), from ``initial_sparsity`` at ``start_epoch`` to
    ``final_sparsity`` at ``end_epoch`` (default: the end of training), re-pruning every ``frequency`` steps."""

    final_sparsity: float = 0.8
    initial_sparsity: float = 0.0
    start_epoch: int = 0
    end_epoch: int | None = None
    frequency: int = 10
    scope: Literal["global", "layer"] = "global"
    exclude: tuple[str, ...] = ()
    criterion: Literal["magnitude"] = "magnitude"

    def __post_init__(self) -> None:
        check_sparsity(self.final_sparsity, "final_sparsity")
        check_sparsity(self.initial_sparsity, "initial_sparsity")
        check(
            self.initial_sparsity <= self.final_sparsity,
            f"initial_sparsity ({self.initial_sparsity}) must not exceed final_sparsity ({self.final_sparsity})",
        )
        check(self.start_epoch >= 0, f"start_epoch must be >= 0, got {self.start_epoch}")
        check(
            self.end_epoch is None or self.end_epoch > self.start_epoch,
            f"end_epoch must be after start_epoch ({self.start_epoch}), got {self.end_epoch}",
        )
        check(self.frequency >= 1, f"frequency must be >= 1 step, got {self.frequency}")
        check_exclude(self.exclude)


class GradualPruneCallback(Callback):
    """Applies the polynomial schedule inside ``fit``: at the scheduled steps (``update_steps``) it prunes
    the lowest |w| to s_t, and between them zeroes the pruned weights' gradients and re-applies the masks
    after every optimizer step. Masks only grow, so sparsity never falls; ``history`` holds (step, s_t)."""

    def __init__(self, config: GradualPruneConfig, *, steps_per_epoch: int, epochs: int) -> None:
        end_epoch = epochs if config.end_epoch is None else config.end_epoch
        if end_epoch > epochs:
            raise ConfigError(f"gradual: end_epoch ({end_epoch}) is after the last training epoch ({epochs})")
        if config.start_epoch >= end_epoch:
            raise ConfigError(f"gradual: start_epoch ({config.start_epoch}) must be before end_epoch ({end_epoch})")
        self.config, self.steps_per_epoch = config, steps_per_epoch
        self.begin, self.end = config.start_epoch * steps_per_epoch, end_epoch * steps_per_epoch
        self.update_steps = sorted({*range(self.begin, self.end, config.frequency), self.end})
        self._scheduled = set(self.update_steps)
        self.masks: dict[str, torch.Tensor] = {}
        self.history: list[tuple[int, float]] = []
        self._last = -1

    def sparsity_at(self, step: int) -> float:
        c = self.config
        return polynomial_sparsity(
            step, initial=c.initial_sparsity, final=c.final_sparsity, begin_step=self.begin, end_step=self.end
        )

    def _step(self, state: LoopState) -> int:
        return state.epoch * self.steps_per_epoch + state.step

    @torch.no_grad()
    def _update(self, model: nn.Module, step: int) -> None:
        weights = prunable_weights(model, self.config.exclude)
        target = self.sparsity_at(step)
        new = score_masks({n: w.abs() for n, w in weights.items()}, target, self.config.scope)
        self.masks = {n: self.masks[n] & m for n, m in new.items()}
        apply_masks_(model, self.masks)
        self.history.append((step, target))
        self._last = step

    def _maybe_update(self, state: LoopState) -> None:
        step = self._step(state)
        if step in self._scheduled and step != self._last:
            self._update(state.model, step)

    def on_fit_start(self, state: LoopState) -> None:
        # zeros already there (a resumed run, an earlier stage) stay zero
        self.masks = {n: w != 0 for n, w in prunable_weights(state.model, self.config.exclude).items()}

    def on_epoch_start(self, state: LoopState) -> None:
        self._maybe_update(state)

    def on_after_backward(self, state: LoopState) -> None:
        MaskCallback(self.masks).on_after_backward(state)

    def on_step_end(self, state: LoopState) -> None:
        apply_masks_(state.model, self.masks)
        self._maybe_update(state)

    def on_fit_end(self, state: LoopState) -> None:
        apply_masks_(state.model, self.masks)  # also over best weights restored from an earlier epoch
        if self._last != self.end:  # stopped early: finish the schedule now
            self._update(state.model, self.end)


@register_pruner("gradual", GradualPruneConfig, help="unstructured: magnitude pruning on a cubic schedule in training")
def gradual_prune(model: nn.Module, config: GradualPruneConfig, ctx: PruneContext) -> None:
    data, train = ctx.require_data("gradual"), ctx.require_train("gradual")
    # the weights at the end of the schedule are the pruned ones: no restoring an earlier, denser epoch
    train = dataclasses.replace(train, restore_best=False)
    steps = math.ceil(len(data.train) / train.batch_size)
    schedule = GradualPruneCallback(config, steps_per_epoch=steps, epochs=train.epochs)
    fit(
        model, data, config=train, callbacks=[schedule, *hold_existing_zeros(model)],
        checkpoint_dir=checkpoint_subdir(ctx, "gradual"), resume=ctx.resume, progress=ctx.progress, desc="gradual",
    )  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class IterativePruneConfig(Config):
    """Prune by magnitude in ``rounds`` up to ``final_sparsity``, fine-tuning (``train``, per round) with the
    zeros held after each; ``schedule`` linear (s_f·k/R) or geometric (the same share of survivors each round)."""

    final_sparsity: float = 0.8
    rounds: int = 3
    schedule: Literal["linear", "geometric"] = "linear"
    scope: Literal["global", "layer"] = "global"
    exclude: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_sparsity(self.final_sparsity, "final_sparsity")
        check(self.rounds >= 1, f"rounds must be >= 1, got {self.rounds}")
        check_exclude(self.exclude)


@register_pruner("iterative", IterativePruneConfig, help="unstructured: prune by magnitude in rounds, fine-tune each")
def iterative_prune(model: nn.Module, config: IterativePruneConfig, ctx: PruneContext) -> None:
    data, train = ctx.require_data("iterative"), ctx.require_train("iterative")
    for k in range(1, config.rounds + 1):
        target = iterative_sparsity(k, rounds=config.rounds, final=config.final_sparsity, schedule=config.schedule)
        with torch.no_grad():
            weights = prunable_weights(model, config.exclude)
            new = score_masks({n: w.abs() for n, w in weights.items()}, target, config.scope)
            apply_masks_(model, {n: (w != 0) & new[n] for n, w in weights.items()})
        fit(
            model, data, config=train, callbacks=[MaskCallback(masks_from_zeros(model))],
            checkpoint_dir=checkpoint_subdir(ctx, f"iterative/round-{k}"), resume=ctx.resume,
            progress=ctx.progress, desc=f"iterative {k}/{config.rounds}",
        )  # fmt: skip
