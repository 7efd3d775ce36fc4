"""One report row per stage: quality, size, compute and measured speed of the stage's artefact."""

from __future__ import annotations

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
from slimtune.evaluate.report_warnings import add_warning, loaded_machine_warning
from slimtune.evaluate.size import count_nonzero, count_params, sparsity
from slimtune.export.onnx import ort_predict, ort_session
from slimtune.quantize.precision import layer_modules, onnx_precision, torch_precision
from slimtune.threads import available_cores, load_average
from slimtune.train.loop import predict

BATCHES = (1, 32)


def _batch_maker(x: torch.Tensor) -> Callable[[int], torch.Tensor]:
    def make(n: int) -> torch.Tensor:
        reps = -(-n // len(x))
        return torch.cat([x] * reps)[:n] if reps > 1 else x[:n]

    return make


def _metrics(logits: np.ndarray, data: DataSplits) -> dict[str, Any]:
    return classification_metrics(data.test.y.numpy(), logits.argmax(1), num_classes=data.num_classes)


TIMING_BUDGET_S = 0.4  # per batch size: a slow model gets fewer rounds, not a longer measurement
MIN_ROUNDS = 3
UNRELIABLE_SPREAD = 0.5  # (p90 - p10) / median above this: the latency columns are noise


def _speed(run: Callable[[Any], Any], make: Callable[[int], Any]) -> tuple[dict[str, Any], float]:
    """Time-boxed latency (same cost for a MiniLM as for an MLP), its spread, and the load while timing."""
    before = load_average()
    lat = measure_latency(
        run, make, batch_sizes=BATCHES, warmup=10, repeats=1000, budget_s=TIMING_BUDGET_S, min_repeats=MIN_ROUNDS
    )
    after = load_average()
    loads = [v for v in (before, after) if v is not None]
    lat["load_average"] = round(max(loads), 2) if loads else None
    peak = measure_peak_memory(run, make(BATCHES[-1]))
    return lat, float(peak.mib)


def timing_warnings(name: str, lat: dict[str, Any], *, cores: int | None = None) -> list[str]:
    """Why a row's latency columns should not be trusted: other work on the machine while it was timed
    (1-minute load average above the cores this process may use), or rounds that spread too widely."""
    out = []
    cores = available_cores() if cores is None else cores
    load = lat.get("load_average")
    if load is not None and load > cores:
        out.append(loaded_machine_warning(name, load, cores))
    spread = {k: v for k, v in (lat.get("spread") or {}).items() if v > UNRELIABLE_SPREAD}
    if spread:
        worst = max(spread, key=lambda k: spread[k])
        out.append(
            f"stage '{name}' latency varied by {spread[worst] * 100:.0f}% of its median ({worst}, p10 to p90): "
            "its latency columns are unreliable"
        )
    return out


def _timing_extra(row: StageRow, lat: dict[str, Any]) -> StageRow:
    row.extra["latency_spread"] = {k: round(v, 3) for k, v in lat["spread"].items()}
    row.extra["latency_rounds"] = lat["rounds"]
    row.extra["load_average"] = lat["load_average"]
    for message in timing_warnings(row.name, lat):
        add_warning(row, message)
    return row


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
    row = StageRow(
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
    return _timing_extra(row, lat)


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
    row = StageRow(
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
    return _timing_extra(row, lat)
