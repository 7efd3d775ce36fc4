"""The one training loop. Fine-tuning, recovery after pruning, distillation, QAT and multi-task
learning are tasks, callbacks and training sources plugged into ``fit``; there is no second loop.

Features: AdamW/SGD, cosine/step/constant LR, optimizer parameter groups (per-group LR scale and
weight decay: discriminative fine-tuning), frozen parameters left out of the optimizer, early stopping
on the source's validation metric (accuracy for classifiers, NLL for causal LMs) with the best weights
restored, a checkpoint after every epoch and exact resume after a kill, a progress bar with ETA,
gradient accumulation, activation checkpointing, training on any device (``device``) in fp32, bf16 or
fp16 (``precision``; see :mod:`slimtune.train.device`), and DistributedDataParallel when launched by
``torchrun`` (no code change for the user; NCCL on GPUs, gloo on the CPU).
"""

from __future__ import annotations

import copy
import logging
import math
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from slimtune.config import Config, check
from slimtune.data.core import DataSplits
from slimtune.errors import ConfigError, DataError, TrainingDivergedError
from slimtune.train import ddp
from slimtune.train.callbacks import Callback, LoopState
from slimtune.train.checkpoint import CHECKPOINT, load_checkpoint, save_checkpoint
from slimtune.train.device import PRECISIONS, model_device, resolve_device, to_device, training_device
from slimtune.train.sources import SplitsSource, TrainSource, epoch_batches
from slimtune.train.step import Amp, enable_checkpointing, forward_backward
from slimtune.train.tasks import Task

__all__ = ["CHECKPOINT", "FitResult", "TrainConfig", "fit", "predict"]
log = logging.getLogger("slimtune.train")


