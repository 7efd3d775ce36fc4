"""Knowledge distillation: losses and the distillation task for the one training loop."""

from slimtune.distill.losses import DistillationTask, KDConfig, kd_loss, soft_kd_loss

__all__ = ["DistillationTask", "KDConfig", "kd_loss", "soft_kd_loss"]
