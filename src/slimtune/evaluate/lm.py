"""Measure a causal LM: perplexity, next-token agreement with a reference, and PyTorch generation speed.

* ``perplexity(model, data)``: exp of the token-weighted mean negative log-likelihood. ``data`` is a
  token stream (1-D ids: scored by sliding windows of ``window`` tokens moved by ``stride``; every token
  after the first is scored exactly once, with up to ``window - 1`` tokens of context), or LM windows (a
  ``Split`` from ``slimtune.data.load_text``, or 2-D ids): position t predicts label t+1, -100 skipped.
* ``token_agreement(model, reference, data)``: the fraction of scored positions where both models'
  top-1 next token is the same.
* ``generation_speed(model)``: prefill tokens/s, decode tokens/s (greedy, KV cache) at each batch size,
  time to first token, and peak RSS; ``disk_bytes(model)``: the size of its saved folder.
"""

from __future__ import annotations

import inspect
import math
import statistics
import tempfile
import time
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from slimtune.data.core import Split
from slimtune.errors import ConfigError, DataError

IGNORE = -100


def _logits(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    out = model(input_ids=ids)
    logits = out.logits if hasattr(out, "logits") else out
    return logits.float()


def _windows(data: Split | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(data, Split):
        if not isinstance(data.x, torch.Tensor):
            raise DataError("LM measurement needs token-id windows (x int64 [N, T]); build them with data.load_text")
        return data.x, data.y
    return data, data


def _batches(x: torch.Tensor, y: torch.Tensor, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1; got {batch_size}")
    for i in range(0, len(x), batch_size):
        yield x[i : i + batch_size], y[i : i + batch_size]


def _stream_windows(ids: torch.Tensor, window: int, stride: int) -> Iterator[tuple[torch.Tensor, int]]:
    """(window ids, number of leading positions already scored) over a 1-D stream."""
    prev_end = 0
    for begin in range(0, len(ids) - 1, stride):
        end = min(begin + window, len(ids))
        yield ids[begin:end], max(prev_end - begin, 1) - 1  # labels before this index were scored earlier
        prev_end = end
        if end == len(ids):
            break


def perplexity(
    model: nn.Module,
    data: Split | torch.Tensor | Sequence[int],
    *,
    window: int = 512,
    stride: int | None = None,
    batch_size: int = 4,
    max_tokens: int | None = None,
) -> dict[str, float]:
    """``{"perplexity", "nll", "tokens"}``: token-weighted NLL over windows (see the module docstring)."""
    nll, count = 0.0, 0
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            if isinstance(data, Split) or (isinstance(data, torch.Tensor) and data.dim() == 2):
                x, y = _windows(data)
                for bx, by in _batches(x, y, batch_size):
                    logits = _logits(model, bx)[:, :-1]
                    labels = by[:, 1:]
                    nll += float(F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="sum"))
                    count += int((labels != IGNORE).sum())
            else:
                ids = torch.as_tensor(list(data) if not isinstance(data, torch.Tensor) else data, dtype=torch.long)
                if max_tokens is not None:
                    ids = ids[:max_tokens]
                stride = window if stride is None else stride
                if window < 2 or not 1 <= stride <= window:
                    raise ConfigError(
                        f"need window >= 2 and 1 <= stride <= window; got window={window}, stride={stride}"
                    )
                for chunk, skip in _stream_windows(ids, window, stride):
                    logp = torch.log_softmax(_logits(model, chunk[None])[0, :-1], dim=-1)
                    targets = chunk[1:]
                    picked = logp.gather(1, targets[:, None])[:, 0][skip:]
                    nll -= float(picked.sum())
                    count += int(picked.numel())
    finally:
        model.train(was_training)
    if count == 0:
        raise DataError("no tokens to score: the data has no labelled positions after the first of each window")
    mean = nll / count
    return {"perplexity": math.exp(mean), "nll": mean, "tokens": count}


def token_agreement(
    model: nn.Module, reference: nn.Module, data: Split | torch.Tensor, *, batch_size: int = 4
) -> float:
    """Fraction of scored positions where ``model`` and ``reference`` predict the same next token."""
    x, y = _windows(data)
    same = total = 0
    states = (model.training, reference.training)
    model.eval()
    reference.eval()
    try:
        with torch.inference_mode():
            for bx, by in _batches(x, y, batch_size):
                keep = by[:, 1:] != IGNORE
                a = _logits(model, bx)[:, :-1].argmax(-1)
                b = _logits(reference, bx)[:, :-1].argmax(-1)
                same += int(((a == b) & keep).sum())
                total += int(keep.sum())
    finally:
        model.train(states[0])
        reference.train(states[1])
    if total == 0:
        raise DataError("no positions to compare: every label is masked")
    return same / total


def _cache_kwarg(model: nn.Module) -> str:
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def greedy_decode(model: nn.Module, prompt: torch.Tensor, new_tokens: int) -> tuple[torch.Tensor, float, float]:
    """Greedy generation with the KV cache: (tokens [B, new_tokens], seconds to the first token, decode seconds)."""
    key = _cache_kwarg(model)
    start = time.perf_counter()
    out = model(input_ids=prompt, use_cache=True)
    token = out.logits[:, -1].argmax(-1, keepdim=True)
    first = time.perf_counter() - start
    cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
    tokens = [token]
    start = time.perf_counter()
    for _ in range(new_tokens - 1):
        out = model(input_ids=token, use_cache=True, **{key: cache})
        cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
        token = out.logits[:, -1].argmax(-1, keepdim=True)
        tokens.append(token)
    return torch.cat(tokens, dim=1), first, time.perf_counter() - start


def generation_speed(
    model: nn.Module,
    *,
    prompt_tokens: int = 64,
    new_tokens: int = 32,
    batch_sizes: Sequence[int] = (1, 8),
    repeats: int = 3,
    warmup: int = 1,
    seed: int = 0,
) -> dict[str, Any]:
    """PyTorch eager speed: prefill tokens/s, decode tokens/s, time to first token (ms) per batch size
    (medians of ``repeats``; random prompts), and the peak RSS (MiB) of a batch-1 generation."""
    from slimtune.evaluate.latency import measure_peak_memory

    if prompt_tokens < 1 or new_tokens < 2 or repeats < 1 or warmup < 0:
        raise ConfigError("need prompt_tokens >= 1, new_tokens >= 2, repeats >= 1 and warmup >= 0")
    config: Any = model.config
    vocab = int(config.vocab_size)
    g = torch.Generator().manual_seed(seed)
    result: dict[str, Any] = {"prefill_tokens_per_s": {}, "decode_tokens_per_s": {}, "ttft_ms": {}}
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for b in batch_sizes:
                prompt = torch.randint(0, vocab, (int(b), prompt_tokens), generator=g)
                runs = [greedy_decode(model, prompt, new_tokens) for _ in range(warmup + repeats)][warmup:]
                first = statistics.median(r[1] for r in runs)
                decode = statistics.median(r[2] for r in runs)
                key = f"batch{int(b)}"
                result["prefill_tokens_per_s"][key] = int(b) * prompt_tokens / first
                result["decode_tokens_per_s"][key] = int(b) * (new_tokens - 1) / decode
                result["ttft_ms"][key] = first * 1000.0
            one = torch.randint(0, vocab, (1, prompt_tokens), generator=g)
            peak = measure_peak_memory(lambda p: greedy_decode(model, p, new_tokens), one)
    finally:
        model.train(was_training)
    result.update(
        peak_rss_mib=peak.mib,
        peak_rss_method=peak.method,
        prompt_tokens=prompt_tokens,
        new_tokens=new_tokens,
        threads=torch.get_num_threads(),
    )
    return result


def disk_bytes(model: nn.Module) -> int:
    """Bytes of the model saved by ``slimtune.models.save_model`` (spec + safetensors, sparse-encoded)."""
    from slimtune._io import path_bytes
    from slimtune.models.serialization import save_model

    with tempfile.TemporaryDirectory(prefix="slimtune-size-") as tmp:
        save_model(model, tmp)
        return path_bytes(tmp)
