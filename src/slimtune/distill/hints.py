"""Intermediate-layer distillation terms ("hints"), added to the logit loss with a weight.

``feature`` (FitNets, Romero et al. 2015): MSE or cosine distance between the outputs of named modules
of the student and the teacher, captured with forward hooks. When widths differ a learned projection
(Linear on the last dim, or a 1×1 conv on the channels of an (N, C, H, W) map) maps the student's
features to the teacher's width; conv maps of different sizes are average-pooled to the smaller one.

The projections are trained with the student: ``DistillationTask.wrap`` returns a ``DistillModel``
holding the student and every term (the optimizer sees both); ``DistillModel.unwrap()`` hands back the
bare student, so a saved or exported student carries no projection and no hook.
"""

from __future__ import annotations

import abc
import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from slimtune._registry import MethodRegistry
from slimtune.config import Config, check
from slimtune.errors import ConfigError


class HintTerm(nn.Module, abc.ABC):
    """A loss term over activations captured by hooks while ``capturing`` is set (training steps only).
    Subclasses register their hooks and implement ``loss``."""

    weight: float = 1.0

    def __init__(self) -> None:
        super().__init__()
        self.capturing = False
        self._handles: list[Any] = []

    def hook(self, module: nn.Module, fn: Callable[..., None]) -> None:
        self._handles.append(module.register_forward_hook(fn, with_kwargs=True))

    def remove_hooks(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def after_student(self) -> None:
        """Called inside the wrapper's forward, after the student ran (apply trainable adapters here)."""

    @abc.abstractmethod
    def loss(self) -> torch.Tensor:
        """The weighted term for the activations captured in this step."""


HintBuilder = Callable[..., HintTerm]  # (config, *, student, teacher, example) -> HintTerm
HINTS: MethodRegistry[type[Config], HintBuilder] = MethodRegistry("distillation hint", "register_hint")


def register_hint(name: str, config_cls: type[Config], *, help: str = "") -> Callable[[HintBuilder], HintBuilder]:
    """Register ``builder(config, *, student, teacher, example) -> HintTerm`` for ``config_cls``."""
    return HINTS.register_handler(name, config_cls, help=help)


def find_module(model: nn.Module, name: str, *, role: str) -> nn.Module:
    """``model``'s submodule ``name``, or a one-line ConfigError naming it with the nearest names."""
    modules = dict(model.named_modules())
    if name in modules and name:
        return modules[name]
    names = [n for n in modules if n]
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5) or names[:5]
    raise ConfigError(f"the {role} has no layer '{name}'; near matches: {', '.join(close)}")


def first_tensor(output: Any) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise ConfigError(f"a hooked layer returned {type(output).__name__}, not a tensor; pick another layer")


@dataclass(frozen=True, kw_only=True)
class FeatureKDConfig(Config):
    """Match outputs of named layers: ``pairs`` maps a student module name to a teacher module name."""

    pairs: dict[str, str]
    loss: Literal["mse", "cosine"] = "mse"
    weight: float = 1.0

    def __post_init__(self) -> None:
        check(bool(self.pairs), "feature: give pairs {student_layer: teacher_layer}, e.g. {net.1: layers.0}")
        for s, t in self.pairs.items():
            check(isinstance(s, str) and isinstance(t, str), f"feature: pairs must map names to names, got {s}: {t}")
        check(self.weight >= 0, f"feature: weight must be >= 0, got {self.weight}")


def _width_dim(x: torch.Tensor) -> int:
    return 1 if x.ndim == 4 else x.ndim - 1


def _adapter(s: torch.Tensor, t: torch.Tensor, where: str) -> nn.Module:
    ds, dt = _width_dim(s), _width_dim(t)
    rest_s = [n for i, n in enumerate(s.shape[1:], 1) if i != ds]
    rest_t = [n for i, n in enumerate(t.shape[1:], 1) if i != dt]
    if s.ndim != t.ndim or (s.ndim != 4 and rest_s != rest_t):
        raise ConfigError(
            f"feature {where}: shapes {tuple(s.shape[1:])} and {tuple(t.shape[1:])} differ beyond the width; "
            "pick layers whose outputs match except in width"
        )
    if s.shape[ds] == t.shape[dt]:
        return nn.Identity()
    if s.ndim == 4:
        return nn.Conv2d(s.shape[1], t.shape[1], 1)
    return nn.Linear(s.shape[-1], t.shape[-1])


class FeatureTerm(HintTerm):
    def __init__(self, config: FeatureKDConfig, student: nn.Module, teacher: nn.Module, example: Any) -> None:
        super().__init__()
        self.config, self.weight = config, config.weight
        s_mods = [find_module(student, s, role="student") for s in config.pairs]
        t_mods = [find_module(teacher, t, role="teacher") for t in config.pairs.values()]
        self.s_out: list[torch.Tensor | None] = [None] * len(s_mods)
        self.t_out: list[torch.Tensor | None] = [None] * len(t_mods)
        self.projected: list[torch.Tensor] = []
        for i, (sm, tm) in enumerate(zip(s_mods, t_mods, strict=True)):
            self.hook(sm, self._recorder(self.s_out, i))
            self.hook(tm, self._recorder(self.t_out, i))
        self.adapters = nn.ModuleList(self._probe(student, teacher, example))

    def _recorder(self, store: list[torch.Tensor | None], i: int) -> Callable[..., None]:
        def record(module: nn.Module, args: Any, kwargs: Any, output: Any) -> None:
            if self.capturing:
                store[i] = first_tensor(output)

        return record

    def _probe(self, student: nn.Module, teacher: nn.Module, example: Any) -> list[nn.Module]:
        """Run both once on ``example`` (eval mode, no grad) to size the projections."""
        self.capturing = True
        try:
            with torch.no_grad():
                for m in (student, teacher):
                    was = m.training
                    m.eval()
                    m(example)
                    m.train(was)
        finally:
            self.capturing = False
        names = [f"{s} → {t}" for s, t in self.config.pairs.items()]
        pairs = zip(self.s_out, self.t_out, names, strict=True)
        adapters = [_adapter(s, t, n) for s, t, n in pairs if s is not None and t is not None]
        if len(adapters) != len(names):
            raise ConfigError("feature: a hooked layer did not run in the forward pass; pick layers that run")
        return adapters

    def after_student(self) -> None:
        self.projected = [a(s) for a, s in zip(self.adapters, self.s_out, strict=True) if s is not None]

    def loss(self) -> torch.Tensor:
        terms = []
        for s, t in zip(self.projected, self.t_out, strict=True):
            assert t is not None
            if s.ndim == 4 and s.shape[-2:] != t.shape[-2:]:
                size = (min(s.shape[-2], t.shape[-2]), min(s.shape[-1], t.shape[-1]))
                s, t = F.adaptive_avg_pool2d(s, size), F.adaptive_avg_pool2d(t, size)
            if self.config.loss == "cosine":
                terms.append((1 - F.cosine_similarity(s, t, dim=_width_dim(s))).mean())
            else:
                terms.append(F.mse_loss(s, t))
        return torch.stack(terms).mean()


@register_hint("feature", FeatureKDConfig, help="FitNets hints: MSE/cosine between named layers, learned projection")
def _feature(config: FeatureKDConfig, *, student: nn.Module, teacher: nn.Module, example: Any) -> HintTerm:
    return FeatureTerm(config, student, teacher, example)
