"""The loop's per-epoch checkpoint (``last.pt``): written atomically by rank 0 after every epoch, read
back for an exact resume (model, optimizer, LR schedule, fp16 loss scale, early-stopping state)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from slimtune._io import atomic_path
from slimtune.train import ddp

if TYPE_CHECKING:
    from slimtune.train.loop import FitResult, TrainConfig

CHECKPOINT = "last.pt"


def load_checkpoint(ckpt: Path | None, resume: bool, distributed: bool) -> dict[str, Any] | None:
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


def save_checkpoint(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    config: TrainConfig,
    epoch: int,
    bad_epochs: int,
    best_state: dict[str, torch.Tensor] | None,
    result: FitResult,
    scaler: dict[str, Any] | None = None,
) -> None:
    payload = {
        "epoch": epoch,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler,
        "bad_epochs": bad_epochs,
        "best_state": best_state,
        "best_epoch": result.best_epoch,
        "best_val_accuracy": result.best_val_accuracy,
        "best_value": result.best_value,
        "history": result.history,
        "config": config.to_dict(),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
