"""Transfer-learning recipe stages: ``finetune`` and ``multitask``. Their options are the Python API's
config objects (``FinetuneConfig``, ``MultiTaskConfig``); stages only adapt them to the recipe context.

    - {stage: finetune, freeze: all-but-last-2, lr_decay: 0.5, train: {epochs: 3, lr: 3e-4}}
    - {stage: finetune, lora: {r: 8, alpha: 16}, train: {epochs: 3, lr: 1e-3}}
    - {stage: multitask, weighting: uncertainty, tasks: [{name: tweets-3, weight: 0.5}], train: {epochs: 5}}

``multitask``: the recipe's data is always a task (the one whose head the stage keeps, so later stages
go on with it); ``tasks`` lists the others by dataset name or path (``seed``, ``limit``, a ``label``
naming the head; list the recipe's own data to set its weight). Every task's trunk + head is saved
under ``tasks/<label>/``; text tasks are tokenized with the current model's tokenizer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimtune.config import Config, check
from slimtune.data.core import DataSplits
from slimtune.errors import ConfigError, DataError
from slimtune.models import save_model
from slimtune.prune import MaskCallback
from slimtune.recipe.stages import STAGES, Context, StageOutput, masks_if_sparse
from slimtune.train.callbacks import Callback, LoopState
from slimtune.train.multitask import TaskSpec
from slimtune.transfer.finetune import FinetuneConfig, finetune_
from slimtune.transfer.multitask import MultiTaskConfig, export_task, fit_multitask, multitask_model


class _KeepZeros(Callback):
    """``MaskCallback`` over the layers that still have the masked shape (a replaced head's mask is
    dropped); ``prefix`` maps the masks' names into a wrapping model. Also counts the trainable parameters."""

    def __init__(self, masks: dict[str, torch.Tensor] | None, *, prefix: str = "") -> None:
        self.masks, self.prefix = masks or {}, prefix
        self.inner: MaskCallback | None = None
        self.trainable = 0

    def on_fit_start(self, state: LoopState) -> None:
        self.trainable = sum(p.numel() for p in state.model.parameters() if p.requires_grad)
        modules = dict(state.model.named_modules())
        kept = {}
        for name, mask in self.masks.items():
            weight = getattr(modules.get(self.prefix + name), "weight", None)
            if isinstance(weight, torch.Tensor) and weight.shape == mask.shape:
                kept[self.prefix + name] = mask
        self.inner = MaskCallback(kept) if kept else None

    def on_after_backward(self, state: LoopState) -> None:
        if self.inner is not None:
            self.inner.on_after_backward(state)

    def on_step_end(self, state: LoopState) -> None:
        if self.inner is not None:
            self.inner.on_step_end(state)


class FinetuneStage:
    """Fine-tune the current model: a new head if the label count differs, a freeze policy,
    discriminative learning rates or LoRA adapters (merged into the weights before saving)."""

    def parse(self, raw: dict[str, Any], *, where: str) -> FinetuneConfig:
        cfg = FinetuneConfig.from_dict(raw, where=where)
        if cfg.lora is not None and not cfg.lora.merge:
            raise ConfigError(f"{where}.lora.merge: a recipe stage always merges the adapters; drop 'merge'")
        return cfg

    def run(self, ctx: Context, cfg: FinetuneConfig, out: Path) -> StageOutput:
        keep = _KeepZeros(None if cfg.lora is not None else ctx.masks)  # merged adapters make layers dense
        result = finetune_(
            ctx.model, ctx.data, cfg, callbacks=[keep], checkpoint_dir=out / "checkpoints",
            resume=ctx.resume, progress=ctx.progress, desc="finetune",
        )  # fmt: skip
        ctx.masks = masks_if_sparse(ctx.model)
        info = {"freeze": cfg.freeze, "lr_decay": cfg.lr_decay, "lora": cfg.lora.to_dict() if cfg.lora else None}
        info |= {"trainable_params": keep.trainable, "best_epoch": result.best_epoch}
        return StageOutput(save_model(ctx.model, out / "model"), model=ctx.model, extra={"finetune": info})


