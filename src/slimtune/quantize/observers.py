"""Observers: watch tensors during calibration and pick the range [min, max] to quantize them over.

``minmax`` and ``moving-average`` work per tensor or per channel; ``percentile``, ``mse`` and
``entropy`` read a per-tensor histogram (2048 bins by default) that grows as wider data arrives.
Make one by name with :func:`make_observer`; register your own with ``OBSERVERS.register``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
from torch import nn

from slimtune._registry import Registry
from slimtune.config import check
from slimtune.errors import ConfigError
from slimtune.quantize.affine import QuantSpec, compute_qparams, dequantize, quantize

OBSERVERS: Registry[type[Observer]] = Registry("observer")
EMPTY = "observer saw no data: the calibration set is empty"


class Observer(nn.Module):
    """Base class: ``update(x)`` records, ``range(spec)`` answers, ``qparams(spec)`` converts.

    ``min_val``/``max_val`` always hold the exact running min/max (0-d, or (C,) per channel).
    """

    name = "observer"
    per_channel_ok = True
    min_val: torch.Tensor
    max_val: torch.Tensor
    count: torch.Tensor

    def __init__(self, *, per_channel: bool = False, channel_axis: int = 0) -> None:
        super().__init__()
        if per_channel and not self.per_channel_ok:
            raise ConfigError(
                f"observer '{self.name}' is per-tensor only; use 'minmax' or 'moving-average' for per-channel ranges"
            )
        self.per_channel, self.channel_axis = per_channel, channel_axis
        self.register_buffer("min_val", torch.tensor(float("inf")))
        self.register_buffer("max_val", torch.tensor(float("-inf")))
        self.register_buffer("count", torch.tensor(0, dtype=torch.int64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.update(x)
        return x

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """Record one batch (an empty tensor is ignored)."""
        x = x.detach().float()
        if x.numel() == 0:
            return
        lo, hi = self._reduce(x)
        first = int(self.count) == 0
        self._record(x, lo, hi, first)
        if first:
            self.min_val, self.max_val = lo, hi
        else:
            self.min_val, self.max_val = torch.minimum(self.min_val, lo), torch.maximum(self.max_val, hi)
        self.count += 1

    def _reduce(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.per_channel:
            return torch.aminmax(x)
        flat = x.movedim(self.channel_axis % max(x.dim(), 1), 0).reshape(x.shape[self.channel_axis], -1)
        return torch.aminmax(flat, dim=1)

    def _record(self, x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, first: bool) -> None:
        """Subclasses keep what they need beyond the running min/max."""

    def range(self, spec: QuantSpec | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The (min, max) to quantize over; ``spec`` matters to observers that search (mse, entropy)."""
        if int(self.count) == 0:
            raise ConfigError(EMPTY)
        return self._range(spec or QuantSpec())

    def _range(self, spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor]:
        return self.min_val.clone(), self.max_val.clone()

    def qparams(self, spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor]:
        lo, hi = self.range(spec)
        return compute_qparams(lo, hi, spec)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        for name in ("min_val", "max_val"):  # per-channel buffers take their saved length
            saved = state_dict.get(prefix + name)
            if isinstance(saved, torch.Tensor) and saved.shape != getattr(self, name).shape:
                setattr(self, name, torch.empty_like(saved))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


@OBSERVERS.register("minmax", help="running min and max (per tensor or per channel)")
class MinMaxObserver(Observer):
    name = "minmax"


