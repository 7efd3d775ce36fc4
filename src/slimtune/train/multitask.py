"""Multi-task learning on the one loop: several tasks' datasets as one training source, and the task
(loss) that combines their losses with fixed or learned (uncertainty) weights.

Every step holds one batch of every task (``batch_size`` examples each, split evenly over DDP ranks),
concatenated into one forward pass through the shared trunk; an epoch is as many steps as the largest
task needs to be seen once, smaller tasks cycling through fresh permutations. The model returns a dict
of logits per task (see :class:`slimtune.transfer.multitask.MultiTaskModel`); labels arrive as
``(N, 2)`` rows of (task index, label).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from slimtune.data.core import DataSplits, Split
from slimtune.errors import ConfigError, DataError
from slimtune.train.device import model_device
from slimtune.train.sources import permutation, shard
from slimtune.train.tasks import Task

if TYPE_CHECKING:
    from slimtune.train.loop import TrainConfig

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (logits, labels) → scalar


@dataclass
class TaskSpec:
    """One task: its name (the key of its head), its data, its loss weight and its loss function."""

    name: str
    data: DataSplits
    weight: float = 1.0
    loss: LossFn = field(default=F.cross_entropy)

    def __post_init__(self) -> None:
        if not self.name or "." in self.name:
            raise ConfigError(f"task name {self.name!r} must be non-empty and contain no '.'; give a 'label'")
        if self.weight <= 0:
            raise ConfigError(f"task '{self.name}': weight must be > 0, got {self.weight}")
        for split in (self.data.train, self.data.val, self.data.test):
            if not isinstance(split.x, torch.Tensor):
                raise DataError(f"task '{self.name}': inputs must be tensors; tokenize text first")
        if len(self.data.train) == 0:
            raise DataError(f"task '{self.name}': the training split is empty")


class LossWeighting(nn.Module):
    """Σ wₜ·Lₜ (fixed), or Kendall et al. 2018's homoscedastic-uncertainty weighting with learned
    sₜ = log σₜ²: Σ wₜ·(exp(−sₜ)·Lₜ + sₜ/2) (the classification form of the paper's eq. 10)."""

    def __init__(self, weights: Sequence[float], *, learned: bool = False) -> None:
        super().__init__()
        self.register_buffer("weights", torch.tensor([float(w) for w in weights]))
        self.log_vars = nn.Parameter(torch.zeros(len(weights))) if learned else None

    def forward(self, losses: torch.Tensor) -> torch.Tensor:
        w = self.get_buffer("weights")
        if self.log_vars is None:
            return (w * losses).sum()
        return (w * (torch.exp(-self.log_vars) * losses + 0.5 * self.log_vars)).sum()

    def effective(self) -> list[float]:
        """The weight each task's loss gets now (wₜ·exp(−sₜ) when learned)."""
        w = self.get_buffer("weights")
        if self.log_vars is not None:
            w = w * torch.exp(-self.log_vars.detach())
        return [float(v) for v in w]


def _unwrap(model: nn.Module) -> nn.Module:
    inner = getattr(model, "module", model)  # DistributedDataParallel
    return inner if isinstance(inner, nn.Module) else model


@dataclass
class MultiTaskLoss:
    """Task for the loop: per-task losses on each task's rows, combined by the model's ``weighting``.
    Returns (combined loss, the per-task losses)."""

    names: Sequence[str]
    losses: Sequence[LossFn]
    splits_batches: ClassVar[bool] = False  # a step holds one batch per task: no gradient accumulation

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = model(x)
        per_task = []
        for i, (name, fn) in enumerate(zip(self.names, self.losses)):
            rows = y[:, 0] == i
            per_task.append(fn(out[name][rows], y[rows, 1]))
        losses = torch.stack(per_task)
        weighting = getattr(_unwrap(model), "weighting", None)
        if not isinstance(weighting, nn.Module):
            raise ConfigError("multi-task training needs a MultiTaskModel (slimtune.transfer.multitask_model)")
        return weighting(losses), losses.detach()


@torch.no_grad()
def evaluate_task(model: nn.Module, name: str, split: Split, loss: LossFn = F.cross_entropy) -> dict[str, float]:
    """``accuracy`` and ``loss`` of task ``name``'s head on ``split`` (eval mode; the mode is restored)."""
    if len(split) == 0:
        return {"accuracy": float("nan"), "loss": float("nan")}
    assert isinstance(split.x, torch.Tensor)
    was_training = model.training
    model.eval()
    device = model_device(model)
    try:
        chunks = [model(split.x[i : i + 512].to(device))[name] for i in range(0, len(split), 512)]
        logits = torch.cat(chunks).float().cpu()
    finally:
        model.train(was_training)
    acc = (logits.argmax(1) == split.y).float().mean().item()
    return {"accuracy": float(acc), "loss": float(loss(logits, split.y).item())}


def evaluate_tasks(model: nn.Module, tasks: Sequence[TaskSpec], *, split: str = "test") -> dict[str, dict[str, float]]:
    """Per-task ``accuracy`` and ``loss`` on each task's ``split`` (train, val or test)."""
    return {t.name: evaluate_task(model, t.name, getattr(t.data, split), t.loss) for t in tasks}


@dataclass
class MultiTaskSource:
    """The tasks' training splits interleaved for ``fit``: each step holds one batch of every task."""

    tasks: Sequence[TaskSpec]

    def __post_init__(self) -> None:
        if not self.tasks:
            raise ConfigError("multi-task training needs at least one task")
        names = [t.name for t in self.tasks]
        if len(set(names)) != len(names):
            raise ConfigError(f"task names must be unique, got {names}; give each a distinct label")
        shapes = {t.name: tuple(t.data.train.x.shape[1:]) for t in self.tasks}  # type: ignore[union-attr]
        if len(set(shapes.values())) > 1:
            raise DataError(f"the tasks share one trunk, so their inputs must have one shape; got {shapes}")

    def _steps(self, task: TaskSpec, config: TrainConfig, world: int) -> int:
        return len(shard(torch.arange(len(task.data.train)), batch_size=config.batch_size, rank=0, world=world))

    def steps_per_epoch(self, config: TrainConfig, world: int) -> int:
        return max(self._steps(t, config, world) for t in self.tasks)

    def _indices(self, i: int, config: TrainConfig, epoch: int, rank: int, world: int) -> list[torch.Tensor]:
        task, steps = self.tasks[i], self.steps_per_epoch(config, world)
        if self._steps(task, config, world) == 0:
            raise DataError(f"task '{task.name}' has fewer training examples than the {world} ranks")
        out: list[torch.Tensor] = []
        cycle = 0
        while len(out) < steps:  # smaller tasks go round again, in a new order each time
            seed = config.seed * 1_000_003 + epoch * 7_919 + i * 104_729 + cycle * 15_485_863
            perm = permutation(len(task.data.train), seed=seed)
            out += shard(perm, batch_size=config.batch_size, rank=rank, world=world)
            cycle += 1
        return out[:steps]

    def batches(self, config: TrainConfig, epoch: int, rank: int, world: int) -> Iterator[tuple[Any, Any, int]]:
        per_task = [self._indices(i, config, epoch, rank, world) for i in range(len(self.tasks))]
        for step in zip(*per_task):
            xs, ys = [], []
            for i, (task, idx) in enumerate(zip(self.tasks, step)):
                train = task.data.train
                assert isinstance(train.x, torch.Tensor)
                xs.append(train.x[idx])
                ys.append(torch.stack([torch.full_like(train.y[idx], i), train.y[idx]], dim=1))
            y = torch.cat(ys)
            yield torch.cat(xs), y, len(y)

    def validate(self, model: nn.Module) -> dict[str, float]:
        per = {t.name: evaluate_task(model, t.name, t.data.val, t.loss) for t in self.tasks}
        out = {
            "val_loss": sum(m["loss"] for m in per.values()) / len(per),
            "val_accuracy": sum(m["accuracy"] for m in per.values()) / len(per),
        }
        for name, m in per.items():
            out[f"val_loss/{name}"], out[f"val_accuracy/{name}"] = m["loss"], m["accuracy"]
        return out

    def default_task(self) -> Task:
        return MultiTaskLoss([t.name for t in self.tasks], [t.loss for t in self.tasks])
