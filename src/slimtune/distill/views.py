"""Consistent views ("function matching", Beyer et al. 2022): every batch is augmented on the fly and the
teacher labels the *same* augmented view the student sees.

With a fixed, pre-labelled training set the student only learns the teacher's function at the training
points, where the one-hot labels already say almost everything. Fresh views each step (random shifts,
noise, and mixup between images of the batch) ask the teacher about inputs between and around the training
points, which is where its soft outputs carry information the labels do not. The teacher runs live on every
view (a cache cannot hold them), so each step costs one extra teacher forward.

Labels with mixup: the cross-entropy part of a mixed loss becomes λ·CE(y_a) + (1 − λ)·CE(y_b) for a batch
mixed with weight λ; the KL part needs no labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from slimtune.config import Config, check
from slimtune.distill.unlabeled import shift_images
from slimtune.errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class ViewsConfig(Config):
    """Recipe key ``views``: ``{max_shift: 2, noise: 0.0, mixup: 1.0}``. ``mixup`` is the Beta(a, a)
    parameter of the mixing weight (0 turns mixup off); shifts apply to images (N, C, H, W)."""

    max_shift: int = 2
    noise: float = 0.0
    mixup: float = 1.0

    def __post_init__(self) -> None:
        check(self.max_shift >= 0, f"views.max_shift must be >= 0, got {self.max_shift}")
        check(self.noise >= 0, f"views.noise must be >= 0, got {self.noise}")
        check(self.mixup >= 0, f"views.mixup must be >= 0 (0 = off), got {self.mixup}")


@dataclass
class View:
    """An augmented batch: inputs, the labels of the two mixed sources, and the mixing weight of ``y_a``."""

    x: torch.Tensor
    y_a: torch.Tensor
    y_b: torch.Tensor
    lam: float


def make_view(x: torch.Tensor, y: torch.Tensor, config: ViewsConfig) -> View:
    """One random view of the batch ``(x, y)`` (torch's global generator, so a seeded run repeats)."""
    if not x.is_floating_point():
        raise ConfigError("distillation views augment float inputs (images, tabular); drop `views` for token ids")
    lo, hi = float(x.min()), float(x.max())
    out = shift_images(x, config.max_shift) if x.ndim == 4 and config.max_shift > 0 else x
    if config.noise > 0:
        out = out + config.noise * torch.randn_like(out)
    y_b, lam = y, 1.0
    if config.mixup > 0 and len(x) > 1:
        lam = float(torch.distributions.Beta(config.mixup, config.mixup).sample())
        perm = torch.randperm(len(x), device=x.device)
        out, y_b = lam * out + (1 - lam) * out[perm], y[perm]
    return View(out.clamp(lo, hi), y, y_b, lam)
