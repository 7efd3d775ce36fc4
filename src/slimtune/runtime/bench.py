"""Benchmark a deploy bundle in ONNX Runtime: start-up, latency percentiles, throughput, peak memory.

Preprocessing (tokenization, pixel scaling) is outside the timed region: the numbers are the model's.
"""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from slimtune.errors import ConfigError
from slimtune.runtime.predictor import Predictor


def _peak_rss_mib() -> float:
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / (1024 * 1024) if sys.platform == "darwin" else kib / 1024  # macOS reports bytes


def bench(
    bundle: str | Path,
    *,
    batch_sizes: Iterable[int] = (1, 8, 32),
    threads: Iterable[int | None] = (None,),
    seconds: float = 1.0,
    warmup: int = 3,
    min_repeats: int = 5,
) -> dict[str, Any]:
    """Time the bundle's model at each batch size and thread count for about ``seconds`` each."""
    sizes = [int(b) for b in batch_sizes]
    if not sizes or min(sizes) < 1:
        raise ConfigError(f"batch sizes must be positive integers, got {sizes}")
    if seconds <= 0 or min_repeats < 1:
        raise ConfigError(f"need seconds > 0 and min_repeats >= 1, got {seconds}, {min_repeats}")
    rows = []
    startup_ms = None
    for t in threads:
        if t is not None and int(t) < 1:
            raise ConfigError(f"threads must be positive, got {t}")
        start = time.perf_counter()
        predictor = Predictor(bundle, threads=t)
        load_ms = (time.perf_counter() - start) * 1000
        startup_ms = load_ms if startup_ms is None else startup_ms
        for b in sizes:
            x = predictor.preprocess(predictor.example_inputs(b))
            feed = {predictor.input_name: x}
            for _ in range(warmup):
                predictor.session.run(None, feed)
            times: list[float] = []
            deadline = time.perf_counter() + seconds
            while len(times) < min_repeats or time.perf_counter() < deadline:
                t0 = time.perf_counter()
                predictor.session.run(None, feed)
                times.append((time.perf_counter() - t0) * 1000)
            ms = np.asarray(times)
            p50 = float(np.percentile(ms, 50))
            rows.append({
                "threads": t or "default", "batch": b, "repeats": len(times), "p50_ms": p50,
                "p90_ms": float(np.percentile(ms, 90)), "p99_ms": float(np.percentile(ms, 99)),
                "throughput_per_s": b * 1000.0 / p50 if p50 > 0 else float("inf"), "load_ms": load_ms,
            })  # fmt: skip
    return {
        "bundle": str(bundle),
        "precision": _precision(bundle),
        "startup_ms": startup_ms,
        "peak_rss_mib": _peak_rss_mib(),
        "rows": rows,
    }


def _precision(bundle: str | Path) -> str:
    from slimtune.runtime.bundle import read_manifest

    return str(read_manifest(bundle).raw.get("precision", "unknown"))


def format_table(result: dict[str, Any]) -> str:
    lines = [
        f"bundle {result['bundle']} ({result['precision']}): start-up {result['startup_ms']:.0f} ms, "
        f"peak RSS {result['peak_rss_mib']:.0f} MiB",
        "| threads | batch | p50 (ms) | p90 (ms) | p99 (ms) | throughput (/s) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['threads']} | {r['batch']} | {r['p50_ms']:.3f} | {r['p90_ms']:.3f} | {r['p99_ms']:.3f} | "
            f"{r['throughput_per_s']:.1f} |"
        )
    return "\n".join(lines)
