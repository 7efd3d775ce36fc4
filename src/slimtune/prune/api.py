"""One verb for every pruning method: ``prune_(model, config)``. A method is a config dataclass plus a
handler registered for it; recipes, the CLI and the contract tests find methods through ``PRUNERS``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from torch import nn

from slimtune._registry import MethodRegistry
from slimtune.config import Config
from slimtune.data.core import DataSplits
from slimtune.errors import ConfigError
from slimtune.train.loop import TrainConfig


@dataclass
class PruneContext:
    """What a handler may use besides the model: data and a training budget for data-driven methods."""

    data: DataSplits | None = None
    train: TrainConfig | None = None  # training during pruning (movement, gradual, iterative, L1)
    progress: bool | None = None
    checkpoint_dir: Path | None = None
    resume: bool = False
    example_inputs: Any = None  # what structured pruning traces when there is no data (a model brought as is)

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
    to trace it, when ``data`` is not given)."""
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
