"""One-shot sparsity for causal LMs: ``wanda`` and ``sparsegpt`` prune methods (unstructured 50–70% or N:M).

Both run the one block-by-block calibration pass (``slimtune.models.blocks.calibration_pass``) over the first
``samples`` train windows of the recipe's text data: Wanda keeps the mean x² of each target layer's input
columns, SparseGPT the layer Hessian (GPTQ's ``HessianStats``); each block is pruned before the next one is
calibrated, so later blocks see the pruned outputs. The math is in ``lm_sparse_math``. The zeros are exact, so
``masks_from_zeros`` gives the masks that later stages hold (``MaskCallback``; the recipe does it), the model
file stores them sparsely, and GPTQ on the pruned model keeps them::

    - prune: {method: sparsegpt, sparsity: 0.6, samples: 32}
    - prune: {method: wanda, pattern: "2:4"}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from slimtune.config import Config, check
from slimtune.errors import ConfigError, DataError
from slimtune.models.blocks import (
    BlockContext,
    calibration_pass,
    compress_in_stages,
    linear_weight,
    set_linear_weight,
)
from slimtune.prune.api import PruneContext, PruneSummary, register_pruner
from slimtune.prune.lm_sparse_math import row_keep, sparsegpt, wanda_scores

LM_METHODS = ("wanda", "sparsegpt", "lm-structured")  # prune methods for causal LMs only (they need text)


@dataclass(frozen=True, kw_only=True)
class LMSparsityConfig(Config):
    """``sparsity`` (a fraction in (0, 1), 0.5 by default) or an N:M ``pattern`` ("2:4", "4:8"), calibrated on
    ``samples`` train windows run ``batch_size`` at a time."""

    sparsity: float | None = None
    pattern: str | int | None = None
    samples: int = 32
    batch_size: int = 8
    owl: bool = False  # outlier-weighted per-block ratios (Yin et al. 2024) around the target, ± owl_lambda
    owl_lambda: float = 0.08
    owl_m: float = 5.0

    def __post_init__(self) -> None:
        check(not (self.owl and self.pattern is not None), "owl sets unstructured per-block ratios: drop pattern")
        check(0 <= self.owl_lambda < 0.5 and self.owl_m > 0, "owl_lambda must be in [0, 0.5) and owl_m > 0")
        check(
            self.sparsity is None or self.pattern is None,
            f"give sparsity or pattern, not both (pattern {self.pattern} sets the sparsity to N/M)",
        )
        if self.sparsity is not None:
            check(0 < self.sparsity < 1, f"sparsity must be in (0, 1), got {self.sparsity}")
        if self.pattern is not None:
            self.nm  # noqa: B018 - parses (and checks) the pattern
        check(self.samples >= 1, f"samples must be >= 1, got {self.samples}")
        check(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")

    @property
    def nm(self) -> tuple[int, int]:
        """(N, M) of the pattern, (0, 0) when unstructured."""
        if self.pattern is None:
            return 0, 0
        text = str(self.pattern)
        parts = text.split(":")
        if isinstance(self.pattern, int) or len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
            raise ConfigError(
                f"pattern must be N:M zeros per M columns as a string like '2:4' or '4:8', got {self.pattern!r} "
                "(in YAML quote it: pattern: '2:4')"
            )
        n, m = int(parts[0]), int(parts[1])
        check(0 < n < m, f"pattern {text}: N must be in 1..M-1 (N zeros in every M columns), got {text}")
        return n, m

    @property
    def target(self) -> float:
        n, m = self.nm
        return n / m if m else (0.5 if self.sparsity is None else self.sparsity)


@dataclass(frozen=True, kw_only=True)
class WandaConfig(LMSparsityConfig):
    """Wanda: drop the lowest |W|·‖x‖ of each output row (no weight update)."""


@dataclass(frozen=True, kw_only=True)
class SparseGPTConfig(LMSparsityConfig):
    """SparseGPT: OBS pruning with the layer Hessian and GPTQ-style error updates (``block_size`` columns at a
    time, damping ``damp``·mean diag H)."""

    block_size: int = 128
    damp: float = 0.01
    true_sequential: bool = False  # each stage (q|k|v, o, gate|up, down) calibrated on the pruned stages' outputs

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.block_size >= 1, f"block_size must be >= 1, got {self.block_size}")
        check(0 < self.damp < 1, f"damp must be in (0, 1), got {self.damp}")
        m = self.nm[1]
        check(not m or self.block_size % m == 0, f"block_size {self.block_size} must be a multiple of M={m}")


class _Wanda:
    def __init__(self, config: LMSparsityConfig) -> None:
        self.config = config
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}
        self.block_sparsity: list[float] | None = None  # OWL's per-block ratios
        self.outliers: list[float] = []  # OWL's probe: the outlier ratio of each block's Wanda scores

    def sparsity(self, index: int) -> float:
        return self.config.target if self.block_sparsity is None else self.block_sparsity[index]

    def observe(self, name: str, layer: nn.Module, x: torch.Tensor) -> None:
        self.sums[name] = self.sums.get(name, 0) + (x.float() ** 2).sum(dim=0)  # type: ignore[operator]
        self.counts[name] = self.counts.get(name, 0) + x.shape[0]

    def compress_block(self, ctx: BlockContext, targets: dict[str, nn.Module]) -> None:
        n, m = self.config.nm
        for name, layer in targets.items():
            w = linear_weight(layer)
            scores = wanda_scores(w, self.sums.pop(name) / self.counts.pop(name))
            keep = row_keep(scores, sparsity=self.sparsity(ctx.index), n=n, m=m)
            set_linear_weight(layer, w * keep.to(w.dtype))


class _OWLProbe(_Wanda):
    """Measures each block's outlier ratio (Wanda scores above ``owl_m`` × their mean) without pruning."""

    def compress_block(self, ctx: BlockContext, targets: dict[str, nn.Module]) -> None:
        scores = [wanda_scores(linear_weight(layer), self.sums.pop(n) / self.counts.pop(n)).flatten()
                  for n, layer in targets.items()]  # fmt: skip
        flat = torch.cat(scores)
        self.outliers.append(float((flat > self.config.owl_m * flat.mean()).float().mean()))


