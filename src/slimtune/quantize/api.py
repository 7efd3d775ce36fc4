"""One entry point for int8 in ONNX Runtime: ``quantize_onnx(src, dst, config, calibration=...)``.
Each method is a config dataclass with a handler registered for it (``register_quantizer``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from slimtune._registry import Registry
from slimtune.config import Config
from slimtune.errors import ConfigError

Handler = Callable[[Path, Path, Any, "torch.Tensor | None"], dict[str, Any]]
QUANTIZERS: Registry[type[Config]] = Registry("quantization method")
_HANDLERS: dict[type[Config], Handler] = {}


def register_quantizer(name: str, config_cls: type[Config], *, help: str = "") -> Callable[[Handler], Handler]:
    def deco(handler: Handler) -> Handler:
        QUANTIZERS.add(name, config_cls, help=help)
        _HANDLERS[config_cls] = handler
        return handler

    return deco


def quantize_onnx(
    src: str | Path, dst: str | Path, config: Config, *, calibration: torch.Tensor | None = None
) -> dict[str, Any]:
    """Quantize the fp32 ONNX model ``src`` into ``dst``; returns the settings used and why."""
    handler = _HANDLERS.get(type(config))
    if handler is None:
        raise ConfigError(f"no quantization handler for {type(config).__name__}; register one with register_quantizer")
    return handler(Path(src), Path(dst), config, calibration)
