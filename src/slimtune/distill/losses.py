"""Knowledge-distillation losses (Hinton et al. 2015) and the distillation task for the training loop."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from slimtune.config import Config, check
from slimtune.errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class KDConfig(Config):
    """L = α·CE(y, s) + (1 − α)·T²·KL(softmax(t/T) ‖ softmax(s/T)). α = 1 is plain training, α = 0 pure soft."""

    temperature: float = 4.0
    alpha: float = 0.5

    def __post_init__(self) -> None:
        check(self.temperature > 0, f"temperature must be > 0, got {self.temperature}")
        check(0 <= self.alpha <= 1, f"alpha must be in [0, 1], got {self.alpha}")


def soft_kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T²·KL(p_t ‖ p_s) with both softened by T; the T² keeps gradient scale independent of T."""
    t = temperature
    log_p_s = F.log_softmax(student_logits / t, dim=-1)
    log_p_t = F.log_softmax(teacher_logits / t, dim=-1)
    return F.kl_div(log_p_s, log_p_t, log_target=True, reduction="batchmean") * (t * t)


def kd_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, config: KDConfig
) -> torch.Tensor:
    hard = F.cross_entropy(student_logits, labels)
    soft = soft_kd_loss(student_logits, teacher_logits, config.temperature)
    return config.alpha * hard + (1 - config.alpha) * soft


@dataclass
class DistillationTask:
    """Task for the one training loop: the frozen teacher's logits are targets for the student."""

    teacher: nn.Module
    config: KDConfig

    def __post_init__(self) -> None:
        self.teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            t_logits = self.teacher(x)
        s_logits = model(x)
        if t_logits.shape != s_logits.shape:
            raise ConfigError(
                f"teacher outputs {tuple(t_logits.shape[1:])} but student outputs {tuple(s_logits.shape[1:])}: "
                "they must predict the same label set"
            )
        return kd_loss(s_logits, t_logits, y, self.config), s_logits
