"""One report row per stage: quality, size, compute and measured speed of the stage's artefact."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from slimtune._io import path_bytes
from slimtune.data.core import DataSplits
from slimtune.evaluate.latency import measure_latency, measure_peak_memory
from slimtune.evaluate.macs import count_macs
from slimtune.evaluate.metrics import classification_metrics
from slimtune.evaluate.report import StageRow
from slimtune.evaluate.size import count_nonzero, count_params, sparsity
from slimtune.export.onnx import ort_predict, ort_session
from slimtune.quantize.precision import layer_modules, onnx_precision, torch_precision
from slimtune.train.loop import predict

BATCHES = (1, 32)


def _batch_maker(x: torch.Tensor) -> Callable[[int], torch.Tensor]:
    def make(n: int) -> torch.Tensor:
        reps = -(-n // len(x))
        return torch.cat([x] * reps)[:n] if reps > 1 else x[:n]

    return make


def _metrics(logits: np.ndarray, data: DataSplits) -> dict[str, Any]:
    return classification_metrics(data.test.y.numpy(), logits.argmax(1), num_classes=data.num_classes)


def _repeats(run: Callable[[Any], Any], batch: Any, *, budget_s: float = 0.3) -> int:
    """Enough repeats for a stable median: about ``budget_s`` of timed calls, at least 20, at most 1000."""
    for _ in range(10):  # warm-up: lazy initialisation, allocator, thread pools
        run(batch)
    start = time.perf_counter()
    run(batch)
    once = max(time.perf_counter() - start, 1e-6)
    return int(min(1000, max(20, budget_s / once)))


def _speed(run: Callable[[Any], Any], make: Callable[[int], Any]) -> tuple[dict[str, Any], float]:
    repeats = _repeats(run, make(1))
    lat = measure_latency(run, make, batch_sizes=BATCHES, warmup=10, repeats=repeats)
    peak = measure_peak_memory(run, make(BATCHES[-1]))
    return lat, float(peak.mib)


def _common(model: nn.Module, x: torch.Tensor) -> dict[str, Any]:
    return {
        "params": count_params(model),
        "nonzero_params": count_nonzero(model),
        "macs": count_macs(model, x[:1]),
        "sparsity": sparsity(model),
    }


def measure_torch(name: str, model: nn.Module, data: DataSplits, *, artifact: Path) -> StageRow:
    assert isinstance(data.test.x, torch.Tensor)
    x = data.test.x
    model.eval()
    make = _batch_maker(x)

    def run(batch: torch.Tensor) -> Any:
        with torch.inference_mode():
            return model(batch)

    lat, peak = _speed(run, make)
    c = _common(model, x)
    return StageRow(
        name=name,
        artifact=str(artifact),
        metrics=_metrics(predict(model, x).numpy(), data),
        params=c["params"],
        nonzero_params=c["nonzero_params"],
        bytes_on_disk=path_bytes(artifact),
        macs=c["macs"],
        latency_ms={k: lat[k] for k in ("batch1", "batch32")},
        throughput=lat["throughput"],
        peak_memory_mb=peak,
        extra={"runtime": "torch", "threads": lat["threads"], "sparsity": c["sparsity"]},
        precision=torch_precision(model),
    )


def measure_onnx(
    name: str, path: Path, source: nn.Module, data: DataSplits, *, parity: dict[str, float] | None
) -> StageRow:
    assert isinstance(data.test.x, torch.Tensor)
    x = data.test.x.numpy()
    session = ort_session(path, threads=torch.get_num_threads())  # same threads as the torch rows
    input_name = session.get_inputs()[0].name
    make = _batch_maker(data.test.x)

    def run(batch: torch.Tensor) -> Any:
        return session.run(None, {input_name: batch.numpy()})

    lat, peak = _speed(run, make)
    c = _common(source, data.test.x)
    return StageRow(
        name=name,
        artifact=str(path),
        metrics=_metrics(ort_predict(session, x), data),
        params=c["params"],
        nonzero_params=c["nonzero_params"],
        bytes_on_disk=path_bytes(path),
        macs=c["macs"],
        latency_ms={k: lat[k] for k in ("batch1", "batch32")},
        throughput=lat["throughput"],
        peak_memory_mb=peak,
        parity=parity,
        extra={"runtime": "onnxruntime", "threads": session.get_session_options().intra_op_num_threads},
        precision=onnx_precision(path, layer_modules(source)),  # what the graph computes, not what was asked
    )
