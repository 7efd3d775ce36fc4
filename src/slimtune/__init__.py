"""slimtune: make deep-learning models small and fast enough to deploy.

The public surface is imported lazily so ``import slimtune`` (and ``slimtune --help``) stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "TrainConfig": "slimtune.train",
    "fit": "slimtune.train",
    "predict": "slimtune.train",
    "MagnitudePruneConfig": "slimtune.prune",
    "prune_": "slimtune.prune",
    "KDConfig": "slimtune.distill",
    "DistillationTask": "slimtune.distill",
    "distill_": "slimtune.distill",
    "ExportConfig": "slimtune.export",
    "export_onnx": "slimtune.export",
    "OrtDynamicInt8Config": "slimtune.quantize",
    "OrtStaticInt8Config": "slimtune.quantize",
    "quantize_onnx": "slimtune.quantize",
    "run_recipe": "slimtune.recipe",
    "load_recipe": "slimtune.recipe",
    "Report": "slimtune.evaluate",
    "FinetuneConfig": "slimtune.transfer",
    "finetune_": "slimtune.transfer",
    "replace_head_": "slimtune.transfer",
    "export_bundle": "slimtune.export.bundle",
    "Predictor": "slimtune.runtime",
    "LMExportConfig": "slimtune.export",
    "export_lm_bundle": "slimtune.export.lm_bundle",
    "LMGenerator": "slimtune.runtime",
}
_SUBMODULES = {
    "data",
    "models",
    "train",
    "prune",
    "distill",
    "export",
    "quantize",
    "evaluate",
    "recipe",
    "transfer",
    "runtime",
    "errors",
    "env",
}

__all__ = sorted([*_LAZY, *_SUBMODULES, "__version__"])


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"slimtune.{name}")
    raise AttributeError(f"module 'slimtune' has no attribute {name!r}")
