"""One entry point for int8 in ONNX Runtime: ``quantize_onnx(src, dst, config, calibration=...)``.
Each method is a config dataclass with a handler registered for it (``register_quantizer``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from slimtune._registry import MethodRegistry
from slimtune.config import Config

Handler = Callable[[Path, Path, Any, "torch.Tensor | None"], dict[str, Any]]
QUANTIZERS: MethodRegistry[type[Config], Handler] = MethodRegistry("quantization method", "register_quantizer")


def register_quantizer(name: str, config_cls: type[Config], *, help: str = "") -> Callable[[Handler], Handler]:
    return QUANTIZERS.register_handler(name, config_cls, help=help)


def quantize_onnx(
    src: str | Path, dst: str | Path, config: Config, *, calibration: torch.Tensor | None = None
) -> dict[str, Any]:
    """Quantize the fp32 ONNX model ``src`` into ``dst``; returns the settings used and why."""
    handler = QUANTIZERS.handler_for(config)
    return handler(Path(src), Path(dst), config, calibration)
