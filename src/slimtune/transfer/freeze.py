"""Freeze policies and discriminative learning rates over a model's blocks (see ``anatomy``).

Policies (the ``freeze`` string of ``FinetuneConfig``):

* ``none``: leave ``requires_grad`` as it is;
* ``linear-probe``: only the head trains;
* ``all-but-last-<k>``: the head and the last ``k`` blocks train;
* ``gradual``: ULMFiT-style gradual unfreezing: the head alone in the first epoch, then one more block
  (from the top) every ``every`` epochs, until all train.

Frozen BatchNorm layers (affine parameters frozen) are kept in eval mode while training, so their running
statistics stay put too: a frozen block computes exactly what it computed before fine-tuning.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from torch import nn

from slimtune.errors import ConfigError
from slimtune.train.callbacks import Callback, LoopState
from slimtune.transfer.anatomy import anatomy

FREEZE_FORMS = "'none', 'linear-probe', 'all-but-last-<k>' (e.g. all-but-last-2) or 'gradual'"
_LAST_K = re.compile(r"all-but-last-(\d+)")


def parse_freeze(freeze: str) -> tuple[str, int]:
    """``(kind, k)``: kind is none, last (k blocks train besides the head) or gradual."""
    if freeze in ("none", "gradual"):
        return freeze, 0
    if freeze == "linear-probe":
        return "last", 0
    match = _LAST_K.fullmatch(freeze)
    if match is None:
        raise ConfigError(f"freeze: {freeze!r} is not a freeze policy; use {FREEZE_FORMS}")
    return "last", int(match.group(1))


def trainable_blocks(freeze: str, n_blocks: int, *, epoch: int = 0, every: int = 1) -> int:
    """How many of the last blocks train under ``freeze`` in ``epoch`` (the head always trains)."""
    kind, k = parse_freeze(freeze)
    if kind == "none":
        return n_blocks
    if kind == "gradual":
        return min(n_blocks, epoch // max(1, every))
    return min(n_blocks, k)


def freeze_(model: nn.Module, freeze: str, *, epoch: int = 0, every: int = 1) -> int:
    """Set ``requires_grad`` for ``freeze`` (in ``epoch``, for ``gradual``); returns the number of blocks
    that train. ``none`` changes nothing. A block shorter than asked is clamped to all blocks."""
    kind, _ = parse_freeze(freeze)
    anat = anatomy(model)
    blocks = anat.block_params(model)
    if kind == "none":
        return len(blocks)
    n = trainable_blocks(freeze, len(blocks), epoch=epoch, every=every)
    for i, params in enumerate(blocks):
        for p in params:
            p.requires_grad_(i >= len(blocks) - n)
    for p in anat.head_params(model):
        p.requires_grad_(True)
    return n


def keep_frozen_norms_eval_(model: nn.Module) -> None:
    """Put every BatchNorm whose affine parameters are all frozen in eval mode (running stats unchanged)."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            params = list(m.parameters(recurse=False))
            if params and not any(p.requires_grad for p in params):
                m.eval()


class FreezeCallback(Callback):
    """Applies ``freeze`` at the start of every epoch (so gradual unfreezing follows the epoch, also on
    resume) and keeps frozen BatchNorms in eval mode. ``freeze=None`` only does the latter."""

    def __init__(self, freeze: str | None = None, *, every: int = 1) -> None:
        if freeze is not None:
            parse_freeze(freeze)
        self.freeze, self.every = freeze, every

    def on_epoch_start(self, state: LoopState) -> None:
        if self.freeze is not None:
            freeze_(state.model, self.freeze, epoch=state.epoch, every=self.every)
        keep_frozen_norms_eval_(state.model)


def depth_param_groups(
    model: nn.Module, *, lr_decay: float = 1.0, include: Callable[[nn.Parameter], bool] | None = None
) -> list[dict[str, Any]]:
    """Optimizer parameter groups by depth for ``fit(param_groups=...)``: the head (and any parameter
    in no block) at ``lr_scale`` 1, the block at distance ``d`` below the head at ``lr_decay ** d``.

    ``include`` picks the parameters to train (default: those that require grad now); gradual unfreezing
    passes every parameter, frozen ones getting no gradient, and no update, until they are unfrozen.
    """
    if not 0 < lr_decay <= 1:
        raise ConfigError(f"lr_decay must be in (0, 1], got {lr_decay}")
    keep = include or (lambda p: p.requires_grad)
    anat = anatomy(model)
    blocks = anat.block_params(model)
    in_blocks = {id(p) for params in blocks for p in params}
    top = [p for p in model.parameters() if id(p) not in in_blocks]  # the head and anything unassigned
    groups: list[dict[str, Any]] = []
    for distance, params in enumerate([top, *reversed(blocks)]):
        chosen = [p for p in params if keep(p)]
        if chosen:
            groups.append({"params": chosen, "lr_scale": lr_decay**distance})
    return groups
