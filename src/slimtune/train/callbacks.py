"""Callbacks observe and steer the training loop (pruning masks, schedules, tests that kill a run)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


@dataclass
class LoopState:
    model: nn.Module  # the unwrapped model (not the DDP wrapper)
    optimizer: torch.optim.Optimizer
    epoch: int = 0
    step: int = 0  # batches done in this epoch
    global_step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


class Callback:
    """Override any hook; all are no-ops by default."""

    def on_fit_start(self, state: LoopState) -> None: ...
    def on_epoch_start(self, state: LoopState) -> None: ...
    def on_after_backward(self, state: LoopState) -> None: ...
    def on_step_end(self, state: LoopState) -> None: ...
    def on_epoch_end(self, state: LoopState) -> None: ...
    def on_fit_end(self, state: LoopState) -> None: ...
