"""Measure a model: accuracy metrics, size, MACs, latency, memory, and the stage report."""

from slimtune.evaluate.latency import PeakMemory, measure_latency, measure_peak_memory
from slimtune.evaluate.macs import count_macs, count_macs_by_layer
from slimtune.evaluate.metrics import classification_metrics
from slimtune.evaluate.plots import svg_scatter
from slimtune.evaluate.report import Report, StageRow, human_bytes
from slimtune.evaluate.size import count_nonzero, count_params, layer_sparsity, sparsity

__all__ = [
    "PeakMemory",
    "Report",
    "StageRow",
    "classification_metrics",
    "count_macs",
    "count_macs_by_layer",
    "count_nonzero",
    "count_params",
    "human_bytes",
    "layer_sparsity",
    "measure_latency",
    "measure_peak_memory",
    "sparsity",
    "svg_scatter",
]
