"""The distillation task for the one training loop, and ``distill_``, the verb that runs it.

The teacher is frozen in eval mode. Its logits come from a ``TeacherCache`` when one is given (hits by
row digest, misses computed live) or from a live forward. Hint terms (``feature``, ``attention``) need
the teacher's intermediate activations, so with hints the teacher always runs live; so it does with
``views`` (consistent augmented views, see ``slimtune.distill.views``), which are new inputs every step.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimtune.config import Config
from slimtune.data.core import DataSplits
from slimtune.distill import attention as _attention  # noqa: F401  (registers the attention hint)
from slimtune.distill.cache import TeacherCache
from slimtune.distill.hints import HINTS, HintTerm
from slimtune.distill.lm_cache import LMTeacherCache
from slimtune.distill.losses import KD_LOSSES, KDConfig, kd_loss
from slimtune.distill.views import ViewsConfig, make_view
from slimtune.errors import ConfigError, DataError
from slimtune.train.callbacks import Callback
from slimtune.train.device import model_device, training_device
from slimtune.train.lm import is_lm_data
from slimtune.train.loop import FitResult, TrainConfig, fit


class DistillModel(nn.Module):
    """What the optimizer trains when hints are used: the student plus the hint terms' adapters.
    Its forward is the student's; ``unwrap()`` removes every hook and returns the bare student."""

    def __init__(self, student: nn.Module, terms: Sequence[HintTerm]) -> None:
        super().__init__()
        self.student = student
        self.terms = nn.ModuleList(terms)

    def forward(self, x: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        out: torch.Tensor = self.student(x, **kwargs)
        for term in self._terms():
            if term.capturing:
                term.after_student()
        return out

    def _terms(self) -> list[HintTerm]:
        return [t for t in self.terms if isinstance(t, HintTerm)]

    def unwrap(self) -> nn.Module:
        for term in self._terms():
            term.remove_hooks()
        return self.student


def prepare_teacher(teacher: nn.Module, hints: Sequence[Config]) -> None:
    """Check every hint config names a registered hint, then freeze the teacher in eval mode."""
    for hint in hints:
        HINTS.handler_for(hint)
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)


def wrap_with_hints(student: nn.Module, teacher: nn.Module, hints: Sequence[Config], example: Any) -> nn.Module:
    """``student`` itself, or with hints a ``DistillModel`` (student + the hint terms' adapters)."""
    if not hints:
        return student
    terms = [HINTS.handler_for(h)(h, student=student, teacher=teacher, example=example) for h in hints]
    return DistillModel(student, terms)


