"""Causal-LM distillation on the one loop: token-level KD from a frozen teacher LM to a student LM.

Loss per batch, over every predicted (non-masked) token position ``t`` (the logits at ``t`` that the
LM task scores against ``y[:, t + 1]``):

    L = α·CE(y, s) + (1 − α)·T²·mean_t KL_t + Σ hint weights·hint losses

with ``KL_t`` = KL(p_t ‖ q_s) (``forward``, mass-covering: the usual choice, Hinton/DistilGPT-2) or
KL(q_s ‖ p_t) (``reverse``, mode-seeking: MiniLLM) of the temperature-softened distributions. With a
teacher-logit cache (``LMTeacherCache``: the teacher's top-k logits per token, computed once) the forward
KL is taken on that support: p_t renormalised over the k tokens, q_s the student's full-vocabulary
softmax read at them — a divergence that is 0 only when the student puts exactly the teacher's mass on
the teacher's top k (with k = vocabulary it is the full forward KL). Reverse KL needs the teacher's whole
distribution, so it runs the teacher live.

Hidden-state hints (``HiddenKDConfig``): student decoder layer ``i`` ↔ teacher layer ``j`` by index,
MSE or cosine, with a learned Linear projection when the widths differ (the ``feature`` hint's machinery;
the projections are dropped after training). Hints need the teacher's activations, so with hints the
teacher runs live and the cache is unused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from slimtune.config import Config, check
from slimtune.data.core import DataSplits, Split
from slimtune.distill.hints import FeatureKDConfig, FeatureTerm, HintTerm, register_hint
from slimtune.distill.lm_cache import LMTeacherCache
from slimtune.distill.losses import KDConfig, SoftKDConfig, register_kd_loss
from slimtune.distill.task import DistillModel, _capturing, prepare_teacher, wrap_with_hints
from slimtune.errors import ConfigError, DataError
from slimtune.train.callbacks import Callback
from slimtune.train.device import model_device, training_device
from slimtune.train.lm import IGNORE_INDEX, lm_forward, lm_loss, predicted_tokens
from slimtune.train.loop import FitResult, TrainConfig, fit


@dataclass(frozen=True, kw_only=True)
class LMKDConfig(Config):
    """Token-level KD: L = α·CE + (1 − α)·T²·KL over the predicted tokens. ``top_k``: how many teacher
    logits per token the cache keeps (used only with a cache)."""

    temperature: float = 1.0
    alpha: float = 0.5
    direction: Literal["forward", "reverse"] = "forward"
    top_k: int = 32

    def __post_init__(self) -> None:
        check(self.temperature > 0, f"temperature must be > 0, got {self.temperature}")
        check(0 <= self.alpha <= 1, f"alpha must be in [0, 1], got {self.alpha}")
        check(self.direction in ("forward", "reverse"), f"direction must be forward or reverse, not {self.direction!r}")
        check(self.top_k >= 1, f"top_k must be >= 1, got {self.top_k}")


def _positions(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask (N, T) of the positions whose next token is predicted, their count as a float tensor)."""
    mask = torch.zeros(labels.shape, dtype=torch.bool, device=labels.device)
    mask[:, :-1] = labels[:, 1:] != IGNORE_INDEX
    return mask, mask.sum().clamp(min=1).to(logits.dtype)


def token_kl(
    student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, *, temperature: float = 1.0,
    direction: str = "forward",
) -> torch.Tensor:  # fmt: skip
    """T²·mean over predicted positions of KL between the softened full-vocabulary distributions."""
    mask, count = _positions(student, labels)
    log_q = F.log_softmax(student.float() / temperature, dim=-1)
    log_p = F.log_softmax(teacher.float() / temperature, dim=-1)
    if direction == "reverse":
        kl = (log_q.exp() * (log_q - log_p)).sum(-1)
    else:
        kl = (log_p.exp() * (log_p - log_q)).sum(-1)
    return (kl * mask).sum() / count * temperature**2


def topk_kl(
    student: torch.Tensor, values: torch.Tensor, indices: torch.Tensor, labels: torch.Tensor, *,
    temperature: float = 1.0, rest: bool = False,
) -> torch.Tensor:  # fmt: skip
    """T²·mean over predicted positions of the forward KL from the teacher's top-k to the student's softmax.

    ``rest`` (``values`` are the teacher's log-probabilities over the whole vocabulary, temperature 1): the KL
    between the (k + 1)-bucket distributions — the k tokens and everything else — so the student keeps the mass
    the teacher puts outside its top k; exact KL when k covers the vocabulary. Otherwise the teacher is
    renormalised over its k tokens and the student is pulled to put all its mass there."""
    mask, count = _positions(student, labels)
    log_q = F.log_softmax(student.float() / temperature, dim=-1).gather(-1, indices)
    if rest and temperature == 1.0:
        log_p = values.float()
        p = log_p.exp()
        p_rest = (1 - p.sum(-1)).clamp_min(0)
        log_q_rest = torch.log1p(-log_q.exp().sum(-1).clamp(max=1 - 1e-6))
        rest_term = torch.where(p_rest > 0, p_rest * (p_rest.clamp_min(1e-30).log() - log_q_rest), 0.0)
        kl = (p * (log_p - log_q)).sum(-1) + rest_term
    else:
        log_p = F.log_softmax(values.float() / temperature, dim=-1)
        kl = (log_p.exp() * (log_p - log_q)).sum(-1)
    return (kl * mask).sum() / count * temperature**2