@dataclass(frozen=True, kw_only=True)
class TaskRef(Config):
    name: str  # a registered dataset or a data path
    weight: float = 1.0
    label: str | None = None  # the head's name; default: the dataset's name
    seed: int = 0
    limit: int | None = None

    def __post_init__(self) -> None:
        check(self.weight > 0, f"task '{self.name}': weight must be > 0, got {self.weight}")
        check(self.limit is None or self.limit >= 10, f"task '{self.name}': limit must be >= 10, got {self.limit}")


@dataclass(frozen=True, kw_only=True)
class MultiTaskStageConfig(MultiTaskConfig):
    tasks: tuple[TaskRef, ...] = ()

    def __post_init__(self) -> None:
        check(len(self.tasks) > 0, "multitask: list the other tasks, e.g. tasks: [{name: tweets-3, weight: 0.5}]")


def _tokenized(data: DataSplits, model: nn.Module) -> DataSplits:
    """Text data as token ids with the tokenizer the current model carries."""
    if data.kind != "text":
        return data
    from slimtune.data.text import WordTokenizer
    from slimtune.models import hf
    from slimtune.models.inputs import hf_tokenize_splits, tokenize_splits

    spec: dict[str, Any] = getattr(model, "slimtune_spec", {})
    pre = spec.get("preprocess", {})
    if "hf_tokenizer" in pre:
        return hf_tokenize_splits(data, hf.tokenizer_from_spec(spec))[0]
    if "tokenizer" in pre:
        tok = WordTokenizer.from_dict(pre["tokenizer"])
        return tokenize_splits(data, max_length=pre["max_length"], tokenizer=tok)[0]
    raise DataError(f"task '{data.name}' is text but the current model carries no tokenizer")


def _task_specs(ctx: Context, cfg: MultiTaskStageConfig) -> tuple[list[TaskSpec], str]:
    from slimtune.data import load

    main = ctx.data.name
    own = [t for t in cfg.tasks if t.name == main and t.limit is None and t.seed == 0]
    specs = [TaskSpec(own[0].label or main if own else main, ctx.data, weight=own[0].weight if own else 1.0)]
    for ref in cfg.tasks:
        if own and ref is own[0]:
            continue
        data = _tokenized(load(ref.name, seed=ref.seed, limit=ref.limit), ctx.model)
        specs.append(TaskSpec(ref.label or data.name, data, weight=ref.weight))
    return specs, specs[0].name


class MultiTaskStage:
    """Train the current model's trunk on several tasks at once (one head each); keep the recipe data's head."""

    def parse(self, raw: dict[str, Any], *, where: str) -> MultiTaskStageConfig:
        return MultiTaskStageConfig.from_dict(raw, where=where)

    def run(self, ctx: Context, cfg: MultiTaskStageConfig, out: Path) -> StageOutput:
        tasks, main = _task_specs(ctx, cfg)
        model = multitask_model(ctx.model, tasks, weighting=cfg.weighting, reuse_head=main, seed=cfg.train.seed)
        result = fit_multitask(
            model, tasks, MultiTaskConfig(weighting=cfg.weighting, train=cfg.train),
            callbacks=[_KeepZeros(ctx.masks, prefix="trunk.")], checkpoint_dir=out / "checkpoints",
            resume=ctx.resume, progress=ctx.progress,
        )  # fmt: skip
        for t in tasks[1:]:
            save_model(export_task(model, t.name, label_names=t.data.label_names), out / "tasks" / t.name)
        single = export_task(model, main, label_names=ctx.data.label_names)
        ctx.masks = masks_if_sparse(single)
        extra = {"tasks": result.test, "task_weights": result.task_weights, "best_epoch": result.fit.best_epoch}
        return StageOutput(save_model(single, out / "model"), model=single, extra=extra)


STAGES.add("finetune", FinetuneStage(), help="fine-tune: new head, freeze policy, discriminative LRs or LoRA")
STAGES.add("multitask", MultiTaskStage(), help="train the trunk on several datasets at once; keep this data's head")
