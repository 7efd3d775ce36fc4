"""Parameter counts and sparsity.

Besides ordinary parameters this also counts the packed weights of ``torch.ao`` quantized
modules (whose ``weight``/``bias`` are methods, not parameters), so a quantized model reports
the same parameter count as its float source.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn


def _named_tensors(model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """Every parameter once, plus quantized modules' packed weight and bias."""
    seen: set[int] = set()
    for name, param in model.named_parameters():
        seen.add(id(param))
        yield name, param
    for mod_name, module in model.named_modules():
        if not callable(getattr(module, "weight", None)) or isinstance(module.weight, torch.Tensor):
            continue
        prefix = f"{mod_name}." if mod_name else ""
        for attr in ("weight", "bias"):
            getter = getattr(module, attr, None)
            try:
                value = getter() if callable(getter) else None
            except Exception:  # a method that is not a tensor getter
                continue
            if isinstance(value, torch.Tensor) and id(value) not in seen:
                yield prefix + attr, value


def _values(t: torch.Tensor) -> torch.Tensor:
    return t.dequantize() if t.is_quantized else t.detach()


def count_params(model: nn.Module) -> int:
    """Total number of weights (zeros included)."""
    return sum(t.numel() for _, t in _named_tensors(model))


def count_nonzero(model: nn.Module) -> int:
    """Number of weights that are not exactly zero."""
    return sum(int(torch.count_nonzero(_values(t))) for _, t in _named_tensors(model))


def sparsity(model: nn.Module, *, matrices_only: bool = True) -> float:
    """Fraction of zero weights.

    With ``matrices_only`` (default) only tensors with ``ndim >= 2`` count: the weights of
    Linear/Conv layers and attention projections, which is what pruning targets. With
    ``matrices_only=False`` every parameter (biases, norms, embeddings...) counts.
    """
    total = zeros = 0
    for _, t in _named_tensors(model):
        if matrices_only and t.dim() < 2:
            continue
        total += t.numel()
        zeros += t.numel() - int(torch.count_nonzero(_values(t)))
    return zeros / total if total else 0.0


def layer_weights(model: nn.Module) -> dict[str, int]:
    """Number of entries of every weight tensor with ``ndim >= 2``, keyed as in ``layer_sparsity``."""
    return {name: t.numel() for name, t in _named_tensors(model) if t.dim() >= 2 and t.numel()}


def layer_sparsity(model: nn.Module) -> dict[str, float]:
    """Fraction of zeros of every weight tensor with ``ndim >= 2``, keyed by parameter name."""
    return {
        name: 1.0 - int(torch.count_nonzero(_values(t))) / t.numel()
        for name, t in _named_tensors(model)
        if t.dim() >= 2 and t.numel()
    }