def _mixed(kd: torch.Tensor, student: torch.Tensor, labels: torch.Tensor, alpha: float) -> torch.Tensor:
    return kd if alpha == 0 else alpha * lm_loss(student, labels) + (1 - alpha) * kd


@register_kd_loss("lm", LMKDConfig, help="causal LMs: α·CE + (1 − α)·T²·KL per predicted token (forward|reverse)")
def lm_kd_loss(s: torch.Tensor, t: torch.Tensor, y: torch.Tensor, config: Config) -> torch.Tensor:
    """The LM distillation loss on full logits (N, T, V) of student ``s`` and teacher ``t``, labels ``y`` (N, T)."""
    assert isinstance(config, LMKDConfig)
    kd = token_kl(s, t, y, temperature=config.temperature, direction=config.direction)
    return _mixed(kd, s, y, config.alpha)


def as_lm_config(config: Config | None) -> LMKDConfig:
    """``config`` for LM data: an ``LMKDConfig`` as is; the classifier ``mixed``/``soft`` configs with their
    temperature and α (a recipe's default ``kd`` works for LMs too); None: ``LMKDConfig()``."""
    if config is None or isinstance(config, LMKDConfig):
        return config or LMKDConfig()
    if isinstance(config, KDConfig):
        return LMKDConfig(temperature=config.temperature, alpha=config.alpha)
    if isinstance(config, SoftKDConfig):
        return LMKDConfig(temperature=config.temperature, alpha=0.0)
    raise ConfigError(f"LM distillation takes kd method lm, mixed or soft, not {type(config).__name__}")


@dataclass(frozen=True, kw_only=True)
class HiddenKDConfig(Config):
    """Match decoder-layer outputs: ``layers`` maps a student layer index to a teacher layer index
    (negative indices count from the end), with a learned projection when the widths differ."""

    layers: dict[int, int]
    loss: Literal["mse", "cosine"] = "mse"
    weight: float = 1.0

    def __post_init__(self) -> None:
        check(bool(self.layers), "hidden: give layers {student_layer: teacher_layer}, e.g. {0: 1, 1: 3}")
        check(all(isinstance(k, int) and isinstance(v, int) for k, v in self.layers.items()),
              f"hidden: layers must map layer indices to layer indices, got {self.layers}")  # fmt: skip
        check(self.weight >= 0, f"hidden: weight must be >= 0, got {self.weight}")


def decoder_layers(model: nn.Module, *, role: str) -> list[str]:
    """Names of ``model``'s decoder layers, in order: the longest ``ModuleList`` of the model."""
    lists = [(n, len(m)) for n, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m) > 0]
    if not lists:
        raise ConfigError(f"hidden: the {role} ({type(model).__name__}) has no list of decoder layers")
    name, count = max(lists, key=lambda nm: nm[1])
    return [f"{name}.{i}" for i in range(count)]


def _layer(names: list[str], i: int, role: str) -> str:
    if not -len(names) <= i < len(names):
        raise ConfigError(f"hidden: the {role} has {len(names)} decoder layers; layer {i} does not exist")
    return names[i]


@register_hint("hidden", HiddenKDConfig, help="LM hidden states: student layer i ↔ teacher layer j, projection")
def _hidden(config: HiddenKDConfig, *, student: nn.Module, teacher: nn.Module, example: Any) -> HintTerm:
    s_names, t_names = decoder_layers(student, role="student"), decoder_layers(teacher, role="teacher")
    pairs = {_layer(s_names, s, "student"): _layer(t_names, t, "teacher") for s, t in config.layers.items()}
    return FeatureTerm(FeatureKDConfig(pairs=pairs, loss=config.loss, weight=config.weight), student, teacher, example)


