"""Causal language modelling on the one loop: the task (next-token cross-entropy) and its validation.

Data: a ``DataSplits`` with ``kind == "lm"`` whose splits hold ``x`` = int64 (N, T) token ids and ``y`` =
int64 (N, T) labels aligned with ``x`` (Hugging Face's convention: usually ``y == x``), ``-100`` where a
position is not to be predicted (padding, chat prompts). The logits at position ``t`` are scored
against ``y[:, t + 1]``: the shift happens here, not in the data. Every mean is over the predicted
(non-masked) tokens, so windows with many masked positions weigh less, as they should.

Models: anything whose forward takes ``x`` and returns logits (N, T, V) or an object with ``.logits``
(Hugging Face ``CausalLMOutput``); Hugging Face models are called with ``use_cache=False`` so training
keeps no KV cache.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from slimtune.data.core import DataSplits, Split
from slimtune.errors import DataError, UnsupportedModelError

IGNORE_INDEX = -100
LM_KIND = "lm"


def is_lm_data(data: DataSplits) -> bool:
    return str(data.kind) == LM_KIND


def logits_of(output: Any) -> torch.Tensor:
    """The logits in a model's output: the tensor itself, ``output.logits`` or ``output["logits"]``."""
    if isinstance(output, torch.Tensor):
        return output
    logits = getattr(output, "logits", None)
    if logits is None and isinstance(output, dict):
        logits = output.get("logits")
    if not isinstance(logits, torch.Tensor):
        raise UnsupportedModelError(
            f"the model returned {type(output).__name__} without logits; return a tensor or an object with .logits"
        )
    return logits


def _unwrapped(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def lm_forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Logits (N, T, V) of a causal LM for token ids ``x`` (no KV cache kept for Hugging Face models;
    a distillation wrapper passes that on to its ``student``)."""
    inner = _unwrapped(model)
    hf = getattr(inner, "student", inner)
    kwargs = {"use_cache": False} if hasattr(getattr(hf, "config", None), "use_cache") else {}
    logits = logits_of(model(x, **kwargs))
    if logits.ndim != 3 or logits.shape[:2] != x.shape[:2]:
        raise UnsupportedModelError(
            f"a causal LM must return logits (batch, tokens, vocab) for input {tuple(x.shape)}, "
            f"got {tuple(logits.shape)}; is this a classifier?"
        )
    return logits


def shift(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits at positions 0..T-2 flattened to (M, V), their targets labels[:, 1:] flattened to (M,))."""
    return logits[:, :-1, :].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1)


def predicted_tokens(labels: torch.Tensor) -> int:
    """How many positions of ``labels`` (N, T) are predicted: targets of the shifted loss that are not -100."""
    return int((labels[:, 1:] != IGNORE_INDEX).sum())


def lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over the non-masked targets (0 when every target is masked)."""
    flat_logits, targets = shift(logits, labels)
    if not bool((targets != IGNORE_INDEX).any()):
        return flat_logits.sum() * 0.0
    return F.cross_entropy(flat_logits.float(), targets, ignore_index=IGNORE_INDEX)


@dataclass
class CausalLMTask:
    """Next-token cross-entropy on shifted labels; the loop's default task for ``kind == "lm"`` data."""

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = lm_forward(model, x)
        return lm_loss(logits, y), logits

    def weight(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """What the loss averages over (predicted tokens): the loop weighs micro-batches by it."""
        return float(predicted_tokens(y))


@torch.no_grad()
def evaluate_lm(model: nn.Module, split: Split, *, batch_size: int = 16) -> dict[str, float]:
    """Token-weighted mean NLL, perplexity = exp(NLL) and next-token top-1 accuracy on ``split``,
    in eval mode (the mode is restored); NaN when no token is predicted."""
    x, y = split.x, split.y
    if not isinstance(x, torch.Tensor) or x.ndim != 2 or y.shape != x.shape:
        raise DataError("LM data needs x and y as int64 (windows, tokens) tensors of one shape; pack the corpus first")
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    was_training = model.training
    model.eval()
    nll, correct, count = 0.0, 0, 0
    try:
        for i in range(0, len(x), batch_size):
            xb, yb = x[i : i + batch_size].to(device), y[i : i + batch_size].to(device)
            logits, targets = shift(lm_forward(model, xb), yb)
            keep = targets != IGNORE_INDEX
            if not bool(keep.any()):
                continue
            nll += float(F.cross_entropy(logits[keep].float(), targets[keep], reduction="sum"))
            correct += int((logits[keep].argmax(-1) == targets[keep]).sum())
            count += int(keep.sum())
    finally:
        model.train(was_training)
    if count == 0:
        return {"loss": math.nan, "perplexity": math.nan, "accuracy": math.nan, "tokens": 0.0}
    mean = nll / count
    return {"loss": mean, "perplexity": math.exp(min(mean, 700.0)), "accuracy": correct / count, "tokens": float(count)}


def lm_validation(model: nn.Module, split: Split) -> dict[str, float]:
    """The loop's validation row for LM data: ``val_loss`` (mean NLL, what early stopping watches),
    ``val_perplexity`` and ``val_accuracy`` (next-token top-1)."""
    m = evaluate_lm(model, split)
    return {"val_loss": m["loss"], "val_perplexity": m["perplexity"], "val_accuracy": m["accuracy"]}