@OBSERVERS.register("moving-average", help="EMA of each batch's min and max; option: momentum (default 0.9)")
class MovingAverageObserver(Observer):
    name = "moving-average"

    def __init__(self, *, momentum: float = 0.9, per_channel: bool = False, channel_axis: int = 0) -> None:
        check(0.0 <= momentum < 1.0, f"momentum must be in [0, 1), got {momentum}")
        super().__init__(per_channel=per_channel, channel_axis=channel_axis)
        self.momentum = momentum
        self.register_buffer("avg_min", torch.tensor(0.0))
        self.register_buffer("avg_max", torch.tensor(0.0))

    def _record(self, x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, first: bool) -> None:
        if first:
            self.avg_min, self.avg_max = lo.clone(), hi.clone()
            return
        m = self.momentum
        self.avg_min, self.avg_max = m * self.avg_min + (1 - m) * lo, m * self.avg_max + (1 - m) * hi

    def _range(self, spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor]:
        return self.avg_min.clone(), self.avg_max.clone()

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        for name in ("avg_min", "avg_max"):
            saved = state_dict.get(prefix + name)
            if isinstance(saved, torch.Tensor) and saved.shape != getattr(self, name).shape:
                setattr(self, name, torch.empty_like(saved))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class HistogramObserver(Observer):
    """A ``bins``-bin histogram of x (or of |x| when ``fold_abs``), widened and re-binned as needed."""

    per_channel_ok = False
    fold_abs = False
    hist: torch.Tensor
    edges: torch.Tensor

    def __init__(self, *, bins: int = 2048, per_channel: bool = False, channel_axis: int = 0) -> None:
        check(bins >= 16, f"bins must be >= 16, got {bins}")
        super().__init__(per_channel=per_channel, channel_axis=channel_axis)
        self.bins = bins
        self.register_buffer("hist", torch.zeros(bins, dtype=torch.float64))
        self.register_buffer("edges", torch.zeros(2, dtype=torch.float64))

    def _record(self, x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, first: bool) -> None:
        if self.fold_abs:  # exact zeros (ReLU outputs, padding) are exact at any range: leave them out
            x = x.abs()
            x = x[x > 0]
            lo, hi = torch.zeros(()), torch.maximum(-lo, hi)
        a, b = float(lo), float(hi)
        if not first:
            a, b = min(a, float(self.edges[0])), max(b, float(self.edges[1]))
        if b <= a:
            b = a + 1e-8 * max(1.0, abs(a))
        if not first and (a, b) != (float(self.edges[0]), float(self.edges[1])):
            self._rebin(a, b)
        self.edges = torch.tensor([a, b], dtype=torch.float64, device=self.hist.device)
        self.hist += torch.histc(x, self.bins, a, b).double()

    def _rebin(self, a: float, b: float) -> None:
        centers = self.centers()
        idx = ((centers - a) / (b - a) * self.bins).floor().clamp(0, self.bins - 1).long()
        self.hist = torch.zeros_like(self.hist).index_add_(0, idx, self.hist)

    def centers(self) -> torch.Tensor:
        a, b = float(self.edges[0]), float(self.edges[1])
        width = (b - a) / self.bins
        return a + width * (torch.arange(self.bins, dtype=torch.float64, device=self.hist.device) + 0.5)

    def _clip(self, lo: float, hi: float) -> tuple[torch.Tensor, torch.Tensor]:
        lo, hi = max(lo, float(self.min_val)), min(hi, float(self.max_val))
        return torch.tensor(min(lo, hi)), torch.tensor(max(lo, hi))


@OBSERVERS.register("percentile", help="clip both tails at a percentile of a histogram; option: percentile (99.99)")
class PercentileObserver(HistogramObserver):
    name = "percentile"

    def __init__(self, *, percentile: float = 99.99, bins: int = 2048, **kw: Any) -> None:
        check(50.0 < percentile <= 100.0, f"percentile must be in (50, 100], got {percentile}")
        super().__init__(bins=bins, **kw)
        self.percentile = percentile

    def _range(self, spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor]:
        cdf = self.hist.cumsum(0) / self.hist.sum()
        p = self.percentile / 100.0
        a, b = float(self.edges[0]), float(self.edges[1])
        width = (b - a) / self.bins
        cdf = cdf.cpu()
        hi_bin = int(torch.searchsorted(cdf, torch.tensor([p], dtype=torch.float64) - 1e-12))
        lo_bin = int(torch.searchsorted(cdf, torch.tensor([1.0 - p], dtype=torch.float64), right=True))
        return self._clip(a + lo_bin * width, a + (hi_bin + 1) * width)