@dataclass(frozen=True, kw_only=True)
class TrainConfig(Config):
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: Literal["adamw", "sgd"] = "adamw"
    momentum: float = 0.9
    schedule: Literal["cosine", "constant", "step"] = "cosine"
    seed: int = 0
    patience: int | None = None
    restore_best: bool = True
    max_grad_norm: float | None = None
    grad_accum: int = 1  # micro-batches per batch, gradients summed before one step (slimtune.train.step)
    gradient_checkpointing: bool = False  # recompute activations in the backward (Hugging Face models)
    device: str = "auto"  # auto | cpu | cuda | cuda:N (slimtune.train.device)
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # autocast; fp16 adds a GradScaler

    def __post_init__(self) -> None:
        check(self.epochs >= 0, f"epochs must be >= 0, got {self.epochs}")
        check(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        check(self.lr > 0, f"lr must be > 0, got {self.lr}")
        check(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        check(self.patience is None or self.patience >= 1, f"patience must be >= 1, got {self.patience}")
        check(self.grad_accum >= 1, f"grad_accum must be >= 1, got {self.grad_accum}")
        check(self.grad_accum <= self.batch_size, f"grad_accum {self.grad_accum} > batch_size {self.batch_size}")
        resolve_device(self.device, distributed=False)  # a bad string, or CUDA on a machine without: one line now
        check(self.precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")


@dataclass
class FitResult:
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = -1
    best_val_accuracy: float = float("nan")  # val_accuracy of the best epoch
    monitor: str = "val_accuracy"  # the validation metric that picked the best epoch
    best_value: float = float("nan")  # its value at the best epoch


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, *, batch_size: int = 512) -> torch.Tensor:
    """Logits for every row of ``x``, in eval mode (the model's mode is restored after)."""
    was_training = model.training
    model.eval()
    device = model_device(model)
    try:
        outs = [model(x[i : i + batch_size].to(device)).to(x.device) for i in range(0, len(x), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(outs) if outs else torch.empty(0)


ParamGroup = Mapping[str, Any]  # {"params": [...], "lr_scale": 1.0, "weight_decay": <config's>}
NOTHING_TO_TRAIN = "nothing to train: every parameter is frozen; unfreeze some layers or drop the stage"


def _param_groups(model: nn.Module, groups: Sequence[ParamGroup] | None, cfg: TrainConfig) -> list[dict[str, Any]]:
    """Optimizer groups. Without ``groups``: one group of the parameters that require grad (frozen ones
    are left out, so no weight decay or momentum ever touches them). With ``groups``: exactly the listed
    parameters, each group at ``lr × lr_scale``; a listed parameter that is frozen now (gradual
    unfreezing) gets no gradient and is skipped by the optimizer until it is unfrozen."""
    if groups is None:
        groups = [{"params": [p for p in model.parameters() if p.requires_grad]}]
    out: list[dict[str, Any]] = []
    seen: set[int] = set()
    for g in groups:
        unknown = set(g) - {"params", "lr_scale", "weight_decay"}
        if unknown:
            raise ConfigError(f"parameter group keys {sorted(unknown)} unknown; use params, lr_scale, weight_decay")
        params = [p for p in g["params"] if id(p) not in seen]
        seen.update(id(p) for p in params)
        if params:
            scale = float(g.get("lr_scale", 1.0))
            if scale <= 0:
                raise ConfigError(f"lr_scale must be > 0, got {scale}")
            wd = float(g.get("weight_decay", cfg.weight_decay))
            out.append({"params": params, "lr": cfg.lr * scale, "weight_decay": wd})
    if not any(p.requires_grad for p in _flat(out)):
        raise ConfigError(NOTHING_TO_TRAIN)
    return out


def _flat(groups: list[dict[str, Any]]) -> list[nn.Parameter]:
    return [p for g in groups for p in g["params"]]


def _optimizer(groups: list[dict[str, Any]], cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _lr_lambda(cfg: TrainConfig, total_steps: int) -> Any:
    def f(step: int) -> float:
        if cfg.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / max(1, total_steps)))
        if cfg.schedule == "step":
            return 0.1 ** (3 * step // max(1, total_steps))
        return 1.0

    return f


def _batches(n: int, cfg: TrainConfig, epoch: int, rank: int, world: int) -> list[torch.Tensor]:
    """Global batches from a per-epoch seeded permutation; each rank takes an equal share of every batch
    (see :func:`slimtune.train.sources.shard`)."""
    return epoch_batches(n, batch_size=cfg.batch_size, seed=cfg.seed, epoch=epoch, rank=rank, world=world)


def _trainable(model: nn.Module) -> tuple[bool, ...]:
    return tuple(p.requires_grad for p in model.parameters())


def fit(
    model: nn.Module,
    data: DataSplits | TrainSource,
    *,
    config: TrainConfig,
    task: Task | None = None,
    callbacks: Sequence[Callback] = (),
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool | None = None,
    desc: str = "train",
    param_groups: Sequence[ParamGroup] | None = None,
) -> FitResult:
    """Train ``model`` in place on ``data.train``, validating on ``data.val`` after every epoch.

    ``data`` may also be any :class:`~slimtune.train.sources.TrainSource` (e.g. a multi-task source).
    ``param_groups`` (dicts with ``params``, optional ``lr_scale`` and ``weight_decay``) replace the
    default single group of the parameters that require grad; parameters in no group are not trained.

    Under ``torchrun`` (``WORLD_SIZE > 1``) this trains with DistributedDataParallel; see
    :mod:`slimtune.train.ddp` for the launch command and what is kept identical across ranks.
    """
    if isinstance(data, DataSplits):
        train, val = data.train, data.val
        if not isinstance(train.x, torch.Tensor) or not isinstance(val.x, torch.Tensor):
            raise DataError(
                "fit needs tensor inputs; tokenize text first with slimtune.models.inputs.tokenize_splits "
                "(recipes and slimtune stage do it)"
            )
        if len(train) == 0:
            raise DataError("the training split is empty; use a larger dataset or a smaller val/test fraction")
        from slimtune.models.inputs import check_model_fits

        check_model_fits(model, data)  # one line, not a shape error deep in torch
    source: TrainSource = SplitsSource(data) if isinstance(data, DataSplits) else data
    origin = model_device(model)
    device = training_device(model, config.device)
    undo = None
    try:
        undo = enable_checkpointing(model) if config.gradient_checkpointing else None
        model.to(device)
        with ddp.process_group(device) as distributed:
            if distributed and device.type == "cuda":
                torch.cuda.set_device(device)
            return _fit(
                model,
                source,
                config=config,
                task=task or source.default_task(),
                callbacks=callbacks,
                checkpoint_dir=checkpoint_dir,
                resume=resume,
                progress=progress,
                desc=desc,
                distributed=distributed,
                param_groups=param_groups,
                device=device,
            )
    finally:
        model.to(origin)  # back where it came from: later stages (export, ORT) expect it there
        if undo is not None:
            undo()


def _fit(
    model: nn.Module,
    source: TrainSource,
    *,
    config: TrainConfig,
    task: Task,
    callbacks: Sequence[Callback],
    checkpoint_dir: str | Path | None,
    resume: bool,
    progress: bool | None,
    desc: str,
    distributed: bool,
    param_groups: Sequence[ParamGroup] | None,
    device: torch.device,
) -> FitResult:
    rank, world = ddp.world() if distributed else (0, 1)
    if distributed and rank == 0 and config.batch_size % world:
        warnings.warn(
            f"batch_size {config.batch_size} is not a multiple of the {world} ranks; each batch is cut to "
            f"{config.batch_size - config.batch_size % world} examples so every rank gets an equal share",
            stacklevel=3,
        )
    torch.manual_seed(config.seed)
    groups = _param_groups(model, param_groups, config)
    params = _flat(groups)
    optimizer = _optimizer(groups, config)
    steps_per_epoch = source.steps_per_epoch(config, world)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(config, steps_per_epoch * config.epochs))
    state = LoopState(model=model, optimizer=optimizer)
    amp = Amp(device, config.precision)
    monitor, mode = getattr(source, "monitor", ("val_accuracy", "max"))
    result = FitResult(monitor=monitor)
    best_state: dict[str, torch.Tensor] | None = None
    bad_epochs, start_epoch = 0, 0
    ckpt = Path(checkpoint_dir) / CHECKPOINT if checkpoint_dir else None
    saved = load_checkpoint(ckpt, resume, distributed)
    if saved is not None:
        if {**TrainConfig().to_dict(), **saved["config"]} != config.to_dict():  # keys added since: defaults
            raise ConfigError(f"cannot resume from {ckpt}: it was written with a different training config")
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        amp.load_state_dict(saved.get("scaler"))
        start_epoch, bad_epochs = saved["epoch"], saved["bad_epochs"]
        best_state, result.history = saved["best_state"], saved["history"]
        result.best_epoch, result.best_val_accuracy = saved["best_epoch"], saved["best_val_accuracy"]
        result.best_value = saved.get("best_value", result.best_val_accuracy)
    net: nn.Module = model
    wrapped_for: tuple[bool, ...] | None = None  # which parameters required grad when DDP wrapped the model
    state.history = result.history
    show = rank == 0 and (sys.stderr.isatty() if progress is None else progress)
    bar = _progress_bar(show, total=steps_per_epoch * config.epochs, initial=steps_per_epoch * start_epoch, desc=desc)
    for cb in callbacks:
        cb.on_fit_start(state)
    started = time.perf_counter()
    for epoch in range(start_epoch, config.epochs):
        state.epoch, state.step = epoch, 0
        torch.manual_seed(config.seed * 100_003 + epoch * 7 + rank)  # dropout etc.: same stream on resume
        model.train()  # before the callbacks: they may put frozen parts back in eval mode
        for cb in callbacks:
            cb.on_epoch_start(state)
        if distributed and _trainable(model) != wrapped_for:
            # after any resume, and again whenever a callback (gradual unfreezing) changed what trains:
            # DDP reduces exactly the parameters that required grad when it was built. The wrapper
            # broadcasts rank 0's parameters and buffers to every rank.
            wrapped_for = _trainable(model)
            net = nn.parallel.DistributedDataParallel(model)
        if not any(p.requires_grad for p in params):
            raise ConfigError(NOTHING_TO_TRAIN)
        total, count = 0.0, 0
        for x, y, n in source.batches(config, epoch, rank, world):
            optimizer.zero_grad(set_to_none=True)
            x, y = to_device(x, device), to_device(y, device)
            loss = forward_backward(net, task, x, y, amp=amp, accum=config.grad_accum, distributed=distributed)
            amp.unscale(optimizer)
            for cb in callbacks:
                cb.on_after_backward(state)
            if config.max_grad_norm:
                nn.utils.clip_grad_norm_(params, config.max_grad_norm)
            amp.step(optimizer)
            scheduler.step()
            state.step += 1
            state.global_step += 1
            for cb in callbacks:
                cb.on_step_end(state)
            value = float(loss)
            if not math.isfinite(value) and amp.scaler is None:  # NaN/inf: every later step would only spread it
                raise TrainingDivergedError(
                    f"{desc or 'training'}: the loss became {value} in epoch {epoch + 1} (step {state.step}); "
                    f"lower the learning rate (lr {config.lr:g}) or set max_grad_norm, and check the data for NaN"
                )
            total, count = total + value * n, count + n
            if bar is not None:
                bar.update(1)
                bar.set_postfix(epoch=f"{epoch + 1}/{config.epochs}", loss=f"{total / count:.4f}")
        if distributed:
            # the last forward updated each rank's buffers from its own shard: make them rank 0's again,
            # and make the epoch's train loss the global mean rather than rank 0's shard
            ddp.sync_buffers(model)
            total, count_f = ddp.all_reduce_sum([total, count])
            count = round(count_f)
        metrics = source.validate(model) if rank == 0 else None
        # every rank takes rank 0's numbers, so early stopping and the best epoch agree everywhere
        metrics = ddp.broadcast_object(metrics)
        assert metrics is not None
        value = metrics[monitor]
        result.history.append({"epoch": epoch + 1, "train_loss": total / max(count, 1), **metrics})
        if best_state is None or (value > result.best_value if mode == "max" else value < result.best_value):
            result.best_value, result.best_epoch, bad_epochs = value, epoch + 1, 0
            result.best_val_accuracy = metrics.get("val_accuracy", float("nan"))
            best_state = copy.deepcopy(model.state_dict())
        else:
            bad_epochs += 1
        for cb in callbacks:
            cb.on_epoch_end(state)
        stop = config.patience is not None and bad_epochs >= config.patience
        if rank == 0:
            _log_epoch(desc, result.history[-1], config.epochs, started, epoch + 1 - start_epoch)
        if ckpt is not None:
            if rank == 0:
                args = (model, optimizer, scheduler, config, epoch + 1, bad_epochs, best_state, result)
                save_checkpoint(ckpt, *args, scaler=amp.state_dict())
            if distributed:
                ddp.barrier()  # no rank moves on (or returns) before the checkpoint is on disk
        if stop:
            break
    if bar is not None:
        bar.close()
    if config.restore_best and best_state is not None:
        model.load_state_dict(best_state)
    for cb in callbacks:
        cb.on_fit_end(state)
    return result


def _log_epoch(desc: str, row: dict[str, float], epochs: int, started: float, done: int) -> None:
    """One INFO line per epoch with an ETA (the CLI shows these; libraries stay quiet by default)."""
    elapsed = time.perf_counter() - started
    eta = elapsed / done * (epochs - row["epoch"])
    ppl = f", val ppl {row['val_perplexity']:.2f}" if "val_perplexity" in row else ""
    log.info(
        "%s epoch %d/%d: train loss %.4f, val loss %.4f%s, val acc %.2f%% (%.0fs, ETA %.0fs)",
        desc, row["epoch"], epochs, row["train_loss"], row["val_loss"], ppl, 100 * row["val_accuracy"], elapsed, eta,
    )  # fmt: skip


def _progress_bar(show: bool, *, total: int, initial: int, desc: str) -> Any:
    if not show:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="batch", dynamic_ncols=True, leave=False)
