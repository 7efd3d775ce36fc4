"""Wall-clock latency and peak-memory measurement of any callable."""

from __future__ import annotations

import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any, Literal, NamedTuple

import torch

from slimtune.errors import ConfigError


def _percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default), ``q`` in [0, 100]."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def measure_latency(
    run: Callable[[Any], Any],
    make_batch: Callable[[int], Any],
    *,
    batch_sizes: Iterable[int] = (1, 32),
    warmup: int = 5,
    repeats: int = 20,
    budget_s: float | None = None,
    min_repeats: int = 3,
) -> dict[str, Any]:
    """Time ``run(make_batch(n))`` for each batch size ``n``.

    Returns ``{"batch{n}": median_ms, ..., "p90": {"batch{n}": ms}, "throughput": {"batch{n}": items_per_s},
    "spread": {"batch{n}": (p90 - p10) / median}, "rounds": {"batch{n}": timed calls}, "threads":
    torch.get_num_threads(), "repeats": fewest timed calls of any size}``.

    ``budget_s`` time-boxes each batch size, so a slow model costs no more to measure than a fast one:
    warm-up stops after a quarter of it (at least one call), timing after all of it once ``min_repeats``
    calls are in (at most ``repeats``). Without it every size gets exactly ``warmup`` + ``repeats`` calls.
    The batch is built once per size, outside the timed region; wrap ``run`` in ``torch.inference_mode``
    yourself when it is a torch model.
    """
    sizes = list(batch_sizes)
    if not sizes or any(int(n) < 1 for n in sizes):
        raise ConfigError(f"batch_sizes must be positive integers, got {sizes}")
    if repeats < 1 or warmup < 0 or min_repeats < 1:
        raise ConfigError(
            f"need repeats >= 1, min_repeats >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}, "
            f"min_repeats={min_repeats}"
        )
    if budget_s is not None and not budget_s > 0:
        raise ConfigError(f"budget_s must be > 0 seconds, got {budget_s}")
    result: dict[str, Any] = {"p90": {}, "throughput": {}, "spread": {}, "rounds": {}}
    for n in sizes:
        batch = make_batch(int(n))
        start = time.perf_counter()
        for _ in range(warmup):
            run(batch)
            if budget_s is not None and time.perf_counter() - start >= budget_s / 4:
                break
        times_ms: list[float] = []
        start = time.perf_counter()
        while len(times_ms) < repeats:
            t0 = time.perf_counter()
            run(batch)
            times_ms.append((time.perf_counter() - t0) * 1000.0)
            enough = len(times_ms) >= min(min_repeats, repeats)
            if budget_s is not None and enough and time.perf_counter() - start >= budget_s:
                break
        key = f"batch{int(n)}"
        median = statistics.median(times_ms)
        result[key] = median
        result["p90"][key] = _percentile(times_ms, 90)
        result["spread"][key] = (result["p90"][key] - _percentile(times_ms, 10)) / median if median > 0 else 0.0
        result["rounds"][key] = len(times_ms)
        result["throughput"][key] = int(n) * 1000.0 / median if median > 0 else float("inf")
    result["threads"] = torch.get_num_threads()
    result["repeats"] = min(result["rounds"].values())
    return result


class PeakMemory(NamedTuple):
    """Peak resident memory of the process while ``run`` ran, and how it was measured.

    ``method`` is ``"vmhwm"`` when the peak was reset through ``/proc/self/clear_refs`` first
    (accurate for this call) or ``"ru_maxrss"`` when it could not be reset (the process's
    lifetime peak, an upper bound). ``float(peak)`` gives the MiB value.
    """

    mib: float
    method: Literal["vmhwm", "ru_maxrss"]

    def __float__(self) -> float:
        return self.mib


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _read_vmhwm_mib() -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0  # value is in kB
    except OSError:
        return None
    return None


def measure_peak_memory(run: Callable[[Any], Any], batch: Any) -> PeakMemory:
    """Peak RSS in MiB of this process while calling ``run(batch)`` once (see ``PeakMemory``)."""
    if _reset_peak_rss():
        run(batch)
        peak = _read_vmhwm_mib()
        if peak is not None:
            return PeakMemory(peak, "vmhwm")
    else:
        run(batch)
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    scale = 1024.0 * 1024.0 if sys.platform == "darwin" else 1024.0  # bytes on macOS, KiB elsewhere
    return PeakMemory(maxrss / scale, "ru_maxrss")