@OBSERVERS.register("mse", help="the clipping range minimising the squared quantization error; option: steps (100)")
class MSEObserver(HistogramObserver):
    name = "mse"

    def __init__(self, *, steps: int = 100, bins: int = 2048, **kw: Any) -> None:
        check(steps >= 1, f"steps must be >= 1, got {steps}")
        super().__init__(bins=bins, **kw)
        self.steps = steps

    def _range(self, spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor]:
        lo0, hi0 = min(float(self.min_val), 0.0), max(float(self.max_val), 0.0)
        alphas = torch.linspace(1.0 / self.steps, 1.0, self.steps, dtype=torch.float64)
        a = float(alphas[self._best(alphas * lo0, alphas * hi0, spec)])  # shrink both ends together,
        lo, hi = a * lo0, a * hi0
        for _ in range(4 if not spec.symmetric else 0):  # then move each end alone, a few rounds
            before = (lo, hi)
            hi = float(alphas[self._best(torch.full_like(alphas, lo), alphas * hi0, spec)]) * hi0
            lo = float(alphas[self._best(alphas * lo0, torch.full_like(alphas, hi), spec)]) * lo0
            if (lo, hi) == before:
                break
        return self._clip(lo, hi)

    def _best(self, los: torch.Tensor, his: torch.Tensor, spec: QuantSpec) -> int:
        """Index of the candidate range whose fake quantization of the histogram has the least error."""
        scale, zp = compute_qparams(los, his, spec)
        rows = dataclasses.replace(spec, per_channel=True, channel_axis=0)
        c = self.centers().cpu().float().expand(len(los), -1)
        err = ((c - dequantize(quantize(c, scale, zp, rows), scale, zp)) ** 2 * self.hist.cpu().float()).sum(1)
        return int(err.argmin())


@OBSERVERS.register("entropy", help="TensorRT-style KL-divergence calibration over a 2048-bin |x| histogram")
class EntropyObserver(HistogramObserver):
    name = "entropy"
    fold_abs = True

    def _range(self, spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor]:
        hist = self.hist.cpu().numpy()
        signed = spec.symmetric or float(self.min_val) < 0
        levels = max(2, 2 ** (spec.bits - 1) if signed else 2**spec.bits)
        best = kl_threshold_bin(hist, levels)
        t = float(self.edges[1]) * best / self.bins
        return self._clip(-t, t)


def kl_threshold_bin(hist: np.ndarray, levels: int) -> int:
    """The number of leading bins i (levels ≤ i ≤ len(hist)) whose clipped distribution P (outliers
    folded into bin i-1) is best matched, in KL(P‖Q), by Q: P requantized to ``levels`` bins.
    Searched coarse to fine: every ``stride``-th i, then every i around the best."""
    n = len(hist)
    if levels >= n or hist.sum() == 0:
        return n
    stride = max(1, (n - levels) // 128)
    best = min(range(levels, n + 1, stride), key=lambda i: _kl(hist, i, levels))
    fine = range(max(levels, best - stride + 1), min(n, best + stride - 1) + 1)
    return min(fine, key=lambda i: _kl(hist, i, levels))


def _kl(hist: np.ndarray, i: int, levels: int) -> float:
    sliced = hist[:i]
    p = sliced.copy()
    p[-1] += hist[i:].sum()
    group = np.minimum(np.arange(i) // (i // levels), levels - 1)
    nonzero = (p != 0).astype(np.float64)
    sums = np.bincount(group, weights=sliced, minlength=levels)
    counts = np.bincount(group, weights=nonzero, minlength=levels)
    q = np.where(nonzero > 0, sums[group] / np.maximum(counts[group], 1), 0.0)
    mask = p > 0
    ps, qs = p[mask] / p.sum(), np.maximum(q[mask] / max(q.sum(), 1e-12), 1e-12)
    return float(np.sum(ps * np.log(ps / qs)))


def make_observer(name: str, **options: Any) -> Observer:
    """An observer by registered name; unknown names and options raise ConfigError."""
    cls = OBSERVERS.get(name)
    try:
        return cls(**options)
    except TypeError as exc:
        raise ConfigError(f"observer '{name}': {exc}") from None


__all__ = [
    "EMPTY",
    "OBSERVERS",
    "EntropyObserver",
    "HistogramObserver",
    "MSEObserver",
    "MinMaxObserver",
    "MovingAverageObserver",
    "Observer",
    "PercentileObserver",
    "kl_threshold_bin",
    "make_observer",
]
