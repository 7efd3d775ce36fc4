"""Knowledge distillation: one verb (``distill_``), logit losses (soft, hard, mixed), hint terms
(feature, attention), a teacher-output cache."""

from slimtune.distill.attention import AttentionKDConfig, attention_layers, attention_probs
from slimtune.distill.cache import TeacherCache
from slimtune.distill.hints import HINTS, FeatureKDConfig, HintTerm, register_hint
from slimtune.distill.losses import (
    KD_LOSSES,
    HardKDConfig,
    KDConfig,
    MixedKDConfig,
    SoftKDConfig,
    kd_loss,
    register_kd_loss,
    soft_kd_loss,
)
from slimtune.distill.task import DistillationTask, DistillModel, distill_

__all__ = [
    "HINTS",
    "KD_LOSSES",
    "AttentionKDConfig",
    "DistillModel",
    "DistillationTask",
    "FeatureKDConfig",
    "HardKDConfig",
    "HintTerm",
    "KDConfig",
    "MixedKDConfig",
    "SoftKDConfig",
    "TeacherCache",
    "attention_layers",
    "attention_probs",
    "distill_",
    "kd_loss",
    "register_hint",
    "register_kd_loss",
    "soft_kd_loss",
]
