"""Weight sharing by k-means clustering, the second stage of Deep Compression (Han et al. 2016).

``cluster_(model, config)`` runs 1-D k-means over the non-zero weights of every Linear/Conv layer and
replaces each weight by its centroid, so a layer holds at most ``2**bits`` distinct non-zero values.
Zeros (pruned weights) are a separate, fixed "pruned" value outside the codebook: sparsity is kept.
``CentroidFineTune`` is the paper's centroid fine-tuning as a callback for :func:`slimtune.train.fit`:
after each backward the gradients of a cluster's members are summed and every member receives that
sum, and after each step the members are snapped back to one shared value (the cluster mean), so the
cluster assignment never changes and the weights stay exactly centroid values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from slimtune.config import Config, check
from slimtune.errors import ConfigError
from slimtune.prune.unstructured import check_exclude, prunable_weights
from slimtune.train.callbacks import Callback, LoopState

MAX_BITS = 8
Init = Literal["linear", "density", "random"]
Precision = Literal["float32", "float16"]


@dataclass(frozen=True, kw_only=True)
class ClusterConfig(Config):
    """``bits`` per layer (2**bits shared values), ``layer_bits`` overrides by regex on the layer name
    (first match wins), ``init`` of the centroids: ``linear`` over [min, max] (the paper's choice; keeps
    the rare large weights), ``density`` (quantiles of the weights) or ``random`` (Forgy, seeded).
    ``dtype="float16"`` rounds centroids and the clustered layers' biases to half precision, so that the
    codec stores them in 16 bits without loss."""

    bits: int = 4
    layer_bits: dict[str, int] = field(default_factory=dict)
    init: Init = "linear"
    exclude: tuple[str, ...] = ()
    iterations: int = 100
    dtype: Precision = "float32"
    seed: int = 0

    def __post_init__(self) -> None:
        for where, bits in [("bits", self.bits), *((f"layer_bits[{p!r}]", b) for p, b in self.layer_bits.items())]:
            check(
                isinstance(bits, int) and not isinstance(bits, bool) and 1 <= bits <= MAX_BITS,
                f"{where} must be an integer in 1..{MAX_BITS} (2**bits centroids per layer), got {bits!r}",
            )
        check(self.init in ("linear", "density", "random"), f"init must be linear, density or random: {self.init!r}")
        check(self.dtype in ("float32", "float16"), f"dtype must be float32 or float16, got {self.dtype!r}")
        check(self.iterations >= 1, f"iterations must be >= 1, got {self.iterations}")
        check_exclude(self.exclude)
        check_exclude(tuple(self.layer_bits))

    def bits_for(self, layer: str) -> int:
        return next((b for p, b in self.layer_bits.items() if re.search(p, layer)), self.bits)


@dataclass
class Clustered:
    """One clustered weight: ``index`` (int64, the weight's shape) names each weight's centroid, −1 where
    the weight is pruned; ``centroids`` holds the shared values (kept current by ``CentroidFineTune``)."""

    centroids: torch.Tensor
    index: torch.Tensor
    dtype: Precision = "float32"

    @property
    def mask(self) -> torch.Tensor:
        return self.index >= 0

    def dense(self) -> torch.Tensor:
        """The weight this clustering stands for: centroid values, zeros where pruned."""
        out = torch.zeros(self.index.shape, dtype=self.centroids.dtype, device=self.centroids.device)
        mask = self.mask
        out[mask] = self.centroids[self.index[mask]]
        return out


def _round(c: torch.Tensor, dtype: Precision) -> torch.Tensor:
    """Centroids in the storage precision, never rounded to exactly 0 (that value means "pruned")."""
    if dtype == "float32":
        return c.float()
    half = c.half()
    tiny = torch.full_like(half, torch.finfo(torch.float16).smallest_normal * 2.0**-10)  # smallest subnormal
    half = torch.where((half == 0) & (c != 0), torch.copysign(tiny, c.half()), half)
    return half.float()


def init_centroids(values: torch.Tensor, k: int, init: Init, *, seed: int = 0) -> torch.Tensor:
    """``k`` starting centroids for 1-D ``values`` (sorted ascending)."""
    v = values.double().flatten()
    if v.numel() == 0:
        return torch.zeros(k, dtype=torch.float64)
    if init == "linear":
        return torch.linspace(float(v.min()), float(v.max()), k, dtype=torch.float64)
    if init == "density":
        return torch.quantile(v, torch.linspace(0, 1, k, dtype=torch.float64))
    g = torch.Generator().manual_seed(seed)
    pick = torch.randperm(v.numel(), generator=g)[:k] if v.numel() >= k else torch.randint(v.numel(), (k,), generator=g)
    return v[pick.to(v.device)].sort().values


def kmeans_1d(
    values: torch.Tensor, k: int, *, init: Init = "linear", iterations: int = 100, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means in one dimension. Returns (centroids ascending, float64; label of each value).

    Assignment is a ``bucketize`` against the midpoints of the sorted centroids (exact nearest centroid);
    an empty cluster keeps its centroid; iteration stops when no centroid moves."""
    v = values.detach().double().flatten()
    c = init_centroids(v, k, init, seed=seed).to(v.device)
    labels = torch.zeros(v.numel(), dtype=torch.long, device=v.device)
    if v.numel() == 0:
        return c, labels
    ones = torch.ones_like(v)
    for _ in range(iterations):
        c = c.sort().values
        labels = torch.bucketize(v, (c[1:] + c[:-1]) / 2)
        sums = torch.zeros_like(c).index_add_(0, labels, v)
        counts = torch.zeros_like(c).index_add_(0, labels, ones)
        new = torch.where(counts > 0, sums / counts.clamp_min(1), c)
        if torch.equal(new, c):
            break
        c = new
    order = c.argsort()
    return c[order], order.argsort()[labels]


@torch.no_grad()
def cluster_(model: nn.Module, config: ClusterConfig | None = None) -> dict[str, Clustered]:
    """Cluster every Linear/Conv weight (minus ``exclude``) in place; returns the clusterings by layer."""
    config = config or ClusterConfig()
    for pattern in config.layer_bits:
        if not any(re.search(pattern, n) for n in prunable_weights(model)):
            raise ConfigError(f"layer_bits pattern {pattern!r} matches no Linear/Conv layer of the model")
    modules = dict(model.named_modules())
    out: dict[str, Clustered] = {}
    for name, weight in prunable_weights(model, config.exclude).items():
        mask = weight != 0
        cents, labels = kmeans_1d(
            weight[mask], 2 ** config.bits_for(name), init=config.init, iterations=config.iterations, seed=config.seed
        )
        index = torch.full(weight.shape, -1, dtype=torch.long, device=weight.device)
        index[mask] = labels
        out[name] = Clustered(_round(cents, config.dtype).to(weight.device), index, config.dtype)
        weight.copy_(out[name].dense().to(weight.dtype))
        bias = getattr(modules[name], "bias", None)
        if config.dtype == "float16" and isinstance(bias, torch.Tensor):
            bias.copy_(bias.half().float())
    return out


def clusters_from_weights(model: nn.Module, exclude: tuple[str, ...] = ()) -> dict[str, Clustered]:
    """The clusterings implied by a model's weights: every Linear/Conv layer with at most 2**8 distinct
    non-zero values (e.g. a clustered model saved and loaded again)."""
    out: dict[str, Clustered] = {}
    for name, weight in prunable_weights(model, exclude).items():
        w = weight.detach()
        mask = w != 0
        cents = torch.unique(w[mask])
        if cents.numel() > 2**MAX_BITS:
            continue
        index = torch.full(w.shape, -1, dtype=torch.long, device=w.device)
        index[mask] = torch.searchsorted(cents, w[mask])
        half = bool(torch.equal(cents.half().float(), cents.float()))
        out[name] = Clustered(cents.float(), index, "float16" if half else "float32")
    return out


class CentroidFineTune(Callback):
    """Fine-tune the shared centroids (Han et al. 2016, §3.1): each member of a cluster gets the sum of the
    cluster's gradients (``reduce="mean"``: their mean), pruned weights get none, and after every step the
    members are set to their common mean. ``clusters`` default to those read from the model's weights."""

    def __init__(self, clusters: dict[str, Clustered] | None = None, *, reduce: Literal["sum", "mean"] = "sum") -> None:
        if reduce not in ("sum", "mean"):
            raise ConfigError(f"reduce must be 'sum' or 'mean', got {reduce!r}")
        self.clusters = clusters
        self.reduce = reduce
        self._layers: list[
            tuple[torch.Tensor, torch.Tensor | None, Clustered, torch.Tensor, torch.Tensor, torch.Tensor]
        ] = []

    def on_fit_start(self, state: LoopState) -> None:
        if self.clusters is None:
            self.clusters = clusters_from_weights(state.model)
        modules = dict(state.model.named_modules())
        self._layers = []
        for name, cl in self.clusters.items():
            if name not in modules:
                raise ConfigError(f"clustered layer '{name}' is not in the model being trained")
            weight, bias = modules[name].weight, getattr(modules[name], "bias", None)
            assert isinstance(weight, torch.Tensor)
            flat = cl.index.to(weight.device).flatten()
            pos = torch.nonzero(flat >= 0).flatten()
            labels = flat[pos]
            counts = torch.bincount(labels, minlength=cl.centroids.numel()).to(torch.float64)
            self._layers.append((weight, bias if isinstance(bias, torch.Tensor) else None, cl, pos, labels, counts))

    @torch.no_grad()
    def on_after_backward(self, state: LoopState) -> None:
        for weight, _, cl, pos, labels, counts in self._layers:
            grad = weight.grad
            if grad is None:
                continue
            g = grad.flatten()
            per = torch.zeros(cl.centroids.numel(), dtype=torch.float64, device=g.device)
            per.index_add_(0, labels, g[pos].double())
            if self.reduce == "mean":
                per /= counts.clamp_min(1)
            new = torch.zeros_like(g)
            new[pos] = per[labels].to(g.dtype)
            grad.copy_(new.view_as(grad))

    @torch.no_grad()
    def on_step_end(self, state: LoopState) -> None:
        for weight, _, cl, pos, labels, counts in self._layers:
            w = weight.flatten()
            sums = torch.zeros(cl.centroids.numel(), dtype=torch.float64, device=w.device)
            sums.index_add_(0, labels, w[pos].double())
            cents = torch.where(counts > 0, sums / counts.clamp_min(1), cl.centroids.double().to(w.device))
            self._snap(weight, cl, pos, labels, cents.float())

    @torch.no_grad()
    def on_fit_end(self, state: LoopState) -> None:
        """``fit`` may have restored the best epoch: read the centroids back from one member of each
        cluster (all members are equal), round them to the storage precision and snap."""
        for weight, bias, cl, pos, labels, _ in self._layers:
            w = weight.flatten()
            first = torch.full((cl.centroids.numel(),), -1, dtype=torch.long, device=w.device)
            first.scatter_(0, labels.flip(0), pos.flip(0))  # any member will do; all are equal
            cents = torch.where(first >= 0, w[first.clamp_min(0)], cl.centroids.to(w.device))
            self._snap(weight, cl, pos, labels, _round(cents, cl.dtype))
            if cl.dtype == "float16" and bias is not None:
                bias.copy_(bias.half().float())

    @staticmethod
    def _snap(
        weight: torch.Tensor, cl: Clustered, pos: torch.Tensor, labels: torch.Tensor, cents: torch.Tensor
    ) -> None:
        cl.centroids = cents.to(cl.centroids.device)
        flat = torch.zeros(weight.numel(), dtype=weight.dtype, device=weight.device)
        flat[pos] = cents[labels].to(weight.dtype)
        weight.copy_(flat.view_as(weight))
