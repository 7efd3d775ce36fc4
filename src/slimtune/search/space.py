"""The search space: options (``SearchConfig``) and the candidates they span.

A candidate is a *base* (a torch model made from the teacher and trained: structured pruning, a
distilled student, a distilled student that is also structurally pruned, magnitude sparsity + k-bit
clustering, or the dense teacher itself) deployed at one *precision* (fp32, or int8 through ONNX Runtime,
dynamic or static). Techniques compose: every base is also tried at every int8 precision, and with
``combine_ratios`` each student is pruned as well (fewer layers *and* fewer heads/neurons/channels).
Every base and candidate is a small dict with a stable id (a hash of the dict), so results can be cached
and a search resumed.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from slimtune.config import Config, check

OBJECTIVES = ("latency", "size", "macs")
TECHNIQUES = ("prune", "student", "sparse", "int8")
# static: ops auto (the whole int8 chain on conv nets); static-weights: weights-only static int8 (opt-in, the
# other value of the ``ops`` dimension); mixed: static int8, the most sensitive layer kept fp32
INT8_KINDS = ("dynamic", "static", "mixed", "static-weights")
DEFAULT_INT8 = ("dynamic", "static", "mixed")
_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: str | float | int | None, *, what: str = "time_budget") -> float | None:
    """Seconds from ``90``, ``"90s"``, ``"30m"``, ``"1.5h"``; ``None`` means no limit."""
    if value is None:
        return None
    if isinstance(value, bool):
        check(False, f"{what} must be a duration like 90s, 30m or 2h, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([smh]?)\s*", str(value))
        check(match is not None, f"{what} must be a duration like 90s, 30m or 2h, got {value!r}")
        assert match is not None
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    check(seconds > 0, f"{what} must be positive, got {value!r}")
    return seconds


@dataclass(frozen=True, kw_only=True)
class SearchConfig(Config):
    """Find the cheapest model (``objective``: measured ORT ``latency`` at batch 1, ``size`` of the deployed
    file, or ``macs``) whose validation accuracy is at most ``max_accuracy_drop`` points below the
    teacher's. ``time_budget``: seconds or ``"30m"``; no new work starts after it (then the search
    finalises with what exists). ``techniques``: which families to try. ``prune_ratios``: structured
    pruning ratios; ``student_widths``: student width (or depth) as a fraction of the teacher's;
    ``sparsities`` with ``cluster_bits``: magnitude sparsity then weight clustering; ``int8``: ONNX
    Runtime int8 kinds (dynamic, static, mixed; ``static-weights`` adds weights-only static int8 beside
    ``static``, whose ``ops: auto`` quantizes a conv net's whole chain) applied to every base and the teacher;
    ``combine_ratios``: with both ``prune`` and ``student`` chosen, each student is also structurally pruned
    by each of these ratios (a student cut from the teacher's weights, pruned, then distilled).
    Strategy: every base gets ``proxy_epochs`` of recovery, those more than ``hopeless_margin`` points
    below the budget (widened by sqrt(full_epochs / epochs) for short proxies) are dropped, successive
    halving (keep 1/``eta``, ``eta``× the epochs) runs up to ``full_epochs``, which only the Pareto front
    is certain to get. A candidate is chosen only if it is also cheaper than the teacher on the objective.
    The time budget counts the whole search, also the part before a kill when it is resumed. ``lr``:
    recovery fine-tuning of pruned and clustered copies (they start near the teacher's solution);
    ``student_lr``: distillation of students, which lost layers or width and have more to relearn
    (default: ``lr``)."""

    max_accuracy_drop: float = 1.0
    objective: Literal["latency", "size", "macs"] = "latency"
    time_budget: str | float | None = None
    techniques: tuple[str, ...] = TECHNIQUES
    prune_ratios: tuple[float, ...] = (0.25, 0.5, 0.75)
    student_widths: tuple[float, ...] = (0.5, 0.25)
    combine_ratios: tuple[float, ...] = ()
    sparsities: tuple[float, ...] = (0.8,)
    cluster_bits: int = 4
    int8: tuple[str, ...] = DEFAULT_INT8
    proxy_epochs: int = 1
    full_epochs: int = 8
    eta: int = 2
    hopeless_margin: float = 5.0
    lr: float = 1e-3
    student_lr: float | None = None
    batch_size: int = 64
    seed: int = 0
    calibration: int = 256

    def __post_init__(self) -> None:
        check(
            self.objective in OBJECTIVES,
            f"objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}",
        )
        check(
            self.max_accuracy_drop >= 0,
            f"max_accuracy_drop must be >= 0 points of accuracy, got {self.max_accuracy_drop}",
        )
        parse_duration(self.time_budget)
        for t in self.techniques:
            check(t in TECHNIQUES, f"unknown technique {t!r}; choose from {', '.join(TECHNIQUES)}")
        check(bool(self.techniques), f"techniques must name at least one of {', '.join(TECHNIQUES)}")
        for k in self.int8:
            check(k in INT8_KINDS, f"unknown int8 kind {k!r}; choose from {', '.join(INT8_KINDS)}")
        for r in self.prune_ratios:
            check(0 < r < 1, f"prune_ratios must be in (0, 1), got {r}")
        for r in self.combine_ratios:
            check(0 < r < 1, f"combine_ratios must be in (0, 1), got {r}")
        for w in self.student_widths:
            check(0 < w < 1, f"student_widths must be fractions in (0, 1), got {w}")
        for s in self.sparsities:
            check(0 < s < 1, f"sparsities must be in (0, 1), got {s}")
        check(1 <= self.cluster_bits <= 8, f"cluster_bits must be in 1..8, got {self.cluster_bits}")
        check(self.proxy_epochs >= 1, f"proxy_epochs must be >= 1, got {self.proxy_epochs}")
        check(self.full_epochs >= self.proxy_epochs, "full_epochs must be >= proxy_epochs")
        check(self.eta >= 2, f"eta (the halving factor) must be >= 2, got {self.eta}")
        check(self.hopeless_margin >= 0, f"hopeless_margin must be >= 0 points, got {self.hopeless_margin}")
        check(self.lr > 0 and self.batch_size >= 1, "lr must be > 0 and batch_size >= 1")
        check(self.student_lr is None or self.student_lr > 0, f"student_lr must be > 0, got {self.student_lr}")
        check(self.calibration >= 1, f"calibration must be >= 1 examples, got {self.calibration}")

    @property
    def time_budget_s(self) -> float | None:
        return parse_duration(self.time_budget)

    def space_dict(self) -> dict[str, Any]:
        """The options that decide which work is done; a resumed search must agree on them."""
        out = self.to_dict()
        out.pop("time_budget")
        return out


def stable_id(spec: dict[str, Any]) -> str:
    return hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:10]


@dataclass(frozen=True)
class Base:
    """A torch model made from the teacher: ``kind`` is dense, prune, student or sparse."""

    kind: str
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, **self.params}

    @property
    def id(self) -> str:
        return stable_id(self.spec)

    @property
    def trainable(self) -> bool:
        return self.kind != "dense"  # the dense teacher is only quantized, never retrained

    @property
    def name(self) -> str:
        if self.kind == "prune":
            return f"prune-{self.params['ratio']:g}"
        if self.kind == "student" and "ratio" in self.params:
            return f"student-{self.params['width']:g}-prune-{self.params['ratio']:g}"
        if self.kind == "student":
            return f"student-{self.params['width']:g}"
        if self.kind == "sparse":
            return f"sparse-{self.params['sparsity']:g}-{self.params['bits']}bit"
        return "dense"


@dataclass(frozen=True)
class Candidate:
    """A base deployed at one precision: ``fp32``, ``int8-dynamic``, ``int8-static`` or ``int8-mixed``
    (static int8 with the layer the per-layer sensitivity pass finds most sensitive kept in fp32)."""

    base: Base
    precision: str

    @property
    def spec(self) -> dict[str, Any]:
        return {**self.base.spec, "precision": self.precision}

    @property
    def id(self) -> str:
        return stable_id(self.spec)

    @property
    def name(self) -> str:
        if self.base.kind == "dense":
            return f"teacher+{self.precision}"
        return self.base.name if self.precision == "fp32" else f"{self.base.name}+{self.precision}"


def build_space(config: SearchConfig) -> list[Candidate]:
    """Every candidate the config spans, in a fixed order (cheap techniques first)."""
    bases: list[Base] = []
    if "prune" in config.techniques:
        bases += [Base("prune", {"ratio": r}) for r in config.prune_ratios]
    if "student" in config.techniques:
        bases += [Base("student", {"width": w}) for w in config.student_widths]
        if "prune" in config.techniques:
            bases += [
                Base("student", {"width": w, "ratio": r}) for w in config.student_widths for r in config.combine_ratios
            ]
    if "sparse" in config.techniques:
        bases += [Base("sparse", {"sparsity": s, "bits": config.cluster_bits}) for s in config.sparsities]
    int8 = [f"int8-{k}" for k in config.int8] if "int8" in config.techniques else []
    out = [Candidate(Base("dense"), p) for p in int8]
    for base in bases:
        out += [Candidate(base, p) for p in ("fp32", *int8)]
    return out


__all__ = ["Base", "Candidate", "SearchConfig", "build_space", "parse_duration", "stable_id"]
