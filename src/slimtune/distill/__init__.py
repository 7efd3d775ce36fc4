"""Knowledge distillation: one verb (``distill_``), logit losses (soft, hard, mixed, logits), hint terms
(feature, attention), a teacher-output cache, pseudo-labels for unlabeled data, consistent augmented views,
students cut from teachers; causal-LM distillation (token-level forward/reverse KL, hidden-state hints, a
top-k teacher-logit cache)."""

from slimtune.distill.attention import AttentionKDConfig, attention_layers, attention_probs
from slimtune.distill.cache import TeacherCache
from slimtune.distill.hints import HINTS, FeatureKDConfig, HintTerm, register_hint
from slimtune.distill.lm import (
    HiddenKDConfig,
    LMDistillationTask,
    LMKDConfig,
    distill_lm_,
    teacher_kl,
    token_kl,
    topk_kl,
)
from slimtune.distill.lm_cache import LMTeacherCache
from slimtune.distill.losses import (
    KD_LOSSES,
    HardKDConfig,
    KDConfig,
    LogitKDConfig,
    MixedKDConfig,
    SoftKDConfig,
    kd_loss,
    logit_mse,
    register_kd_loss,
    soft_kd_loss,
)
from slimtune.distill.students import StudentConfig, build_student, student_from_teacher
from slimtune.distill.task import DistillationTask, DistillModel, distill_
from slimtune.distill.unlabeled import UnlabeledConfig, augment, concat_splits, pseudo_label, unlabeled_data
from slimtune.distill.views import ViewsConfig, make_view

__all__ = [
    "HINTS",
    "KD_LOSSES",
    "AttentionKDConfig",
    "DistillModel",
    "DistillationTask",
    "FeatureKDConfig",
    "HardKDConfig",
    "HiddenKDConfig",
    "HintTerm",
    "KDConfig",
    "LMDistillationTask",
    "LMKDConfig",
    "LMTeacherCache",
    "LogitKDConfig",
    "MixedKDConfig",
    "SoftKDConfig",
    "StudentConfig",
    "TeacherCache",
    "UnlabeledConfig",
    "ViewsConfig",
    "attention_layers",
    "attention_probs",
    "augment",
    "build_student",
    "concat_splits",
    "distill_",
    "distill_lm_",
    "kd_loss",
    "logit_mse",
    "make_view",
    "pseudo_label",
    "register_hint",
    "register_kd_loss",
    "soft_kd_loss",
    "student_from_teacher",
    "teacher_kl",
    "token_kl",
    "topk_kl",
    "unlabeled_data",
]
