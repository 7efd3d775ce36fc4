"""Benchmark an LM bundle in ONNX Runtime: prefill and decode tokens/s per batch size, time to first token.

Prompts are seeded random token ids (speed does not depend on the text); tokenization is outside the timed
region. Each measurement is the median of ``repeats`` runs after one warm-up run.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from slimtune.errors import ConfigError
from slimtune.runtime.bench import _peak_rss_mib
from slimtune.runtime.decoder import Decoder, ort_decoder_session
from slimtune.runtime.generate import read_lm_manifest


def _one_run(decoder: Decoder, ids: np.ndarray, new_tokens: int) -> tuple[float, float, float]:
    """Seconds of: the prefill, the first token (prefill + choosing it), the ``new_tokens`` decode steps."""
    b, n = ids.shape
    mask = np.ones((b, n), dtype=np.int64)
    positions = np.tile(np.arange(n, dtype=np.int64), (b, 1))
    t0 = time.perf_counter()
    logits, past = decoder.step(ids, mask, positions, decoder.empty_past(b))
    prefill = time.perf_counter() - t0
    tokens = logits[:, -1].argmax(-1)[:, None]
    first = time.perf_counter() - t0
    t1 = time.perf_counter()
    for j in range(new_tokens):
        mask = np.ones((b, n + j + 1), dtype=np.int64)
        logits, past = decoder.step(tokens, mask, np.full((b, 1), n + j, dtype=np.int64), past)
        tokens = logits[:, -1].argmax(-1)[:, None]
    return prefill, first, time.perf_counter() - t1


def lm_bench(
    bundle: str | Path,
    *,
    batch_sizes: Iterable[int] = (1, 8),
    prompt_tokens: int = 64,
    new_tokens: int = 32,
    threads: int | None = None,
    repeats: int = 3,
) -> dict[str, Any]:
    """Prefill and decode tokens/s at each batch size and time to first token (batch 1 row) of an LM bundle."""
    sizes = [int(b) for b in batch_sizes]
    if not sizes or min(sizes) < 1:
        raise ConfigError(f"batch sizes must be positive integers, got {sizes}")
    if prompt_tokens < 1 or new_tokens < 1 or repeats < 1:
        raise ConfigError(
            f"need prompt_tokens, new_tokens and repeats >= 1, got {prompt_tokens}, {new_tokens}, {repeats}"
        )
    manifest = read_lm_manifest(bundle)
    context = int(manifest.raw["input"]["context_length"])
    if prompt_tokens + new_tokens > context:
        raise ConfigError(f"prompt_tokens + new_tokens must fit the context of {context} tokens")
    start = time.perf_counter()
    decoder = Decoder(ort_decoder_session(manifest.file("model"), threads=threads))
    load_ms = (time.perf_counter() - start) * 1000
    vocab = int(manifest.raw["input"]["vocab_size"])
    rng = np.random.default_rng(0)
    rows = []
    for b in sizes:
        ids = rng.integers(0, vocab, size=(b, prompt_tokens), dtype=np.int64)
        _one_run(decoder, ids, min(new_tokens, 2))  # warm-up: allocations, kernel choices
        runs = np.asarray([_one_run(decoder, ids, new_tokens) for _ in range(repeats)])
        prefill, first, decode = np.median(runs, axis=0)
        rows.append({
            "batch": b, "prompt_tokens": prompt_tokens, "new_tokens": new_tokens,
            "prefill_tokens_per_s": b * prompt_tokens / prefill, "decode_tokens_per_s": b * new_tokens / decode,
            "time_to_first_token_ms": 1000 * first, "decode_ms_per_step": 1000 * decode / new_tokens,
        })  # fmt: skip
    files = [manifest.file("model"), manifest.folder / f"{manifest.file('model').name}.data"]
    return {
        "bundle": str(bundle),
        "kind": "lm",
        "precision": str(manifest.raw.get("precision", "unknown")),
        "threads": threads or "default",
        "load_ms": load_ms,
        "model_bytes": sum(f.stat().st_size for f in files if f.is_file()),
        "peak_rss_mib": _peak_rss_mib(),
        "rows": rows,
    }


def format_lm_table(result: dict[str, Any]) -> str:
    lines = [
        f"LM bundle {result['bundle']} ({result['precision']}, {result['model_bytes'] / 2**20:.1f} MiB): load "
        f"{result['load_ms']:.0f} ms, peak RSS {result['peak_rss_mib']:.0f} MiB, threads {result['threads']}",
        "| batch | prompt | new | prefill (tokens/s) | decode (tokens/s) | ms / decode step | first token (ms) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['batch']} | {r['prompt_tokens']} | {r['new_tokens']} | {r['prefill_tokens_per_s']:.1f} | "
            f"{r['decode_tokens_per_s']:.1f} | {r['decode_ms_per_step']:.2f} | {r['time_to_first_token_ms']:.1f} |"
        )
    return "\n".join(lines)
