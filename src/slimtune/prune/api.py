"""One verb for every pruning method: ``prune_(model, config)``. A method is a config dataclass plus a
handler registered for it; recipes, the CLI and the contract tests find methods through ``PRUNERS``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from torch import nn

from slimtune._registry import MethodRegistry
from slimtune.config import Config
from slimtune.data.core import DataSplits
from slimtune.errors import ConfigError
from slimtune.train.loop import TrainConfig


@dataclass
class PruneSummary:
    """What a pruning run did: ``record`` (JSON: the method and its outcome, e.g. structured pruning's ratio,
    targets and MACs) and, for structured pruning, ``groups`` (one row per group: what was cut, what stayed
    whole and why); ``lines`` say the same for people (logged to ``slimtune.prune``)."""

    record: dict[str, Any]
    groups: list[dict[str, Any]] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)


@dataclass
class PruneContext:
    """What a handler may use besides the model: data and a training budget for data-driven methods."""

    data: DataSplits | None = None
    train: TrainConfig | None = None  # training during pruning (movement, gradual, iterative, L1)
    progress: bool | None = None
    checkpoint_dir: Path | None = None
    resume: bool = False
    example_inputs: Any = None  # what structured pruning traces when there is no data (a model brought as is)
    summary: PruneSummary | None = None  # set by handlers that report what they did

    def require_data(self, method: str) -> DataSplits:
        if self.data is None:
            raise ConfigError(f"pruning method '{method}' needs training data: pass data=... (recipes do this)")
        return self.data

    def require_train(self, method: str) -> TrainConfig:
        if self.train is None:
            raise ConfigError(f"pruning method '{method}' trains while pruning: give it a 'train' config")
        return self.train


Handler = Callable[[nn.Module, Any, PruneContext], None]
C = TypeVar("C", bound=type[Config])

PRUNERS: MethodRegistry[type[Config], Handler] = MethodRegistry("pruning method", "register_pruner")


def register_pruner(name: str, config_cls: type[Config], *, help: str = "") -> Callable[[Handler], Handler]:
    """Register ``handler`` for ``config_cls`` under ``name`` (the name recipes use as ``method:``)."""
    return PRUNERS.register_handler(name, config_cls, help=help)


def prune_(
    model: nn.Module,
    config: Config,
    *,
    data: DataSplits | None = None,
    train: TrainConfig | None = None,
    progress: bool | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    example_inputs: Any = None,
) -> None:
    """Prune ``model`` in place with the method ``config`` names. Unstructured methods leave zeros
    (keep them through later training with ``MaskCallback(masks_from_zeros(model))``); structured
    methods physically remove neurons, channels, heads or layers (``example_inputs``: what they run the model on
    to trace it, when ``data`` is not given) and log, per group, what was cut and what stayed whole and why."""
    prune_summarized_(
        model, config, data=data, train=train, progress=progress, checkpoint_dir=checkpoint_dir, resume=resume,
        example_inputs=example_inputs,
    )  # fmt: skip


def prune_summarized_(
    model: nn.Module,
    config: Config,
    *,
    data: DataSplits | None = None,
    train: TrainConfig | None = None,
    progress: bool | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    example_inputs: Any = None,
) -> PruneSummary:
    """``prune_``, returning what the method did (recipes put it in the report and the model card)."""
    handler = PRUNERS.handler_for(config)
    ctx = PruneContext(
        data=data,
        train=train,
        progress=progress,
        checkpoint_dir=Path(checkpoint_dir) if checkpoint_dir else None,
        resume=resume,
        example_inputs=example_inputs,
    )
    handler(model, config, ctx)
    if ctx.summary is not None:
        return ctx.summary
    name = next((n for n in PRUNERS.names() if PRUNERS.get(n) is type(config)), type(config).__name__)
    return PruneSummary({"method": name, **config.to_dict()})