@dataclass
class LMDistillationTask:
    """Token-level KD (``LMKDConfig``) from a frozen teacher LM, optional hints, optional top-k cache."""

    teacher: nn.Module
    config: LMKDConfig = field(default_factory=LMKDConfig)
    hints: Sequence[Config] = ()
    cache: LMTeacherCache | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.config, LMKDConfig):
            raise ConfigError(f"LM distillation takes an LMKDConfig, not {type(self.config).__name__}")
        if self.cache is not None and self.config.direction == "reverse":
            raise ConfigError("reverse KL needs the teacher's full distribution, not a top-k cache; drop the cache")
        prepare_teacher(self.teacher, self.hints)

    def wrap(self, student: nn.Module, example: Any) -> nn.Module:
        return wrap_with_hints(student, self.teacher, self.hints, example)

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        inner = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
        terms = inner._terms() if isinstance(inner, DistillModel) else []
        if self.hints and not terms:
            raise ConfigError("hint terms need the student wrapped: train with distill_(...) or task.wrap(student, x)")
        cfg = self.config
        with _capturing(terms):
            s_logits = lm_forward(model, x)
            live = None
            if terms or self.cache is None:
                with torch.no_grad():
                    live = lm_forward(self.teacher, x)
        if live is not None:
            if live.shape != s_logits.shape:
                raise ConfigError(
                    f"teacher vocabulary {live.shape[-1]} != student vocabulary {s_logits.shape[-1]}: "
                    "distil between models that share a tokenizer"
                )
            loss = lm_kd_loss(s_logits, live, y, cfg)
        else:
            assert self.cache is not None
            values, indices = self.cache.topk_for(x, self.teacher)
            # an older cache of raw logits: renormalised (exact per position however its rows mix with live
            # log-probabilities, which differ from logits by a per-position constant)
            kd = topk_kl(s_logits, values, indices, y, temperature=cfg.temperature, rest=self.cache.logprobs)
            loss = _mixed(kd, s_logits, y, cfg.alpha)
        for term in terms:
            loss = loss + term.weight * term.loss()
        return loss, s_logits

    def weight(self, x: torch.Tensor, y: torch.Tensor) -> float:
        return float(predicted_tokens(y))


@torch.no_grad()
def teacher_kl(student: nn.Module, teacher: nn.Module, split: Split, *, batch_size: int = 16) -> float:
    """Mean forward KL(p_teacher ‖ q_student) per predicted token on ``split`` (T = 1), both in eval mode."""
    x, y = split.x, split.y
    assert isinstance(x, torch.Tensor)
    modes = student.training, teacher.training
    student.eval()
    teacher.eval()
    total, count = 0.0, 0
    try:
        for i in range(0, len(x), batch_size):
            xb, yb = x[i : i + batch_size], y[i : i + batch_size]
            s = lm_forward(student, xb.to(model_device(student))).cpu()
            t = lm_forward(teacher, xb.to(model_device(teacher))).cpu()
            n = predicted_tokens(yb)
            total += float(token_kl(s, t, yb)) * n
            count += n
    finally:
        student.train(modes[0])
        teacher.train(modes[1])
    return total / max(count, 1)


def distill_lm_(
    student: nn.Module,
    *,
    teacher: nn.Module,
    data: DataSplits,
    config: Config | None = None,
    hints: Sequence[Config] = (),
    train: TrainConfig | None = None,
    cache: bool | str | Path | LMTeacherCache = False,
    callbacks: Sequence[Callback] = (),
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool | None = None,
) -> FitResult:
    """``distill_`` for causal LMs (``kind == "lm"`` data); see the module docstring. ``cache``: ``True``
    builds the top-k cache over ``data.train`` in memory, a path also writes it there (and reuses it for
    the same teacher), an ``LMTeacherCache`` is used as is; with hints or reverse KL ``True``/a path are
    ignored (the teacher runs live). The teacher trains on nothing and ends where
    it started (device, mode, ``requires_grad``)."""
    x = data.train.x
    if not isinstance(x, torch.Tensor):
        raise DataError("LM distillation needs token ids: pack the corpus into windows first")
    cfg = as_lm_config(config)
    train = train or TrainConfig()
    origin, device = model_device(teacher), training_device(student, train.device)
    flags, was_training = [p.requires_grad for p in teacher.parameters()], teacher.training
    try:
        teacher.to(device)
        lm_cache = cache if isinstance(cache, LMTeacherCache) else None
        wanted = not hints and cfg.direction == "forward"  # hints and reverse KL need the live teacher
        if wanted and not isinstance(cache, (LMTeacherCache, bool)):
            lm_cache = LMTeacherCache.build(teacher, x, top_k=cfg.top_k, path=Path(cache))
        elif wanted and cache is True:
            lm_cache = LMTeacherCache.build(teacher, x, top_k=cfg.top_k)
        task = LMDistillationTask(teacher, cfg, hints=tuple(hints), cache=lm_cache)
        teacher.to(model_device(student))  # the hints size their projections on one probe batch
        model = task.wrap(student, x[: min(len(x), 4)].to(model_device(student)))
        teacher.to(device)
        try:
            return fit(
                model, data, config=train, task=task, callbacks=callbacks, checkpoint_dir=checkpoint_dir,
                resume=resume, progress=progress, desc="distill",
            )  # fmt: skip
        finally:
            if isinstance(model, DistillModel):
                model.unwrap()
    finally:
        for p, flag in zip(teacher.parameters(), flags, strict=True):
            p.requires_grad_(flag)
        teacher.train(was_training)
        teacher.to(origin)
