"""One optimizer step's forward and backward for the one loop: gradient accumulation over micro-batches,
autocast at the configured precision, fp16 loss scaling, and activation checkpointing.

Gradient accumulation (``TrainConfig.grad_accum = k``) runs each batch as ``k`` micro-batches whose
gradients add up before the one optimizer step, each weighted by its share of what the task's loss
averages over (examples, or predicted tokens for a causal LM: ``Task.weight``). So the update equals
the whole batch's, up to float summation order, with the activations of only ``batch_size / k``
examples in memory at once. Under DDP the gradients are all-reduced once, after the last micro-batch,
and a task with ``weight`` (the LM task) weighs each rank by its share of the global token count, so
ranks whose windows hold different numbers of masked positions still give the global token mean.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
from torch import nn

from slimtune.errors import ConfigError
from slimtune.train import ddp
from slimtune.train.device import autocast, grad_scaler
from slimtune.train.tasks import Task


class Amp:
    """Autocast and (for fp16) the ``GradScaler`` of one ``fit`` call."""

    def __init__(self, device: torch.device, precision: str) -> None:
        self.device, self.precision = device, precision
        self.scaler = grad_scaler(device, precision)

    def autocast(self) -> AbstractContextManager[Any]:
        return autocast(self.device, self.precision)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def unscale(self, optimizer: torch.optim.Optimizer) -> None:
        """Bring the gradients back to their true size (before callbacks and clipping look at them)."""
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """``optimizer.step()``; with fp16, skipped when a gradient overflowed, and the scale adapted."""
        if self.scaler is None:
            optimizer.step()
            return
        self.scaler.step(optimizer)
        self.scaler.update()

    def state_dict(self) -> dict[str, Any] | None:
        return self.scaler.state_dict() if self.scaler is not None else None

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)


def _weight(task: Task, x: Any, y: Any) -> float:
    weigh: Callable[[Any, Any], float] | None = getattr(task, "weight", None)
    if weigh is not None:
        return float(weigh(x, y))
    return float(len(y)) if hasattr(y, "__len__") else 1.0


def micro_batches(x: Any, y: Any, k: int) -> list[tuple[Any, Any]]:
    """``(x, y)`` cut along the first dimension into at most ``k`` non-empty micro-batches."""
    if k == 1:
        return [(x, y)]
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise ConfigError(
            f"grad_accum: {k} needs tensor batches, but this training source yields {type(x).__name__}; "
            "set grad_accum: 1"
        )
    pairs = zip(torch.tensor_split(x, k), torch.tensor_split(y, k), strict=True)
    return [(xs, ys) for xs, ys in pairs if len(xs)]


def forward_backward(
    net: nn.Module, task: Task, x: Any, y: Any, *, amp: Amp, accum: int, distributed: bool
) -> torch.Tensor:
    """Accumulate the gradients of ``task.loss`` over ``accum`` micro-batches of ``(x, y)`` into ``.grad``;
    returns the batch's loss, detached (the weighted mean of the micro-batch losses)."""
    if accum > 1 and not getattr(task, "splits_batches", True):
        raise ConfigError(
            f"grad_accum: {type(task).__name__} batches cannot be cut into micro-batches; set grad_accum: 1"
        )
    chunks = micro_batches(x, y, accum)
    weights = [_weight(task, xs, ys) for xs, ys in chunks]
    total = sum(weights)
    shares = [w / total for w in weights] if total > 0 else [1 / len(chunks)] * len(chunks)
    scale = 1.0
    if distributed and hasattr(task, "weight"):
        # DDP averages the ranks' gradients; ranks may hold different numbers of predicted tokens (masks),
        # so weigh each rank by its share of the global count: the update is the global token mean
        world = ddp.world()[1]
        global_total = ddp.all_reduce_sum([total])[0]
        scale = total * world / global_total if global_total > 0 else 1.0
    value = torch.zeros(())
    for i, ((xs, ys), share) in enumerate(zip(chunks, shares, strict=True)):
        last = i == len(chunks) - 1
        sync: AbstractContextManager[Any] = nullcontext()
        if distributed and not last and isinstance(net, nn.parallel.DistributedDataParallel):
            sync = net.no_sync()  # all-reduce once, with the last micro-batch's backward
        with sync:
            with amp.autocast():
                loss, _ = task.loss(net, xs, ys)
            weight = share * scale
            amp.backward(loss * weight if weight != 1.0 else loss)
        value = value + loss.detach().float().cpu() * share
    return value


def _can_checkpoint(m: nn.Module) -> bool:
    enable = getattr(m, "activation_checkpointing_enable", None) or getattr(m, "gradient_checkpointing_enable", None)
    return callable(enable) and bool(getattr(m, "supports_gradient_checkpointing", False))


def _checkpointable(model: nn.Module) -> list[Any]:
    """The outermost submodules that can turn activation checkpointing on (Hugging Face models)."""
    found: list[str] = []
    targets: list[Any] = []
    for name, m in model.named_modules():
        inside = any(n == "" or name.startswith(n + ".") for n in found)
        if not inside and _can_checkpoint(m):
            found.append(name)
            targets.append(m)
    return targets


def _checkpointing_on(m: Any) -> bool:
    if hasattr(type(m), "is_activation_checkpointing"):  # transformers >= 5.x (the old name warns)
        return bool(m.is_activation_checkpointing)
    return bool(getattr(m, "is_gradient_checkpointing", False))


def enable_checkpointing(model: nn.Module) -> Callable[[], None]:
    """Turn on activation checkpointing (recompute each layer's activations in the backward instead of
    keeping them); returns the function that puts the model back as it was."""
    targets = _checkpointable(model)
    if not targets:
        raise ConfigError(
            f"gradient_checkpointing: {type(model).__name__} cannot checkpoint activations (Hugging Face "
            "models can); set gradient_checkpointing: false"
        )
    was_on = [bool(_checkpointing_on(m)) for m in targets]
    # non-reentrant: correct with frozen embeddings (LoRA) and without inputs that require grad
    kwargs = {"use_reentrant": False}
    for m in targets:
        if hasattr(m, "activation_checkpointing_enable"):  # transformers >= 5.x
            m.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            m.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)

    def undo() -> None:
        for m, on in zip(targets, was_on, strict=True):
            if not on:
                off = getattr(m, "activation_checkpointing_disable", None) or m.gradient_checkpointing_disable
                off()

    return undo
