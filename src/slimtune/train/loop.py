"""The one training loop. Fine-tuning, recovery after pruning, distillation and (later) QAT and
multi-task are tasks and callbacks plugged into ``fit``; there is no second loop.

Features: AdamW/SGD, cosine/step/constant LR, early stopping on validation accuracy with the best
weights restored, a checkpoint after every epoch and exact resume after a kill, a progress bar with
ETA, and DistributedDataParallel when launched by ``torchrun`` (no code change for the user).
"""

from __future__ import annotations

import copy
import logging
import math
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from slimtune._io import atomic_path
from slimtune.config import Config, check
from slimtune.data.core import DataSplits, Split
from slimtune.errors import ConfigError, DataError
from slimtune.train import ddp
from slimtune.train.callbacks import Callback, LoopState
from slimtune.train.tasks import ClassificationTask, Task

CHECKPOINT = "last.pt"
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

    def __post_init__(self) -> None:
        check(self.epochs >= 0, f"epochs must be >= 0, got {self.epochs}")
        check(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        check(self.lr > 0, f"lr must be > 0, got {self.lr}")
        check(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        check(self.patience is None or self.patience >= 1, f"patience must be >= 1, got {self.patience}")


@dataclass
class FitResult:
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = -1
    best_val_accuracy: float = float("nan")


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, *, batch_size: int = 512) -> torch.Tensor:
    """Logits for every row of ``x``, in eval mode (the model's mode is restored after)."""
    was_training = model.training
    model.eval()
    try:
        outs = [model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(outs) if outs else torch.empty(0)


def _accuracy(model: nn.Module, split: Split) -> tuple[float, float]:
    assert isinstance(split.x, torch.Tensor)
    logits = predict(model, split.x)
    loss = torch.nn.functional.cross_entropy(logits, split.y).item()
    return float((logits.argmax(1) == split.y).float().mean().item()), loss


def _optimizer(params: list[nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    if not params:
        raise ConfigError("nothing to train: every parameter is frozen; unfreeze some layers or drop the stage")
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _lr_lambda(cfg: TrainConfig, total_steps: int) -> Any:
    def f(step: int) -> float:
        if cfg.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / max(1, total_steps)))
        if cfg.schedule == "step":
            return 0.1 ** (3 * step // max(1, total_steps))
        return 1.0

    return f


def _batches(n: int, cfg: TrainConfig, epoch: int, rank: int, world: int) -> list[torch.Tensor]:
    """Global batches from a per-epoch seeded permutation; each rank takes an equal share of every batch.

    With ``world > 1`` a global batch is cut to a multiple of ``world`` (its last few examples, which
    differ every epoch because the permutation does) and a batch smaller than ``world`` is skipped:
    DDP averages the ranks' mean gradients, which is the mean gradient of the global batch only when
    every rank holds the same number of examples. With ``world == 1`` every example is used.
    """
    g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
    perm = torch.randperm(n, generator=g)
    out = []
    for i in range(0, n, cfg.batch_size):
        batch = perm[i : i + cfg.batch_size]
        keep = len(batch) - len(batch) % world
        if keep == 0:
            continue
        out.append(batch[:keep][rank::world])
    return out


def fit(
    model: nn.Module,
    data: DataSplits,
    *,
    config: TrainConfig,
    task: Task | None = None,
    callbacks: Sequence[Callback] = (),
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool | None = None,
    desc: str = "train",
) -> FitResult:
    """Train ``model`` in place on ``data.train``, validating on ``data.val`` after every epoch.

    Under ``torchrun`` (``WORLD_SIZE > 1``) this trains with DistributedDataParallel; see
    :mod:`slimtune.train.ddp` for the launch command and what is kept identical across ranks.
    """
    train, val = data.train, data.val
    if not isinstance(train.x, torch.Tensor) or not isinstance(val.x, torch.Tensor):
        raise DataError("fit needs tensor inputs; encode text first (slimtune.models.prepare_inputs)")
    if len(train) == 0:
        raise DataError("the training split is empty; use a larger dataset or a smaller val/test fraction")
    device = next(model.parameters(), torch.empty(0)).device
    with ddp.process_group(device) as distributed:
        return _fit(
            model,
            data,
            config=config,
            task=task or ClassificationTask(),
            callbacks=callbacks,
            checkpoint_dir=checkpoint_dir,
            resume=resume,
            progress=progress,
            desc=desc,
            distributed=distributed,
        )


def _load_checkpoint(ckpt: Path | None, resume: bool, distributed: bool) -> dict[str, Any] | None:
    """The checkpoint to resume from, or None. Under DDP rank 0 reads it and sends it to every rank
    (an error reading it is raised on every rank, so none is left waiting)."""
    if not resume or ckpt is None:
        return None
    if not distributed:
        return torch.load(ckpt, map_location="cpu", weights_only=True) if ckpt.exists() else None
    saved: dict[str, Any] | BaseException | None = None
    if ddp.is_main() and ckpt.exists():
        try:
            saved = torch.load(ckpt, map_location="cpu", weights_only=True)
        except Exception as exc:
            saved = exc
    saved = ddp.broadcast_object(saved)
    if isinstance(saved, BaseException):
        raise saved
    return saved


def _fit(
    model: nn.Module,
    data: DataSplits,
    *,
    config: TrainConfig,
    task: Task,
    callbacks: Sequence[Callback],
    checkpoint_dir: str | Path | None,
    resume: bool,
    progress: bool | None,
    desc: str,
    distributed: bool,
) -> FitResult:
    train, val = data.train, data.val
    assert isinstance(train.x, torch.Tensor)
    rank, world = ddp.world() if distributed else (0, 1)
    if distributed and rank == 0 and config.batch_size % world:
        warnings.warn(
            f"batch_size {config.batch_size} is not a multiple of the {world} ranks; each batch is cut to "
            f"{config.batch_size - config.batch_size % world} examples so every rank gets an equal share",
            stacklevel=3,
        )
    torch.manual_seed(config.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = _optimizer(params, config)
    steps_per_epoch = len(_batches(len(train), config, 0, 0, world))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(config, steps_per_epoch * config.epochs))
    state = LoopState(model=model, optimizer=optimizer)
    result = FitResult()
    best_state: dict[str, torch.Tensor] | None = None
    bad_epochs, start_epoch = 0, 0
    ckpt = Path(checkpoint_dir) / CHECKPOINT if checkpoint_dir else None
    saved = _load_checkpoint(ckpt, resume, distributed)
    if saved is not None:
        if saved["config"] != config.to_dict():
            raise ConfigError(f"cannot resume from {ckpt}: it was written with a different training config")
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        start_epoch, bad_epochs = saved["epoch"], saved["bad_epochs"]
        best_state, result.history = saved["best_state"], saved["history"]
        result.best_epoch, result.best_val_accuracy = saved["best_epoch"], saved["best_val_accuracy"]
    net: nn.Module = model
    if distributed:
        # after any resume; the wrapper broadcasts rank 0's parameters and buffers to every rank
        net = nn.parallel.DistributedDataParallel(model)
    state.history = result.history
    show = rank == 0 and (sys.stderr.isatty() if progress is None else progress)
    bar = _progress_bar(show, total=steps_per_epoch * config.epochs, initial=steps_per_epoch * start_epoch, desc=desc)
    for cb in callbacks:
        cb.on_fit_start(state)
    started = time.perf_counter()
    for epoch in range(start_epoch, config.epochs):
        state.epoch, state.step = epoch, 0
        torch.manual_seed(config.seed * 100_003 + epoch * 7 + rank)  # dropout etc.: same stream on resume
        for cb in callbacks:
            cb.on_epoch_start(state)
        net.train()
        total, count = 0.0, 0
        for idx in _batches(len(train), config, epoch, rank, world):
            loss, _ = task.loss(net, train.x[idx], train.y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            for cb in callbacks:
                cb.on_after_backward(state)
            if config.max_grad_norm:
                nn.utils.clip_grad_norm_(params, config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            state.step += 1
            state.global_step += 1
            for cb in callbacks:
                cb.on_step_end(state)
            total, count = total + loss.item() * len(idx), count + len(idx)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(epoch=f"{epoch + 1}/{config.epochs}", loss=f"{total / count:.4f}")
        if distributed:
            # the last forward updated each rank's buffers from its own shard: make them rank 0's again,
            # and make the epoch's train loss the global mean rather than rank 0's shard
            ddp.sync_buffers(model)
            total, count_f = ddp.all_reduce_sum([total, count])
            count = round(count_f)
        val_acc, val_loss = float("nan"), float("nan")
        if len(val) and rank == 0:
            val_acc, val_loss = _accuracy(model, val)
        # every rank takes rank 0's numbers, so early stopping and the best epoch agree everywhere
        val_acc, val_loss = ddp.broadcast_floats([val_acc, val_loss])
        result.history.append(
            {
                "epoch": epoch + 1,
                "train_loss": total / max(count, 1),
                "val_loss": val_loss,
                "val_accuracy": val_acc,
            }
        )
        if best_state is None or val_acc > result.best_val_accuracy:
            result.best_val_accuracy, result.best_epoch, bad_epochs = val_acc, epoch + 1, 0
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
                _save_checkpoint(ckpt, model, optimizer, scheduler, config, epoch + 1, bad_epochs, best_state, result)
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


def _save_checkpoint(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    config: TrainConfig,
    epoch: int,
    bad_epochs: int,
    best_state: dict[str, torch.Tensor] | None,
    result: FitResult,
) -> None:
    payload = {
        "epoch": epoch,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "bad_epochs": bad_epochs,
        "best_state": best_state,
        "best_epoch": result.best_epoch,
        "best_val_accuracy": result.best_val_accuracy,
        "history": result.history,
        "config": config.to_dict(),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def _log_epoch(desc: str, row: dict[str, float], epochs: int, started: float, done: int) -> None:
    """One INFO line per epoch with an ETA (the CLI shows these; libraries stay quiet by default)."""
    elapsed = time.perf_counter() - started
    eta = elapsed / done * (epochs - row["epoch"])
    log.info(
        "%s epoch %d/%d: train loss %.4f, val loss %.4f, val acc %.2f%% (%.0fs, ETA %.0fs)",
        desc, row["epoch"], epochs, row["train_loss"], row["val_loss"], 100 * row["val_accuracy"], elapsed, eta,
    )  # fmt: skip


def _progress_bar(show: bool, *, total: int, initial: int, desc: str) -> Any:
    if not show:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="batch", dynamic_ncols=True, leave=False)
