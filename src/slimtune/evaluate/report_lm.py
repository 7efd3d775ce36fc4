"""Report rows for causal LMs: perplexity where a classifier shows accuracy, decode speed where it shows
latency, and the two plots (perplexity vs size on disk, perplexity vs batch-1 decode latency).

An LM row is a ``StageRow`` whose ``metrics`` hold ``perplexity`` (and ``token_agreement`` with the
reference when one was given); its ``latency_ms`` hold ``ttft_batch1`` and ``decode_batch{n}`` (ms per
generated token), its ``throughput`` ``decode_batch{n}`` and ``prefill_batch{n}`` (tokens/s), and
``macs`` counts multiply-accumulates per token (every Linear, the output head included). A report
whose rows all carry a perplexity is laid out with ``LM_HEADERS``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimtune.data.core import DataSplits
from slimtune.evaluate.plots import format_number, svg_scatter
from slimtune.evaluate.report import _MISSING, StageRow, _num, _ratio, human_bytes

LM_HEADERS = (
    "Stage",
    "Perplexity",
    "Token agreement",
    "Params",
    "Non-zeros",
    "Size on disk",
    "MACs / token",
    "Decode b1 (tok/s)",
    "Decode b8 (tok/s)",
    "TTFT b1 (ms)",
    "Precision",
)


def is_lm_rows(rows: Sequence[StageRow]) -> bool:
    return bool(rows) and all(_num(r.metrics.get("perplexity")) is not None for r in rows)


def macs_per_token(model: nn.Module) -> int:
    """Multiply-accumulates of every Linear (and transformers Conv1D) for one token."""
    total = 0
    for m in model.modules():
        if isinstance(m, nn.Linear):
            total += m.in_features * m.out_features
        elif type(m).__name__ == "Conv1D":
            weight = getattr(m, "weight", None)
            total += int(weight.numel()) if isinstance(weight, torch.Tensor) else 0
    return total


def measure_lm_row(
    name: str,
    model: nn.Module,
    data: DataSplits,
    *,
    artifact: str | Path | None = None,
    reference: nn.Module | None = None,
    speed: bool = True,
    batch_sizes: Sequence[int] = (1, 8),
    max_windows: int | None = None,
) -> StageRow:
    """Measure a causal LM on ``data.test`` (the first ``max_windows`` windows) for the report."""
    from slimtune._io import path_bytes
    from slimtune.evaluate.lm import disk_bytes, generation_speed, perplexity, token_agreement
    from slimtune.evaluate.size import count_nonzero, count_params, sparsity

    test = data.test if max_windows is None else data.test.take(max_windows)
    metrics: dict[str, Any] = dict(perplexity(model, test))
    if reference is not None:
        metrics["token_agreement"] = token_agreement(model, reference, test)
    latency: dict[str, float] = {}
    throughput: dict[str, float] = {}
    extra: dict[str, Any] = {"runtime": "torch", "kind": "lm", "sparsity": sparsity(model)}
    peak = None
    if speed:
        s = generation_speed(model, batch_sizes=batch_sizes)
        for key, tps in s["decode_tokens_per_s"].items():
            throughput[f"decode_{key}"] = tps
            latency[f"decode_{key}"] = 1000.0 / tps
        for key, tps in s["prefill_tokens_per_s"].items():
            throughput[f"prefill_{key}"] = tps
        latency["ttft_batch1"] = s["ttft_ms"].get("batch1", float("nan"))
        peak = s["peak_rss_mib"]
        extra.update(threads=s["threads"], prompt_tokens=s["prompt_tokens"], new_tokens=s["new_tokens"])
    return StageRow(
        name=name,
        artifact=None if artifact is None else str(artifact),
        metrics=metrics,
        params=count_params(model),
        nonzero_params=count_nonzero(model),
        bytes_on_disk=path_bytes(artifact) if artifact is not None else disk_bytes(model),
        macs=macs_per_token(model),
        latency_ms=latency,
        throughput=throughput,
        peak_memory_mb=peak,
        extra=extra,
        precision=lm_precision(model),
    )


def lm_precision(model: nn.Module) -> dict[str, str]:
    """Each layer's precision as the exported file computes it: ``torch_precision``, overlaid with the weight-only
    codes' width (``int4``, ``int8``: mixed precision shows both) and, for a SmoothQuant model, ``int8`` W8A8 on
    every Linear but its fp32 fallback (ONNX Runtime int8 quantizes them, the output head included)."""
    from slimtune.quantize.precision import torch_precision
    from slimtune.quantize.weight_only.api import quantized_layers

    out = torch_precision(model)
    for name, (_, qw) in quantized_layers(model).items():
        out[name] = f"int{qw.bits}"
    sq = getattr(model, "slimtune_smoothquant", None)
    if sq:
        kept = set(sq.get("fallback") or [])  # an fp32 fallback stays as it is
        for name, m in model.named_modules():
            if isinstance(m, nn.Linear) and name not in kept:
                out[name] = "int8"
    return out


def _rate(value: Any) -> str:
    v = _num(value)
    return _MISSING if v is None else f"{v:.3g}"


def lm_cells(row: StageRow) -> list[str]:
    from slimtune.evaluate.report_precision import precision_summary

    ppl, agree = _num(row.metrics.get("perplexity")), _num(row.metrics.get("token_agreement"))
    tput = row.throughput or {}
    return [
        row.name,
        _MISSING if ppl is None else f"{ppl:.4g}",
        _MISSING if agree is None else f"{agree * 100:.2f}%",
        format_number(row.params),
        format_number(row.nonzero_params),
        human_bytes(row.bytes_on_disk),
        format_number(row.macs),
        _rate(tput.get("decode_batch1")),
        _rate(tput.get("decode_batch8")),
        _rate(row.latency_ms.get("ttft_batch1")),
        precision_summary(row.precision),
    ]


def lm_ratio_cells(row: StageRow, base: StageRow) -> list[str]:
    ppl, ppl_base = _num(row.metrics.get("perplexity")), _num(base.metrics.get("perplexity"))
    tput, tput_base = row.throughput or {}, base.throughput or {}
    return [
        f"↳ vs {base.name}",
        _MISSING if ppl is None or not ppl_base else f"{(ppl / ppl_base - 1) * 100:+.1f}%",
        "",
        _ratio(row.params, base.params, "fewer", "more"),
        _ratio(row.nonzero_params, base.nonzero_params, "fewer", "more"),
        _ratio(row.bytes_on_disk, base.bytes_on_disk, "smaller", "larger"),
        _ratio(row.macs, base.macs, "fewer", "more"),
        _ratio(tput_base.get("decode_batch1"), tput.get("decode_batch1"), "faster", "slower"),
        _ratio(tput_base.get("decode_batch8"), tput.get("decode_batch8"), "faster", "slower"),
        _ratio(row.latency_ms.get("ttft_batch1"), base.latency_ms.get("ttft_batch1"), "faster", "slower"),
        "",
    ]


def lm_plots(rows: Sequence[StageRow]) -> list[str]:
    """Perplexity vs size on disk (log x) and perplexity vs batch-1 decode latency (ms per token)."""

    def points(x_of: Any) -> list[tuple[str, float, float]]:
        out = []
        for r in rows:
            x, y = _num(x_of(r)), _num(r.metrics.get("perplexity"))
            if x is not None and y is not None:
                out.append((r.name, x, y))
        return out

    return [
        svg_scatter(
            points(lambda r: r.bytes_on_disk),
            x_label="Size on disk",
            y_label="Perplexity",
            title="Perplexity vs size on disk",
            log_x=True,
            x_format=human_bytes,
            standalone=False,
        ),
        svg_scatter(
            points(lambda r: r.latency_ms.get("decode_batch1")),
            x_label="Decode latency, batch 1 (ms/token)",
            y_label="Perplexity",
            title="Perplexity vs decode latency",
            standalone=False,
        ),
    ]
