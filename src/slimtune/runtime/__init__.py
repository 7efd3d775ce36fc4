"""Run deploy bundles without torch: ``Predictor`` (ONNX Runtime + numpy) and ``bench``."""

from __future__ import annotations

from slimtune.runtime.bench import bench, format_table
from slimtune.runtime.bundle import FORMAT_VERSION, Manifest, read_manifest
from slimtune.runtime.predictor import Predictor

__all__ = ["FORMAT_VERSION", "Manifest", "Predictor", "bench", "format_table", "read_manifest"]