@dataclass
class DistillationTask:
    """Logit loss ``config`` (soft, hard, mixed = ``KDConfig``) plus weighted ``hints``, optionally on
    consistent augmented ``views`` of every batch; see ``distill_``."""

    teacher: nn.Module
    config: Config = field(default_factory=KDConfig)
    hints: Sequence[Config] = ()
    cache: TeacherCache | None = None
    views: ViewsConfig | None = None

    def __post_init__(self) -> None:
        KD_LOSSES.handler_for(self.config)  # a clear error for a config that is not a logit loss
        prepare_teacher(self.teacher, self.hints)

    def wrap(self, student: nn.Module, example: Any) -> nn.Module:
        """The module to train: ``student`` itself, or with hints a ``DistillModel`` (student + adapters)."""
        return wrap_with_hints(student, self.teacher, self.hints, example)

    def teacher_logits(self, x: torch.Tensor) -> torch.Tensor:
        if self.cache is not None:
            return self.cache.logits_for(x, self.teacher)
        with torch.no_grad():
            out: torch.Tensor = self.teacher(x)
        return out

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        inner = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
        terms = inner._terms() if isinstance(inner, DistillModel) else []
        if self.hints and not terms:
            raise ConfigError("hint terms need the student wrapped: train with distill_(...) or task.wrap(student, x)")
        y_b, lam = y, 1.0
        if self.views is not None:
            view = make_view(x, y, self.views)
            x, y, y_b, lam = view.x, view.y_a, view.y_b, view.lam
        with _capturing(terms):
            s_logits = model(x)
            t_logits = self.teacher_logits(x) if not terms and self.views is None else self._live_teacher(x)
        if t_logits.shape != s_logits.shape:
            raise ConfigError(
                f"teacher outputs {tuple(t_logits.shape[1:])} but student outputs {tuple(s_logits.shape[1:])}: "
                "they must predict the same label set"
            )
        loss = kd_loss(s_logits, t_logits, y, self.config)
        if lam < 1.0:  # mixup: the label terms mix with the inputs; the teacher terms are the same in both
            loss = lam * loss + (1 - lam) * kd_loss(s_logits, t_logits, y_b, self.config)
        for term in terms:
            loss = loss + term.weight * term.loss()
        return loss, s_logits

    def _live_teacher(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            out: torch.Tensor = self.teacher(x)
        return out


@contextmanager
def _capturing(terms: Sequence[HintTerm]) -> Iterator[None]:
    for t in terms:
        t.capturing = True
    try:
        yield
    finally:
        for t in terms:
            t.capturing = False


def distill_(
    student: nn.Module,
    *,
    teacher: nn.Module,
    data: DataSplits,
    config: Config | None = None,
    hints: Sequence[Config] = (),
    train: TrainConfig | None = None,
    cache: bool | str | Path | TeacherCache | LMTeacherCache = False,
    views: ViewsConfig | None = None,
    callbacks: Sequence[Callback] = (),
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool | None = None,
) -> FitResult:
    """Train ``student`` in place on ``data`` from the frozen ``teacher``; returns the loop's history.

    ``config``: the logit loss (default ``KDConfig()``: mixed, T = 4, α = 0.5). ``hints``: feature/attention
    terms; their projections are trained with the student and dropped after. ``cache``: compute the teacher's
    logits over ``data.train`` once (``True``), keep them in a safetensors file (a path; reused when the same
    teacher is distilled again), or use a ``TeacherCache`` built before (rows it lacks go to the teacher).
    ``views``: augment every batch on the fly (shifts, noise, mixup) and let the teacher label the same view
    (function matching; the cache is then unused, the teacher runs every step).

    Causal-LM data (``kind == "lm"``) goes to :func:`slimtune.distill.lm.distill_lm_`: token-level KD with
    an ``LMKDConfig``, ``hidden`` hints and a top-k teacher-logit cache. The teacher runs on the training
    device (``train.device``) and is put back where it was afterwards.
    """
    if is_lm_data(data):
        from slimtune.distill.lm import distill_lm_

        if views is not None or isinstance(cache, TeacherCache):
            raise ConfigError("LM distillation takes no views and no classifier TeacherCache; drop them")
        return distill_lm_(
            student, teacher=teacher, data=data, config=config, hints=hints, train=train, cache=cache,
            callbacks=callbacks, checkpoint_dir=checkpoint_dir, resume=resume, progress=progress,
        )  # fmt: skip
    if isinstance(cache, LMTeacherCache):
        raise ConfigError("an LMTeacherCache holds causal-LM logits; this data is not LM data (kind 'lm')")
    x = data.train.x
    if not isinstance(x, torch.Tensor):
        raise DataError(
            "distillation needs tensor inputs; tokenize text first with slimtune.models.inputs.tokenize_splits "
            "(recipes and slimtune stage do it)"
        )
    teacher_cache = cache if isinstance(cache, TeacherCache) else None
    if not isinstance(cache, TeacherCache) and cache is not False and not hints and views is None:
        teacher_cache = TeacherCache.build(teacher, x, path=None if cache is True else Path(cache))
    flags, was_training = [p.requires_grad for p in teacher.parameters()], teacher.training
    task = DistillationTask(teacher, config or KDConfig(), hints=tuple(hints), cache=teacher_cache, views=views)
    model = task.wrap(student, x[: min(len(x), 8)])
    train = train or TrainConfig()
    origin = model_device(teacher)
    teacher.to(training_device(student, train.device))
    try:
        return fit(
            model, data, config=train, task=task, callbacks=callbacks,
            checkpoint_dir=checkpoint_dir, resume=resume, progress=progress, desc="distill",
        )  # fmt: skip
    finally:
        if isinstance(model, DistillModel):
            model.unwrap()
        for p, flag in zip(teacher.parameters(), flags):  # the teacher is frozen for the run only
            p.requires_grad_(flag)
        teacher.train(was_training)
        teacher.to(origin)
