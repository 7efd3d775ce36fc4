"""Fine-tune a (pretrained) model on new data with the one training loop: a new head when the label
count differs, a freeze policy, discriminative learning rates per depth, or LoRA adapters. Causal LMs
(``kind == "lm"`` data) fine-tune the same way with next-token cross-entropy (full, frozen blocks, or
LoRA merged back into plain weights); they keep their LM head."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from slimtune.config import Config, check
from slimtune.data.core import DataSplits
from slimtune.errors import ConfigError
from slimtune.train.callbacks import Callback
from slimtune.train.lm import is_lm_data
from slimtune.train.loop import FitResult, TrainConfig, fit
from slimtune.train.tasks import Task
from slimtune.transfer.freeze import FreezeCallback, depth_param_groups, freeze_, parse_freeze
from slimtune.transfer.heads import num_classes_of, replace_head_
from slimtune.transfer.lora import LoRAConfig, add_lora_, merge_lora_


@dataclass(frozen=True, kw_only=True)
class FinetuneConfig(Config):
    """``freeze``: ``none``, ``linear-probe``, ``all-but-last-<k>`` or ``gradual`` (one more block every
    ``unfreeze_every`` epochs); ``lr_decay``: a block ``d`` blocks below the head trains at
    ``lr × lr_decay**d`` (ULMFiT uses 1/2.6); ``new_head``: replace the head even when the label count
    matches (it is always replaced when it differs); ``lora``: train LoRA adapters (and the head) instead,
    merged into the weights at the end unless ``lora.merge`` is false."""

    freeze: str = "none"
    unfreeze_every: int = 1
    lr_decay: float = 1.0
    new_head: bool = False
    lora: LoRAConfig | None = None
    train: TrainConfig = TrainConfig()

    def __post_init__(self) -> None:
        parse_freeze(self.freeze)
        check(self.unfreeze_every >= 1, f"unfreeze_every must be >= 1, got {self.unfreeze_every}")
        check(0 < self.lr_decay <= 1, f"lr_decay must be in (0, 1], got {self.lr_decay}")
        check(
            self.lora is None or self.freeze == "none",
            f"freeze: {self.freeze!r} with lora: LoRA already trains only the adapters and the head; drop one",
        )


def prepare_finetune_(
    model: nn.Module, data: DataSplits, config: FinetuneConfig
) -> tuple[list[dict[str, Any]], list[Callback]]:
    """Head, adapters and freezing for ``config``, in place; returns the ``fit`` parameter groups and
    callbacks. ``finetune_`` calls this; use it directly to train with your own ``fit`` call."""
    if is_lm_data(data):  # a causal LM keeps its (pretrained) LM head; the loop trains next-token CE
        if config.new_head:
            raise ConfigError("new_head: a causal LM keeps its LM head; drop new_head for LM data")
    elif config.new_head or num_classes_of(model) != data.num_classes:
        replace_head_(model, data.num_classes, label_names=data.label_names, seed=config.train.seed)
    if config.lora is not None:
        add_lora_(model, config.lora)
        callback = FreezeCallback(None)
        include = None
    else:
        kind, _ = parse_freeze(config.freeze)
        freeze_(model, config.freeze, every=config.unfreeze_every)
        callback = FreezeCallback(None if kind == "none" else config.freeze, every=config.unfreeze_every)
        every_param = kind == "gradual"  # in the optimizer from the start, updated once unfrozen
        include = (lambda p: True) if every_param else None
    groups = depth_param_groups(model, lr_decay=config.lr_decay, include=include)
    if not any(p.requires_grad for g in groups for p in g["params"]):
        raise ConfigError("nothing to train: the freeze policy leaves every parameter frozen")
    return groups, [callback]


def finetune_(
    model: nn.Module,
    data: DataSplits,
    config: FinetuneConfig | None = None,
    *,
    task: Task | None = None,
    callbacks: Sequence[Callback] = (),
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool | None = None,
    desc: str = "finetune",
) -> FitResult:
    """Fine-tune ``model`` in place on ``data`` with ``config`` and return the training history.

    Afterwards the model is ordinary again: adapters merged (unless ``lora.merge`` is false) and
    ``requires_grad`` back to what it was before (every parameter, after a merge), so it saves, prunes,
    quantizes and exports like any other. Frozen parameters are bit-identical to before.
    """
    config = config or FinetuneConfig()
    before = {id(p): p.requires_grad for p in model.parameters()}
    groups, own = prepare_finetune_(model, data, config)
    try:
        result = fit(
            model, data, config=config.train, task=task, callbacks=[*own, *callbacks], param_groups=groups,
            checkpoint_dir=checkpoint_dir, resume=resume, progress=progress, desc=desc,
        )  # fmt: skip
    finally:
        for p in model.parameters():
            p.requires_grad_(before.get(id(p), True))
    if config.lora is not None and config.lora.merge:
        merge_lora_(model)
    return result
