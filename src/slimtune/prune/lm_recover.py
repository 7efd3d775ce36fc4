"""Recovery of a pruned causal LM by distillation from the unpruned teacher, within a budget of tokens or minutes.

``recover_lm_(student, teacher=..., data=..., config=LMRecoverConfig(max_minutes=10))`` trains the pruned
``student`` on the one loop (``fit``) with the LM distillation task (``LMDistillationTask``: forward KL to the
teacher, optionally mixed with next-token CE) and stops when the budget is spent: ``max_tokens`` training
tokens, ``max_minutes`` of training wall time, or whichever comes first. The training windows are cycled (a new
seeded permutation per pass) for as long as the budget lasts; the learning rate follows a cosine over the
budget's progress (the larger of the token and the time fraction) after a short linear warm-up.

- **Masks are held**: every exact zero of the student's Linear weights (Wanda, SparseGPT, N:M) gets a zero
  gradient and is re-zeroed after each step (``MaskCallback``), so the sparsity and the N:M pattern survive.
  Structured pruning (``lm-structured``) changed the shapes, which training never changes.
- **Teacher-logit cache**: ``cache=True`` computes the teacher's top-k logits once for every training window
  (``LMTeacherCache``), ``cache=<path>`` also writes them there and reuses them for the same teacher (a second
  recovery of another pruned variant of the same teacher pays nothing); windows not in the cache run the
  teacher live. Building the cache is timed apart from the training budget.
- **Device**: the CPU by default; ``device: auto | cuda | cuda:N`` trains on a GPU when one is there (the
  loop's device handling), and the model comes back to where it was.

The curve (tokens, minutes, validation loss and perplexity at ``checkpoints`` evenly spaced points of the
budget) comes back in ``RecoverResult`` so a benchmark can say what a longer budget would likely give.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from slimtune.config import Config, check
from slimtune.data.core import DataSplits
from slimtune.errors import ConfigError, DataError
from slimtune.train.callbacks import Callback, LoopState
from slimtune.train.lm import CausalLMTask, is_lm_data, lm_validation
from slimtune.train.sources import permutation

if TYPE_CHECKING:
    from slimtune.distill.lm_cache import LMTeacherCache
    from slimtune.train.loop import TrainConfig
    from slimtune.train.tasks import Task


@dataclass(frozen=True, kw_only=True)
class LMRecoverConfig(Config):
    """The budget (``max_tokens`` training tokens and/or ``max_minutes`` of training), the optimiser
    (AdamW at ``lr``, ``warmup`` fraction of the budget, gradients clipped at ``max_grad_norm``) and the
    distillation loss (α·CE + (1 − α)·T²·KL on the teacher's ``top_k`` logits)."""

    max_tokens: int | None = None
    max_minutes: float | None = None
    batch_size: int = 4
    lr: float = 5e-5
    warmup: float = 0.03
    max_grad_norm: float | None = 1.0
    temperature: float = 1.0
    alpha: float = 0.0
    top_k: int = 32
    checkpoints: int = 4
    device: str = "cpu"
    seed: int = 0

    def __post_init__(self) -> None:
        check(
            self.max_tokens is not None or self.max_minutes is not None,
            "give a recovery budget: max_tokens (training tokens) or max_minutes (or both)",
        )
        check(self.max_tokens is None or self.max_tokens >= 1, f"max_tokens must be >= 1, got {self.max_tokens}")
        check(self.max_minutes is None or self.max_minutes > 0, f"max_minutes must be > 0, got {self.max_minutes}")
        check(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        check(self.lr > 0, f"lr must be > 0, got {self.lr}")
        check(0 <= self.warmup < 1, f"warmup must be in [0, 1), got {self.warmup}")
        check(self.checkpoints >= 1, f"checkpoints must be >= 1, got {self.checkpoints}")
        check(self.temperature > 0, f"temperature must be > 0, got {self.temperature}")
        check(0 <= self.alpha <= 1, f"alpha must be in [0, 1], got {self.alpha}")
        check(self.top_k >= 1, f"top_k must be >= 1, got {self.top_k}")
        from slimtune.train.device import resolve_device

        resolve_device(self.device, distributed=False)  # a bad string, or CUDA on a machine without: one line now


@dataclass
class RecoverResult:
    """What the recovery spent and the validation curve along the way (``curve[0]`` is before training)."""

    tokens: int = 0
    steps: int = 0
    minutes: float = 0.0
    cache_minutes: float = 0.0
    threads: int = 0
    device: str = "cpu"
    curve: list[dict[str, float]] = field(default_factory=list)
    masked_layers: int = 0


class _Budget:
    """Tokens and wall time spent; ``progress`` is the larger fraction of the budget used (0 → 1)."""

    def __init__(self, config: LMRecoverConfig) -> None:
        self.config = config
        self.tokens = 0
        self.steps = 0
        self.started: float | None = None

    def start(self) -> None:
        if self.started is None:
            self.started = time.perf_counter()

    @property
    def minutes(self) -> float:
        return 0.0 if self.started is None else (time.perf_counter() - self.started) / 60

    @property
    def progress(self) -> float:
        cfg, parts = self.config, [0.0]
        if cfg.max_tokens is not None:
            parts.append(self.tokens / cfg.max_tokens)
        if cfg.max_minutes is not None:
            parts.append(self.minutes / cfg.max_minutes)
        return max(parts)


class _BudgetSource:
    """Training windows cycled until the budget is spent; the loop's "epochs" are the ``checkpoints``
    segments of the budget, each ending with a validation (a segment with no step reuses the last one)."""

    def __init__(self, data: DataSplits, budget: _Budget, config: LMRecoverConfig, result: RecoverResult) -> None:
        self.data, self.budget, self.config, self.result = data, budget, config, result
        self._stream = self._windows()
        self._last: dict[str, float] | None = None
        self._stepped = True

    monitor = ("val_loss", "min")

    def steps_per_epoch(self, config: TrainConfig, world: int) -> int:
        x = self.data.train.x
        assert isinstance(x, torch.Tensor)
        if self.config.max_tokens is None:
            return max(1, math.ceil(len(x) / config.batch_size))  # nominal: the time decides
        steps = math.ceil(self.config.max_tokens / (config.batch_size * x.shape[1]))
        return max(1, math.ceil(steps / self.config.checkpoints))

    def _windows(self) -> Iterator[int]:
        n, rounds = len(self.data.train), 0
        while True:
            yield from permutation(n, seed=self.config.seed * 1_000_003 + rounds).tolist()
            rounds += 1

    def batches(self, config: TrainConfig, epoch: int, rank: int, world: int) -> Iterator[tuple[Any, Any, int]]:
        if world != 1:
            raise ConfigError("budgeted LM recovery runs in one process; launch it without torchrun")
        train = self.data.train
        assert isinstance(train.x, torch.Tensor)
        self.budget.start()
        end = (epoch + 1) / self.config.checkpoints
        while self.budget.progress < min(end, 1.0):
            idx = torch.tensor([next(self._stream) for _ in range(config.batch_size)], dtype=torch.long)
            x, y = train.x[idx], train.y[idx]
            self.budget.tokens += x.numel()
            self.budget.steps += 1
            self._stepped = True
            yield x, y, len(idx)

    def validate(self, model: nn.Module) -> dict[str, float]:
        if self._stepped or self._last is None:
            self._last = lm_validation(model, self.data.val)
            self._stepped = False
            self.result.curve.append({"tokens": float(self.budget.tokens), "minutes": self.budget.minutes,
                                      "val_loss": self._last["val_loss"],
                                      "val_perplexity": self._last["val_perplexity"]})  # fmt: skip
        return self._last

    def default_task(self) -> Task:
        return CausalLMTask()


class _BudgetLR(Callback):
    """Linear warm-up over the first ``warmup`` of the budget, then a cosine to 0 at its end; it overrides
    the loop's (constant) schedule after every step, so it decays with minutes as well as with tokens."""

    def __init__(self, budget: _Budget, warmup: float) -> None:
        self.budget, self.warmup = budget, warmup
        self.base: list[float] = []

    def _set(self, state: LoopState) -> None:
        p = min(self.budget.progress, 1.0)
        if p < self.warmup:
            factor = max(p / self.warmup, 0.02)
        else:
            factor = 0.5 * (1 + math.cos(math.pi * (p - self.warmup) / max(1e-9, 1 - self.warmup)))
        for group, base in zip(state.optimizer.param_groups, self.base, strict=True):
            group["lr"] = base * factor

    def on_fit_start(self, state: LoopState) -> None:
        self.base = [float(g["lr"]) for g in state.optimizer.param_groups]
        self._set(state)

    def on_step_end(self, state: LoopState) -> None:
        self._set(state)


def _check_data(data: DataSplits) -> None:
    if not is_lm_data(data):
        raise DataError(f"LM recovery needs causal-LM data (kind 'lm'), got kind {data.kind!r}; pack text windows")
    for name in ("train", "val"):
        x = getattr(data, name).x
        if not isinstance(x, torch.Tensor) or x.ndim != 2 or len(x) == 0:
            raise DataError(f"LM recovery needs {name} token windows (int64, windows × tokens); got none")


def recover_lm_(
    student: nn.Module,
    *,
    teacher: nn.Module,
    data: DataSplits,
    config: LMRecoverConfig,
    cache: bool | str | Path | LMTeacherCache = True,
    progress: bool | None = None,
) -> RecoverResult:
    """Distil ``teacher`` into the pruned ``student`` in place within ``config``'s budget (see the module
    docstring); ``data.train`` windows train, ``data.val`` windows give the curve. Returns what was spent."""
    from slimtune.distill.lm import LMDistillationTask, LMKDConfig
    from slimtune.distill.lm_cache import LMTeacherCache
    from slimtune.prune.unstructured import MaskCallback, masks_from_zeros
    from slimtune.train.device import model_device, training_device
    from slimtune.train.loop import TrainConfig, fit

    _check_data(data)
    train = TrainConfig(epochs=config.checkpoints, batch_size=config.batch_size, lr=config.lr, schedule="constant",
                        seed=config.seed, max_grad_norm=config.max_grad_norm, device=config.device)  # fmt: skip
    kd = LMKDConfig(temperature=config.temperature, alpha=config.alpha, top_k=config.top_k)
    masks = {n: m for n, m in masks_from_zeros(student).items() if not bool(m.all())}
    result = RecoverResult(threads=torch.get_num_threads(), masked_layers=len(masks))
    device = training_device(student, config.device)
    result.device = str(device)
    origin, student_origin = model_device(teacher), model_device(student)
    flags, was_training = [p.requires_grad for p in teacher.parameters()], teacher.training
    x = data.train.x
    assert isinstance(x, torch.Tensor)
    try:
        teacher.to(device)
        started = time.perf_counter()
        lm_cache: LMTeacherCache | None = cache if isinstance(cache, LMTeacherCache) else None
        if cache is True:
            lm_cache = LMTeacherCache.build(teacher, x, top_k=config.top_k)
        elif cache is not False and lm_cache is None:
            lm_cache = LMTeacherCache.build(teacher, x, top_k=config.top_k, path=Path(str(cache)))
        result.cache_minutes = (time.perf_counter() - started) / 60
        task = LMDistillationTask(teacher, kd, cache=lm_cache)
        budget = _Budget(config)
        source = _BudgetSource(data, budget, config, result)
        source.validate(student.to(device))  # the starting point of the curve
        callbacks: list[Callback] = [_BudgetLR(budget, config.warmup)]
        if masks:
            callbacks.insert(0, MaskCallback(masks))
        fit(student, source, config=train, task=task, callbacks=callbacks, progress=progress, desc="recover")
        result.tokens, result.steps, result.minutes = budget.tokens, budget.steps, budget.minutes
    finally:
        for p, flag in zip(teacher.parameters(), flags, strict=True):
            p.requires_grad_(flag)
        teacher.train(was_training)
        teacher.to(origin)
        student.to(student_origin)
    return result
