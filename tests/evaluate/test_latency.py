from __future__ import annotations

import pytest
import torch
from torch import nn

from slimtune.errors import ConfigError
from slimtune.evaluate import PeakMemory, measure_latency, measure_peak_memory


def _runner() -> tuple[nn.Module, object]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3)).eval()

    def run(batch: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return model(batch)

    return model, run


def test_latency_keys_and_positive_values() -> None:
    _, run = _runner()
    sizes_seen: list[int] = []

    def make_batch(n: int) -> torch.Tensor:
        sizes_seen.append(n)
        return torch.randn(n, 8)

    result = measure_latency(run, make_batch, batch_sizes=(1, 4), warmup=1, repeats=3)
    assert sizes_seen == [1, 4]
    assert set(result) == {"batch1", "batch4", "p90", "throughput", "spread", "rounds", "threads", "repeats"}
    assert result["batch1"] > 0 and result["batch4"] > 0
    assert set(result["p90"]) == set(result["throughput"]) == {"batch1", "batch4"}
    assert result["p90"]["batch4"] >= result["batch4"]
    assert result["throughput"]["batch4"] == pytest.approx(4 * 1000 / result["batch4"])
    assert result["threads"] == torch.get_num_threads()
    assert result["repeats"] == 3


def test_latency_default_batch_sizes_and_call_count() -> None:
    calls: list[int] = []
    result = measure_latency(lambda b: calls.append(b), lambda n: n, warmup=2, repeats=3)
    assert "batch1" in result and "batch32" in result
    assert calls == [1] * 5 + [32] * 5


@pytest.mark.parametrize("kwargs", [{"repeats": 0}, {"warmup": -1}, {"batch_sizes": (0,)}, {"batch_sizes": ()}])
def test_latency_rejects_bad_settings(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        measure_latency(lambda b: b, lambda n: n, **kwargs)


def test_peak_memory_positive_and_sees_allocation() -> None:
    _, run = _runner()
    peak = measure_peak_memory(run, torch.randn(2, 8))
    assert isinstance(peak, PeakMemory)
    assert peak.method in ("vmhwm", "ru_maxrss")
    assert peak.mib > 0 and float(peak) == peak.mib
    mib, method = peak  # unpacks like a tuple
    assert (mib, method) == (peak.mib, peak.method)

    def allocate(n: int) -> int:
        block = bytearray(n)  # touches n bytes of fresh memory
        return len(block)

    big = measure_peak_memory(allocate, 64 * 1024 * 1024)
    assert big.mib >= 64
