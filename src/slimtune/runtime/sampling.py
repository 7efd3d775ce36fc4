"""Choosing the next token from logits with numpy: greedy, or temperature / top-k / top-p sampling (seeded)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from slimtune.config import Config, check


@dataclass(frozen=True, kw_only=True)
class Sampling(Config):
    """How to pick each token. ``temperature=0`` is greedy (argmax); otherwise logits are divided by the
    temperature, cut to the ``top_k`` largest (0 = all) and to the smallest set whose probability reaches
    ``top_p`` (1.0 = all), and one token is drawn with a generator seeded by ``seed``."""

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        check(self.temperature >= 0, f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        check(self.top_k >= 0, f"top_k must be >= 0 (0 = no cut), got {self.top_k}")
        check(0 < self.top_p <= 1, f"top_p must be in (0, 1], got {self.top_p}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def rng(self) -> np.random.Generator:
        return np.random.default_rng(self.seed)


def filtered_probs(logits: np.ndarray, sampling: Sampling) -> np.ndarray:
    """Probabilities [b, vocab] after temperature, top-k and top-p (rows sum to 1; cut tokens are 0)."""
    z = logits.astype(np.float64) / sampling.temperature
    vocab = z.shape[-1]
    if 0 < sampling.top_k < vocab:
        kth = np.partition(z, vocab - sampling.top_k, axis=-1)[:, vocab - sampling.top_k][:, None]
        z = np.where(z >= kth, z, -np.inf)
    z = z - z.max(axis=-1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=-1, keepdims=True)
    if sampling.top_p < 1.0:
        order = np.argsort(-p, axis=-1, kind="stable")
        sorted_p = np.take_along_axis(p, order, axis=-1)
        before = np.cumsum(sorted_p, axis=-1) - sorted_p  # mass of the tokens ranked above each one
        keep_sorted = before < sampling.top_p  # keeps the top token always
        keep = np.zeros_like(keep_sorted)
        np.put_along_axis(keep, order, keep_sorted, axis=-1)
        p = np.where(keep, p, 0.0)
        p /= p.sum(axis=-1, keepdims=True)
    return p


def next_tokens(logits: np.ndarray, sampling: Sampling, rng: np.random.Generator) -> np.ndarray:
    """One token id per row of ``logits`` [b, vocab]."""
    if sampling.greedy:
        return np.asarray(logits.argmax(axis=-1), dtype=np.int64)
    p = filtered_probs(logits, sampling)
    u = rng.random(len(p))[:, None]
    picked = (np.cumsum(p, axis=-1) < u).sum(axis=-1)  # inverse CDF: first index whose cumulative mass >= u
    return np.minimum(picked, p.shape[-1] - 1).astype(np.int64)
