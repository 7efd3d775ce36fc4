"""What the one loop trains on: a ``DataSplits`` (wrapped in :class:`SplitsSource`) or any other
:class:`TrainSource`, e.g. several tasks' datasets interleaved (:mod:`slimtune.train.multitask`).

A source cuts each epoch into global batches with every rank holding an equal share (see
:mod:`slimtune.train.ddp`), and validates the unwrapped model on rank 0.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from slimtune.data.core import DataSplits, Split
from slimtune.train.device import model_device
from slimtune.train.lm import CausalLMTask, is_lm_data, lm_validation
from slimtune.train.tasks import ClassificationTask, Task

if TYPE_CHECKING:
    from slimtune.train.loop import TrainConfig


class TrainSource(Protocol):
    """Training data for ``fit`` besides a plain ``DataSplits``."""

    def steps_per_epoch(self, config: TrainConfig, world: int) -> int:
        """Optimizer steps in one epoch (the same on every rank)."""
        ...

    def batches(self, config: TrainConfig, epoch: int, rank: int, world: int) -> Iterator[tuple[Any, Any, int]]:
        """This rank's ``(x, y, examples)`` for each step of ``epoch``; ``x, y`` go to ``Task.loss``."""
        ...

    def validate(self, model: nn.Module) -> dict[str, float]:
        """Validation metrics; must hold ``val_accuracy`` and ``val_loss``. Early stopping watches
        ``val_accuracy`` (higher is better) unless the source has a ``monitor`` attribute
        ``(metric, "max" | "min")``, as :class:`SplitsSource` does for causal-LM data (``val_loss``)."""
        ...

    def default_task(self) -> Task:
        """The task used when ``fit`` is given none."""
        ...


def shard(perm: torch.Tensor, *, batch_size: int, rank: int, world: int) -> list[torch.Tensor]:
    """Cut ``perm`` into global batches; each rank takes an equal share of every batch.

    With ``world > 1`` a global batch is cut to a multiple of ``world`` (its last few examples, which
    differ every epoch because the permutation does) and a batch smaller than ``world`` is skipped:
    DDP averages the ranks' mean gradients, which is the mean gradient of the global batch only when
    every rank holds the same number of examples. With ``world == 1`` every example is used.
    """
    out = []
    for i in range(0, len(perm), batch_size):
        batch = perm[i : i + batch_size]
        keep = len(batch) - len(batch) % world
        if keep == 0:
            continue
        out.append(batch[:keep][rank::world])
    return out


def permutation(n: int, *, seed: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


def epoch_batches(n: int, *, batch_size: int, seed: int, epoch: int, rank: int, world: int) -> list[torch.Tensor]:
    """This rank's index batches for ``epoch``, from a per-epoch seeded permutation of ``range(n)``."""
    return shard(permutation(n, seed=seed * 1_000_003 + epoch), batch_size=batch_size, rank=rank, world=world)


@torch.no_grad()
def evaluate_split(model: nn.Module, split: Split, *, batch_size: int = 512) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of ``model`` on ``split``, in eval mode (the mode is restored);
    NaN for an empty split."""
    if len(split) == 0:
        return float("nan"), float("nan")
    assert isinstance(split.x, torch.Tensor)
    was_training = model.training
    model.eval()
    device = model_device(model)
    try:
        chunks = [model(split.x[i : i + batch_size].to(device)) for i in range(0, len(split), batch_size)]
        logits = torch.cat(chunks).float().cpu()
    finally:
        model.train(was_training)
    loss = F.cross_entropy(logits, split.y).item()
    return float((logits.argmax(1) == split.y).float().mean().item()), loss


@dataclass
class SplitsSource:
    """One dataset: every training example once per epoch, accuracy on the validation split."""

    data: DataSplits

    def steps_per_epoch(self, config: TrainConfig, world: int) -> int:
        return len(self._indices(config, 0, 0, world))

    def _indices(self, config: TrainConfig, epoch: int, rank: int, world: int) -> list[torch.Tensor]:
        n = len(self.data.train)
        return epoch_batches(n, batch_size=config.batch_size, seed=config.seed, epoch=epoch, rank=rank, world=world)

    def batches(self, config: TrainConfig, epoch: int, rank: int, world: int) -> Iterator[tuple[Any, Any, int]]:
        train = self.data.train
        assert isinstance(train.x, torch.Tensor)
        for idx in self._indices(config, epoch, rank, world):
            yield train.x[idx], train.y[idx], len(idx)

    @property
    def monitor(self) -> tuple[str, str]:
        """The validation metric early stopping and ``restore_best`` watch, and whether higher is better."""
        return ("val_loss", "min") if is_lm_data(self.data) else ("val_accuracy", "max")

    def validate(self, model: nn.Module) -> dict[str, float]:
        if is_lm_data(self.data):
            return lm_validation(model, self.data.val)
        acc, loss = evaluate_split(model, self.data.val)
        return {"val_loss": loss, "val_accuracy": acc}

    def default_task(self) -> Task:
        return CausalLMTask() if is_lm_data(self.data) else ClassificationTask()