def owl_ratios(outliers: list[float], *, target: float, lam: float) -> list[float]:
    """OWL: blocks with more outliers keep more weights; ratios in target ± lam, averaging ``target``."""
    d = torch.tensor(outliers)
    span = float(d.max() - d.min())
    norm = (d - d.min()) / span if span > 0 else torch.zeros_like(d)
    s = target + lam - 2 * lam * norm
    s = s + (target - s.mean())
    return [min(max(float(v), 0.0), 0.99) for v in s]


class _SparseGPT:
    def __init__(self, config: SparseGPTConfig) -> None:
        from slimtune.quantize.weight_only.gptq import HessianStats

        self.config = config
        self.stats: dict[str, HessianStats] = {}
        self._stats_cls = HessianStats
        self.block_sparsity: list[float] | None = None

    def observe(self, name: str, layer: nn.Module, x: torch.Tensor) -> None:
        self.stats.setdefault(name, self._stats_cls(x.shape[-1])).add(x)

    def compress_block(self, ctx: BlockContext, targets: dict[str, nn.Module]) -> None:
        if self.config.true_sequential:
            compress_in_stages(ctx, targets, self, lambda t: self._prune(ctx, t), lambda n: self.stats.pop(n, None))
            self.stats.clear()
        else:
            self._prune(ctx, targets)

    def _prune(self, ctx: BlockContext, targets: dict[str, nn.Module]) -> None:
        c = self.config
        n, m = c.nm
        for name, layer in targets.items():
            w = linear_weight(layer)
            s = c.target if self.block_sparsity is None else self.block_sparsity[ctx.index]
            new, _ = sparsegpt(w, self.stats.pop(name).h, sparsity=s, n=n, m=m, block_size=c.block_size,
                               damp=c.damp, name=f"{ctx.name}.{name}")  # fmt: skip
            set_linear_weight(layer, new.to(w.dtype))


