"""The budget search on causal LMs: options (``LMSearchConfig``) and the candidates they span.

The same shapes as the classifier search (``space.py``): a candidate is a *base* (a torch LM made from the
model: ``dense`` — the model itself —, ``width`` (GQA head groups and FFN channels removed at a ratio),
``depth`` (a fraction of the decoder blocks dropped, ShortGPT-style) or ``sparse`` (Wanda / SparseGPT at 50% or
N:M)) deployed at one *precision* (``fp32``, or weight-only ``int4-gptq``, ``int8-rtn``, …: the algorithm and bit
width of ``quantize_lm_``, exported as MatMulNBits). Combinations (prune then quantize) pair each pruned base with
``combine`` precisions. Ids are stable hashes of each candidate's dict (``space.stable_id``).

The quality measure is perplexity; the budget ``max_ppl_increase`` is a percentage of the model's own perplexity
on the same windows (the proxy: a few validation windows, one-shot, before any recovery).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from torch import nn

from slimtune.config import Config, check
from slimtune.search.space import Base, Candidate, parse_duration

LM_OBJECTIVES = ("latency", "size")
LM_TECHNIQUES = ("width", "depth", "sparse", "quant")
SPARSE_METHODS = ("wanda", "sparsegpt")
QUANT_METHODS = ("rtn", "gptq", "awq", "hqq")
QUANT_BITS = (4, 8)


def parse_precision(text: str) -> tuple[int, str]:
    """``int4-gptq`` → (4, "gptq"); refuses anything else in one line."""
    head, _, method = text.partition("-")
    bits = head[3:] if head.startswith("int") else ""
    ok = bits.isdigit() and int(bits) in QUANT_BITS and method in QUANT_METHODS
    check(ok, f"precision {text!r} must be int4|int8 then -rtn|-gptq|-awq|-hqq, e.g. int4-gptq")
    return int(bits), method


def parse_sparsity(text: str) -> tuple[float | None, str | None]:
    """``"0.5"`` → (0.5, None); ``"2:4"`` → (None, "2:4")."""
    if ":" in text:
        n, _, m = text.partition(":")
        check(n.isdigit() and m.isdigit() and 0 < int(n) < int(m), f"sparsity pattern {text!r} must be N:M like 2:4")
        return None, text
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    check(
        not (value >= 60 and value == int(value)),
        f"sparsity {text!r}: an N:M pattern must be quoted in YAML ('2:4'); unquoted, YAML reads 2:4 as 124",
    )
    check(0 < value < 1, f"sparsity {text!r} must be a fraction in (0, 1) like 0.5 or a pattern like 2:4")
    return value, None


@dataclass(frozen=True, kw_only=True)
class LMSearchConfig(Config):
    """Find the cheapest LM (``objective``: ONNX Runtime ``latency`` — decode ms/token at batch 1 — or ``size`` of the
    deployed ONNX file) whose perplexity is at most ``max_ppl_increase`` percent above the model's own.
    ``techniques``: which families to try (width, depth, sparse, quant). ``widths``: fractions of head groups and
    FFN channels removed; ``depths``: fractions of decoder blocks dropped; ``sparse_methods`` × ``sparsities``
    ("0.5", "2:4"); ``precisions``: weight-only int4/int8 algorithms tried on the dense model; ``combine``: those
    tried on every pruned base too (prune then quantize). ``group_size``: quantization groups (a smaller one that
    divides every layer is taken when it does not, unless ``ragged_groups``: then each row's last group is shorter,
    as MatMulNBits allows; 128 ragged is the faster int4 grid on CPU, benchmarks/results/lm_int4_peers.md).
    Strategy: every candidate gets a one-shot perplexity on ``proxy_windows`` validation windows; a base more than
    ``hopeless_increase`` percent above the budget at fp32 drops its precisions; the Pareto front's over-budget
    members cheaper than the best within-budget candidate get a short distillation recovery (``recovery_windows``
    train windows × ``recovery_epochs``, at most ``max_recoveries`` bases, none after ``time_budget``); then up to
    ``max_measured`` front members (and the model) are exported and measured in ONNX Runtime, and the cheapest
    within the budget is shipped."""

    max_ppl_increase: float = 10.0
    objective: Literal["latency", "size"] = "latency"
    time_budget: str | float | None = None
    techniques: tuple[str, ...] = LM_TECHNIQUES
    widths: tuple[float, ...] = (0.25,)
    depths: tuple[float, ...] = (0.25,)
    sparse_methods: tuple[str, ...] = SPARSE_METHODS
    sparsities: tuple[float | str, ...] = (0.5,)  # add "2:4" (quoted in YAML): +137-266% one-shot on SmolLM2
    precisions: tuple[str, ...] = ("int4-rtn", "int4-gptq", "int4-awq", "int4-hqq", "int8-rtn")
    combine: tuple[str, ...] = ("int4-rtn", "int4-gptq")
    group_size: int = 32
    ragged_groups: bool = False
    samples: int = 16
    proxy_windows: int = 8
    hopeless_increase: float = 1000.0
    recovery_windows: int = 64
    recovery_epochs: int = 1
    recovery_lr: float = 1e-4
    max_recoveries: int = 2
    max_measured: int = 4
    batch_size: int = 8
    seed: int = 0

    def __post_init__(self) -> None:
        check(
            self.max_ppl_increase >= 0,
            f"max_ppl_increase must be >= 0 (percent of the model's perplexity), got {self.max_ppl_increase}",
        )
        check(
            self.objective in LM_OBJECTIVES,
            f"objective for a language model must be latency or size, got {self.objective!r}",
        )
        parse_duration(self.time_budget)
        check(bool(self.techniques), f"techniques must name at least one of {', '.join(LM_TECHNIQUES)}")
        for t in self.techniques:
            check(t in LM_TECHNIQUES, f"unknown LM technique {t!r}; choose from {', '.join(LM_TECHNIQUES)}")
        for r in (*self.widths, *self.depths):
            check(0 < r < 1, f"widths and depths must be fractions in (0, 1), got {r}")
        for s in self.sparse_methods:
            check(s in SPARSE_METHODS, f"unknown sparse method {s!r}; choose from {', '.join(SPARSE_METHODS)}")
        for text in self.sparsities:
            parse_sparsity(str(text))
        for p in (*self.precisions, *self.combine):
            parse_precision(p)
        check(self.group_size in (-1, 16, 32, 64, 128, 256), f"group_size must be 16..256 or -1, got {self.group_size}")
        check(self.samples >= 1 and self.proxy_windows >= 1, "samples and proxy_windows must be >= 1")
        check(self.hopeless_increase >= 0, f"hopeless_increase must be >= 0 percent, got {self.hopeless_increase}")
        check(self.recovery_windows >= 1 and self.recovery_epochs >= 1, "recovery_windows and _epochs must be >= 1")
        check(self.recovery_lr > 0, f"recovery_lr must be > 0, got {self.recovery_lr}")
        check(self.max_recoveries >= 0, f"max_recoveries must be >= 0, got {self.max_recoveries}")
        check(self.max_measured >= 1 and self.batch_size >= 1, "max_measured and batch_size must be >= 1")

    @property
    def time_budget_s(self) -> float | None:
        return parse_duration(self.time_budget)


def build_lm_space(config: LMSearchConfig) -> list[Candidate]:
    """Every candidate, cheap techniques first: the model itself (fp32, then each precision), then each pruned
    base at fp32 and at each ``combine`` precision."""
    quant = "quant" in config.techniques
    bases: list[Base] = []
    if "width" in config.techniques:
        bases += [Base("width", {"ratio": r}) for r in config.widths]
    if "depth" in config.techniques:
        bases += [Base("depth", {"ratio": r}) for r in config.depths]
    if "sparse" in config.techniques:
        pairs = [(m, str(s)) for m in config.sparse_methods for s in config.sparsities]
        bases += [Base("sparse", {"method": m, "sparsity": s}) for m, s in pairs]
    out = [Candidate(Base("dense"), "fp32")]
    out += [Candidate(Base("dense"), p) for p in (config.precisions if quant else ())]
    for base in bases:
        out += [Candidate(base, p) for p in ("fp32", *(config.combine if quant else ()))]
    return out


def base_name(base: Base) -> str:
    if base.kind in ("width", "depth"):
        return f"{base.kind}-{base.params['ratio']:g}"
    if base.kind == "sparse":
        return f"{base.params['method']}-{base.params['sparsity']}"
    return "dense"


def candidate_name(c: Candidate) -> str:
    if c.base.kind == "dense":
        return "model" if c.precision == "fp32" else f"model+{c.precision}"
    return base_name(c.base) if c.precision == "fp32" else f"{base_name(c.base)}+{c.precision}"


def fitting_group(widths: list[int], wanted: int) -> int:
    """``wanted`` when it divides every input width, else the largest smaller group that does, else -1."""
    for g in (wanted, 256, 128, 64, 32, 16):
        if 0 < g <= wanted and all(w % g == 0 for w in widths):
            return g
    return -1


def estimated_bytes(model: nn.Module, precision: str, group_size: int) -> int:
    """Bytes of the deployed ONNX weights: fp32 everywhere, except the decoder-block Linears at a weight-only
    precision (``bits``/8 per weight plus an fp32 scale per group). A tied embedding counts once. The proxy
    cost of both objectives until a front member is exported and measured (decode at batch 1 reads every
    weight once per token, so it tracks these bytes)."""
    from slimtune.models.blocks import linear_weight
    from slimtune.quantize.weight_only.api import block_targets

    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += 4 * p.numel()
    if precision == "fp32":
        return total
    bits, _ = parse_precision(precision)
    for layer in block_targets(model).values():
        w = linear_weight(layer)
        groups = w.shape[0] * (1 if group_size == -1 else -(-w.shape[1] // group_size))  # a ragged group counts
        total += int(w.numel() * bits / 8) + 4 * groups - 4 * w.numel()
    return total


__all__ = [
    "LMSearchConfig",
    "base_name",
    "build_lm_space",
    "candidate_name",
    "estimated_bytes",
    "fitting_group",
    "parse_precision",
    "parse_sparsity",
]
