"""Tasks plug into the one training loop: each turns (model, x, y) into a loss and logits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn


class Task(Protocol):
    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (scalar loss, logits)."""
        ...


@dataclass
class ClassificationTask:
    """Cross-entropy on the labels, optional label smoothing."""

    label_smoothing: float = 0.0

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = model(x)
        return F.cross_entropy(logits, y, label_smoothing=self.label_smoothing), logits