def lm_calibration(ctx: PruneContext, method: str, config: LMSparsityConfig) -> torch.Tensor:
    """The first ``samples`` train windows of the recipe's text data, refused in one line when there are too few."""
    data = ctx.require_data(method)
    if getattr(data, "kind", None) != "lm":
        raise ConfigError(f"pruning method '{method}' is for causal LMs; the data is not text (kind: lm)")
    ids = torch.as_tensor(data.train.x)
    if ids.ndim != 2 or len(ids) < config.samples:
        raise DataError(
            f"the calibration set has {len(ids)} windows but {config.samples} samples were requested; "
            "lower samples or give more text"
        )
    return ids[: config.samples].long()


def check_lm_targets(model: nn.Module, config: LMSparsityConfig, calibration: torch.Tensor) -> dict[str, int]:
    """Input widths of the decoder-block layers to prune; refuses (before anything changes) an N:M pattern that
    does not tile a layer's input width and a calibration set with fewer tokens than a layer has inputs."""
    from slimtune.quantize.weight_only.api import block_targets

    widths = {name: int(linear_weight(layer).shape[1]) for name, layer in block_targets(model).items()}
    _, m = config.nm
    for name, width in widths.items():
        if m and width % m:
            raise ConfigError(
                f"pattern {config.pattern} needs input widths divisible by {m}, but layer '{name}' has {width}; "
                f"use unstructured sparsity or a pattern whose M divides {width}"
            )
    tokens, widest = int(calibration.numel()), max(widths.values())
    if isinstance(config, SparseGPTConfig) and tokens < widest:
        raise DataError(
            f"the calibration set has {tokens} tokens, fewer than the widest layer input ({widest}): the Hessian "
            f"would be singular; give at least {-(-widest // calibration.shape[1])} windows (samples)"
        )
    return widths


def _prune_lm(model: nn.Module, config: LMSparsityConfig, ctx: PruneContext, method: str, algo: Any) -> None:
    ids = lm_calibration(ctx, method, config)
    widths = check_lm_targets(model, config, ids)
    ratios = None
    if config.owl:  # a first pass on the dense model measures every block's outliers
        probe = _OWLProbe(config)
        calibration_pass(model, ids, probe, batch_size=config.batch_size, progress=bool(ctx.progress))
        ratios = algo.block_sparsity = owl_ratios(probe.outliers, target=config.target, lam=config.owl_lambda)
    calibration_pass(model, ids, algo, batch_size=config.batch_size, progress=bool(ctx.progress))
    zeros = total = 0
    from slimtune.quantize.weight_only.api import block_targets

    for layer in block_targets(model).values():
        w = linear_weight(layer)
        zeros, total = zeros + int((w == 0).sum()), total + w.numel()
    record = {"method": method, **config.to_dict(), "target_sparsity": config.target, "layers": len(widths),
              "sparsity": zeros / max(total, 1), **({"block_sparsity": ratios} if ratios else {})}  # fmt: skip
    ctx.summary = PruneSummary(record, lines=[f"{method}: {len(widths)} layers at {zeros / max(total, 1):.1%} zeros"])


@register_pruner("wanda", WandaConfig, help="causal LMs: drop the lowest |W|·‖x‖ per row (calibration text)")
def wanda_prune(model: nn.Module, config: WandaConfig, ctx: PruneContext) -> None:
    _prune_lm(model, config, ctx, "wanda", _Wanda(config))


@register_pruner("sparsegpt", SparseGPTConfig, help="causal LMs: OBS pruning with the layer Hessian (calibration)")
def sparsegpt_prune(model: nn.Module, config: SparseGPTConfig, ctx: PruneContext) -> None:
    _prune_lm(model, config, ctx, "sparsegpt", _SparseGPT(config))
