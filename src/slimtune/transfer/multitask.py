"""Multi-task learning: one shared trunk (any supported model with its head taken off), one head per
task, trained on the one loop; afterwards the trunk plus a chosen head is an ordinary single-task model
that saves, reloads, prunes and exports like any other.

    tasks = [TaskSpec("digit", digits), TaskSpec("parity", parity, weight=0.5)]
    mt = multitask_model(model, tasks, weighting="uncertainty")
    result = fit_multitask(mt, tasks, MultiTaskConfig(train=TrainConfig(epochs=10)))
    result.test["parity"]["accuracy"]; save_model(export_task(mt, "parity"), "parity-model/")
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from slimtune.config import Config
from slimtune.errors import ConfigError
from slimtune.train.callbacks import Callback
from slimtune.train.loop import FitResult, TrainConfig, fit
from slimtune.train.multitask import LossWeighting, MultiTaskSource, TaskSpec, evaluate_tasks

__all__ = [
    "MultiTaskConfig",
    "MultiTaskModel",
    "MultiTaskResult",
    "TaskSpec",
    "evaluate_tasks",
    "export_task",
    "fit_multitask",
    "multitask_model",
]
from slimtune.transfer.heads import head_of, set_head_, set_num_classes_


@dataclass(frozen=True, kw_only=True)
class MultiTaskConfig(Config):
    """``weighting``: ``fixed`` (each task's ``weight``) or ``uncertainty`` (learned log-variances,
    Kendall et al. 2018, scaled by each task's ``weight``). ``train.batch_size`` is per task and step."""

    weighting: Literal["fixed", "uncertainty"] = "fixed"
    train: TrainConfig = TrainConfig()


class MultiTaskModel(nn.Module):
    """Inputs → ``{task: logits}``: the trunk once, then every task's head. ``head_path`` is where the
    trunk's own head was (it holds ``nn.Identity`` now); an exported model gets a task head there."""

    def __init__(
        self, trunk: nn.Module, heads: Mapping[str, nn.Module], weighting: LossWeighting, *, head_path: str
    ) -> None:
        super().__init__()
        self.head_path = head_path
        self.trunk = trunk
        self.heads = nn.ModuleDict(dict(heads))
        self.weighting = weighting

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.trunk(x)
        return {name: head(features) for name, head in self.heads.items()}

    @property
    def task_names(self) -> list[str]:
        return list(self.heads.keys())


def multitask_model(
    model: nn.Module,
    tasks: Sequence[TaskSpec],
    *,
    weighting: Literal["fixed", "uncertainty"] = "fixed",
    reuse_head: str | None = None,
    seed: int = 0,
) -> MultiTaskModel:
    """A multi-task model around a copy of ``model``'s trunk with a new head per task (task
    ``reuse_head`` keeps the model's own head when its class count matches)."""
    trunk = copy.deepcopy(model)
    old = head_of(trunk)
    path = set_head_(trunk, nn.Identity())
    torch.manual_seed(seed)
    heads: dict[str, nn.Module] = {}
    for t in tasks:
        if t.name == reuse_head and old.out_features == t.data.num_classes:
            heads[t.name] = old
        else:
            heads[t.name] = nn.Linear(old.in_features, t.data.num_classes, bias=old.bias is not None)
    learned = weighting == "uncertainty"
    weights = LossWeighting([t.weight for t in tasks], learned=learned)
    return MultiTaskModel(trunk, heads, weights, head_path=path)


def export_task(model: MultiTaskModel, name: str, *, label_names: Sequence[str] | None = None) -> nn.Module:
    """The trunk plus task ``name``'s head as an ordinary single-task model (a copy, with its spec)."""
    if name not in model.heads:
        raise ConfigError(f"no task '{name}'; tasks: {', '.join(model.task_names)}")
    head = copy.deepcopy(model.heads[name])
    if not isinstance(head, nn.Linear):
        raise ConfigError(f"task '{name}' has a {type(head).__name__} head; only Linear heads export")
    single = copy.deepcopy(model.trunk)
    set_head_(single, head, path=model.head_path)
    set_num_classes_(single, head.out_features, label_names=label_names)
    return single.train(model.training)


@dataclass
class MultiTaskResult:
    fit: FitResult
    test: dict[str, dict[str, float]] = field(default_factory=dict)  # task → accuracy, loss on its test split
    task_weights: dict[str, float] = field(default_factory=dict)  # the weight each loss had at the end


def fit_multitask(
    model: MultiTaskModel,
    tasks: Sequence[TaskSpec],
    config: MultiTaskConfig | None = None,
    *,
    callbacks: Sequence[Callback] = (),
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool | None = None,
    desc: str = "multitask",
) -> MultiTaskResult:
    """Train every head and the shared trunk on the one loop; the history has per-task validation
    metrics (``val_accuracy/<task>``), the result per-task test metrics."""
    config = config or MultiTaskConfig()
    if [t.name for t in tasks] != model.task_names:
        raise ConfigError(f"tasks {[t.name for t in tasks]} do not match the model's heads {model.task_names}")
    learned = model.weighting.log_vars is not None
    if learned != (config.weighting == "uncertainty"):
        raise ConfigError(
            f"config.weighting is '{config.weighting}' but the model was built with "
            f"{'uncertainty' if learned else 'fixed'} weighting; pass the same to multitask_model"
        )
    source = MultiTaskSource(tasks)
    weighting = {id(p) for p in model.weighting.parameters()}
    groups: list[dict[str, Any]] = [
        {"params": [p for p in model.parameters() if p.requires_grad and id(p) not in weighting]},
        {"params": [p for p in model.weighting.parameters() if p.requires_grad], "weight_decay": 0.0},
    ]  # no weight decay on the log-variances
    result = fit(
        model, source, config=config.train, callbacks=callbacks, param_groups=groups,
        checkpoint_dir=checkpoint_dir, resume=resume, progress=progress, desc=desc,
    )  # fmt: skip
    weights = dict(zip(model.task_names, model.weighting.effective()))
    return MultiTaskResult(result, evaluate_tasks(model, tasks, split="test"), weights)
