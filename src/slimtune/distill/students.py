"""Students cut from their teacher, so distillation starts from the teacher's weights, not from noise.

Supported teachers:

* ``transformer-small`` and Hugging Face BERT-family classifiers (BERT, RoBERTa, ELECTRA, MiniLM, …;
  also DistilBERT): a copy with the embeddings, the encoder layers ``layers`` (or every ``keep_every``-th,
  counting from 0, as DistilBERT was made from BERT-base) and the head (pooler, final norm, classifier).
  Then, for fewer heads or a narrower FFN, ``heads_ratio`` / ``ffn_ratio`` remove that fraction (rounded down,
  at least one kept) of every kept layer's attention heads / FFN units with the structured pruner (L1
  importance): the heads and units kept are the teacher's, weights unchanged.
* ``mlp`` / ``lenet-300-100``: an ``mlp`` with the hidden layers ``layers`` (or every ``keep_every``-th)
  and widths ``hidden`` (default: the teacher's). Each Linear copies the teacher's top-left block where shapes
  allow: the first k neurons and the first inputs; rows or columns the teacher lacks keep their random init.

Anything else raises ``UnsupportedModelError``: build a student by name instead.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from slimtune.config import Config, check
from slimtune.errors import ConfigError, UnsupportedModelError
from slimtune.models.hf import HFClassifier
from slimtune.models.transformer import TransformerClassifier
from slimtune.models.zoo import MLP


@dataclass(frozen=True, kw_only=True)
class StudentConfig(Config):
    """Recipe ``student: {from_teacher: {layers: [0, 2, 4]}}``; or ``keep_every: 2``; MLPs also ``hidden``;
    transformers also ``heads_ratio`` / ``ffn_ratio`` (fraction of each layer's heads / FFN units removed)."""

    layers: tuple[int, ...] | None = None
    keep_every: int | None = None
    hidden: tuple[int, ...] | None = None
    heads_ratio: float = 0.0
    ffn_ratio: float = 0.0

    def __post_init__(self) -> None:
        check(
            self.layers is None or self.keep_every is None,
            "from_teacher: give either layers or keep_every, not both",
        )
        for name in ("heads_ratio", "ffn_ratio"):
            ratio = getattr(self, name)
            check(0 <= ratio < 1, f"from_teacher: {name} is the fraction removed, in [0, 1), got {ratio}")
        given = [v is not None for v in (self.layers, self.keep_every, self.hidden)]
        check(
            any(given) or self.heads_ratio > 0 or self.ffn_ratio > 0,
            "from_teacher: say what to keep: layers: [0, 2, 4], keep_every: 2, (MLPs) hidden: [widths] or "
            "(transformers) heads_ratio / ffn_ratio",
        )
        if self.layers is not None:
            ok = bool(self.layers) and all(b > a for a, b in zip(self.layers, self.layers[1:])) and self.layers[0] >= 0
            check(ok, f"from_teacher: layers must be increasing indices from 0, got {list(self.layers)}")
        check(self.keep_every is None or self.keep_every >= 1, f"keep_every must be >= 1, got {self.keep_every}")
        if self.hidden is not None:
            check(bool(self.hidden) and min(self.hidden) > 0, f"hidden must be positive widths, got {self.hidden}")


def _select(n: int, cfg: StudentConfig, what: str) -> list[int]:
    if cfg.layers is not None:
        if cfg.layers[-1] >= n:
            raise ConfigError(f"from_teacher: layer {cfg.layers[-1]} is out of range; the teacher has {n} {what}")
        return list(cfg.layers)
    if cfg.keep_every is not None:
        return list(range(0, n, cfg.keep_every))
    return list(range(n))


def _ready(student: nn.Module) -> nn.Module:
    """A copy of a frozen eval-mode teacher becomes a trainable student."""
    for p in student.parameters():
        p.requires_grad_(True)
    return student.train()


def _mlp_student(teacher: MLP, cfg: StudentConfig) -> nn.Module:
    from slimtune.models import build

    if cfg.heads_ratio > 0 or cfg.ffn_ratio > 0:
        raise ConfigError("from_teacher: heads_ratio and ffn_ratio apply to transformer teachers; for MLPs give hidden")
    linears = [m for m in teacher.net if isinstance(m, nn.Linear)]
    widths = [lin.out_features for lin in linears[:-1]]
    if cfg.hidden is not None and cfg.layers is None and cfg.keep_every is None:
        if len(cfg.hidden) > len(widths):
            raise ConfigError(f"from_teacher: hidden has {len(cfg.hidden)} layers, the teacher {len(widths)}")
        keep = list(range(len(cfg.hidden)))
    else:
        keep = _select(len(widths), cfg, "hidden layers")
    hidden = list(cfg.hidden) if cfg.hidden is not None else [widths[i] for i in keep]
    if len(hidden) != len(keep):
        raise ConfigError(f"from_teacher: hidden gives {len(hidden)} widths for the {len(keep)} kept layers {keep}")
    dropout = next((float(m.p) for m in teacher.net if isinstance(m, nn.Dropout)), 0.0)
    spec: dict[str, Any] = getattr(teacher, "slimtune_spec", {})
    shape = spec.get("input_shape", [linears[0].in_features])
    options: dict[str, Any] = {"hidden": hidden, **({"dropout": dropout} if dropout else {})}
    student = build("mlp", input_shape=shape, num_classes=linears[-1].out_features, **options)
    pairs = zip([m for m in student.modules() if isinstance(m, nn.Linear)], [*(linears[i] for i in keep), linears[-1]])
    with torch.no_grad():
        for s, t in pairs:
            o, i = min(s.out_features, t.out_features), min(s.in_features, t.in_features)
            s.weight[:o, :i] = t.weight[:o, :i]
            s.bias[:o] = t.bias[:o]
    return _ready(student)


def _renumber(layers: Sequence[nn.Module]) -> None:
    for i, layer in enumerate(layers):
        for m in layer.modules():
            if isinstance(getattr(m, "layer_idx", None), int):
                m.layer_idx = i  # type: ignore[assignment]


def _cut_units(student: nn.Module, cfg: StudentConfig) -> None:
    """Remove the lowest-L1 heads / FFN units of every layer; the kept ones keep the teacher's weights."""
    from slimtune.prune.structured import StructuredPruneConfig, structured_prune

    for target, ratio in (("heads", cfg.heads_ratio), ("ffn", cfg.ffn_ratio)):
        if ratio > 0:
            try:
                structured_prune(student, StructuredPruneConfig(targets=(target,), ratio=ratio, importance="l1"))
            except UnsupportedModelError as exc:
                raise UnsupportedModelError(
                    f"from_teacher: {target}_ratio needs transformer-small or BERT-family attention ({exc})"
                ) from None


def _encoder_student(teacher: nn.Module, cfg: StudentConfig) -> nn.Module:
    if cfg.hidden is not None:
        raise ConfigError("from_teacher: hidden applies to MLP teachers; for transformers give layers or keep_every")
    student = copy.deepcopy(teacher)
    spec: dict[str, Any] = getattr(student, "slimtune_spec", None) or {"options": {}}
    if isinstance(student, TransformerClassifier):
        keep = _select(len(student.layers), cfg, "encoder layers")
        student.layers = nn.ModuleList(student.layers[i] for i in keep)
        spec["options"]["layers"] = len(keep)
        _cut_units(student, cfg)
        return _ready(student)
    assert isinstance(student, HFClassifier)
    base: Any = student.model.base_model
    bert = getattr(base, "encoder", None) is not None
    owner: Any = getattr(base, "encoder" if bert else "transformer", None)
    attr = "num_hidden_layers" if bert else "n_layers"
    box = getattr(owner, "layer", None)
    if not isinstance(box, nn.ModuleList):
        raise UnsupportedModelError(
            f"{type(student.model).__name__} has no encoder.layer list; student_from_teacher supports BERT-family "
            "and DistilBERT encoders: build the student by name instead"
        )
    keep = _select(len(box), cfg, "encoder layers")
    owner.layer = nn.ModuleList(box[i] for i in keep)
    _renumber(owner.layer)
    setattr(student.model.config, attr, len(keep))
    spec["hf_config"] = {**spec.get("hf_config", {}), attr: len(keep)}
    _cut_units(student, cfg)
    return _ready(student)


def build_student(teacher: nn.Module, config: StudentConfig) -> nn.Module:
    """The student ``config`` describes, cut from ``teacher`` (which is left untouched)."""
    if isinstance(teacher, MLP):
        return _mlp_student(teacher, config)
    if isinstance(teacher, TransformerClassifier | HFClassifier):
        return _encoder_student(teacher, config)
    raise UnsupportedModelError(
        f"student_from_teacher supports mlp, lenet-300-100, transformer-small and Hugging Face BERT-family "
        f"teachers, not {type(teacher).__name__}; build the student by name: student: {{name: ..., options: ...}}"
    )


def student_from_teacher(
    teacher: nn.Module,
    *,
    layers: Sequence[int] | None = None,
    keep_every: int | None = None,
    hidden: Sequence[int] | None = None,
    heads_ratio: float = 0.0,
    ffn_ratio: float = 0.0,
) -> nn.Module:
    """A smaller copy of ``teacher`` initialised from its weights (see the module docstring)."""
    config = StudentConfig(
        layers=tuple(layers) if layers is not None else None,
        keep_every=keep_every,
        hidden=tuple(hidden) if hidden is not None else None,
        heads_ratio=heads_ratio,
        ffn_ratio=ffn_ratio,
    )
    return build_student(teacher, config)
