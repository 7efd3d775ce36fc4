"""How many CPU threads training and measuring use, and a default that does not collapse under contention.

torch's intra-op pool defaults to one thread per core. When anything else uses a core, every parallel
region waits at its barrier for the thread that was descheduled: on a 2-core machine the demo took 238 s
with torch's 2 threads against 37 s with 1 while another process loaded a core (same accuracies). The
``auto`` default therefore leaves half of the cores free and counts the cores that are already busy
(1-minute load average): 1 thread on 2 cores, 4 on an idle 8-core machine, fewer on a loaded one.
``OMP_NUM_THREADS`` in the environment (``torchrun`` sets it) is taken as the user's choice.
"""

from __future__ import annotations

import math
import os
from typing import Any

from slimtune.errors import ConfigError

AUTO = "auto"
_applied: dict[str, Any] | None = None


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity), not the machine's total."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def load_average() -> float | None:
    """The 1-minute load average, or None where the OS has none."""
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):
        return None


def auto_threads(*, cores: int | None = None, load: float | None = None) -> int:
    """Half of the cores, minus the cores other processes keep busy; at least 1."""
    cores = available_cores() if cores is None else cores
    busy = 0 if load is None else math.floor(load + 0.5)
    return max(1, min(cores // 2, cores - busy))


def parse_threads(value: Any, *, flag: str = "--threads") -> int | str:
    """``'auto'`` or a whole number >= 1 (from the CLI or the API); anything else is a ConfigError."""
    if isinstance(value, str) and value.strip().lower() == AUTO:
        return AUTO
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        number = int(value)
    if number is None or number < 1:
        raise ConfigError(f"{flag} must be a whole number >= 1 or 'auto', got {value!r}; e.g. {flag} 1")
    return number


def thread_count(value: Any, *, flag: str = "--threads") -> int:
    """A thread count for ONNX Runtime sessions (``predict``/``bench``): a number, or ``auto`` resolved as
    training resolves it (``auto_threads``)."""
    parsed = parse_threads(value, flag=flag)
    return auto_threads() if parsed == AUTO else int(parsed)


def set_threads(threads: int | str = AUTO) -> dict[str, Any]:
    """Set torch's intra-op threads (ONNX Runtime sessions made for measuring follow them) and return the
    setting as the report records it: ``{"threads": n, "requested": ..., "cores": ..., "load_average": ...}``."""
    global _applied
    import torch

    requested = parse_threads(threads, flag="threads")
    cores, load = available_cores(), load_average()
    env_omp = os.environ.get("OMP_NUM_THREADS", "").strip()
    if requested == AUTO and env_omp.isdigit() and int(env_omp) >= 1:
        n, source = int(env_omp), f"OMP_NUM_THREADS={env_omp}"
    elif requested == AUTO:
        n, source = auto_threads(cores=cores, load=load), "auto: half the free cores"
    else:
        n, source = int(requested), "--threads"
    torch.set_num_threads(n)
    _applied = {
        "threads": n,
        "requested": source,
        "cores": cores,
        "load_average": None if load is None else round(load, 2),
    }
    return dict(_applied)


def current() -> dict[str, Any]:
    """The setting in force: what ``set_threads`` applied, else torch's own default."""
    if _applied is not None:
        return dict(_applied)
    import torch

    return {"threads": torch.get_num_threads(), "requested": "torch default (one per core)", "cores": available_cores()}


__all__ = ["AUTO", "auto_threads", "available_cores", "current", "load_average", "parse_threads", "set_threads"]
