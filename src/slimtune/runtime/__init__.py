"""Run deploy bundles without torch: ``Predictor`` (ONNX Runtime + numpy), ``LMGenerator`` and ``bench``."""

from __future__ import annotations

from slimtune.runtime.bench import bench, format_table
from slimtune.runtime.bundle import FORMAT_VERSION, Manifest, read_manifest
from slimtune.runtime.generate import LMGenerator
from slimtune.runtime.predictor import Predictor

__all__ = ["FORMAT_VERSION", "LMGenerator", "Manifest", "Predictor", "bench", "format_table", "read_manifest"]
