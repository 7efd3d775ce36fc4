"""Where and in what precision the one loop trains: ``device`` and ``precision`` of ``TrainConfig``.

``device``: ``auto`` (the first CUDA GPU when there is one, else the CPU; under ``torchrun`` on GPUs
each rank takes ``cuda:LOCAL_RANK``), ``cpu``, ``cuda`` or ``cuda:N``. Asking for CUDA on a machine
without one is a one-line ``ConfigError``. ``precision``: ``fp32``; ``bf16`` (autocast to bfloat16,
weights and optimizer state stay fp32); ``fp16`` (autocast to float16 with a ``GradScaler`` that scales
the loss so small gradients survive, and skips steps whose gradients overflowed). All three run on the
CPU too (torch's CPU autocast supports both half types), slowly: they are there so a recipe that trains
in bf16 on a GPU also runs in CI.
"""

from __future__ import annotations

import os
import re
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Literal

import torch

from slimtune.errors import ConfigError

Precision = Literal["fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16")
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_device_spec(spec: str) -> None:
    """A one-line ConfigError for a string that is not ``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""
    if not isinstance(spec, str) or not _DEVICE.match(spec):
        raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {spec!r}")


def resolve_device(spec: str = "auto", *, distributed: bool | None = None) -> torch.device:
    """The ``torch.device`` for ``spec``; CUDA without a GPU (or past the last one) is a ConfigError.

    Under ``torchrun`` (``distributed``, by default ``WORLD_SIZE > 1``) ``auto`` and a bare ``cuda`` mean
    this rank's GPU, ``cuda:LOCAL_RANK``, so one launch command drives every GPU of the machine; with more
    ranks than GPUs ``auto`` trains on the CPU and ``cuda`` is an error.
    """
    check_device_spec(spec)
    if distributed is None:
        distributed = int(os.environ.get("WORLD_SIZE", 1)) > 1
    if spec == "cpu" or (spec == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(f"device: {spec} but this machine has no CUDA GPU torch can use; set device: cpu or auto")
    count = torch.cuda.device_count()
    if ":" in spec:
        index = int(spec.split(":")[1])
    else:
        index = int(os.environ.get("LOCAL_RANK", 0)) if distributed else 0
    if spec == "auto" and index >= count:
        return torch.device("cpu")  # more ranks than GPUs: auto falls back to the CPU (gloo)
    if index >= count:
        raise ConfigError(f"device: cuda:{index} but this machine has {count} GPU(s) (cuda:0..{count - 1})")
    return torch.device("cuda", index)


def training_device(model: torch.nn.Module, spec: str) -> torch.device:
    """Where ``fit`` trains ``model`` for the config's ``device``: ``auto`` keeps a model that is already on
    a GPU there; otherwise :func:`resolve_device`."""
    origin = model_device(model)
    return origin if spec == "auto" and origin.type == "cuda" else resolve_device(spec)


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of ``model``'s first parameter (or buffer); the CPU for a module without either."""
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


def autocast(device: torch.device, precision: str) -> AbstractContextManager[Any]:
    """The autocast context for a forward pass at ``precision`` on ``device`` (a no-op for fp32)."""
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=_DTYPES[precision])


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler | None:
    """A ``GradScaler`` for fp16 training, ``None`` otherwise (bf16 has fp32's range and needs none)."""
    if precision != "fp16":
        return None
    return torch.amp.GradScaler(device.type)


def to_device(value: Any, device: torch.device) -> Any:
    """``value`` (a tensor, or a tuple/list/dict of them) on ``device``; anything else unchanged."""
    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=True)
    if isinstance(value, (tuple, list)):
        return type(value)(to_device(v, device) for v in value)
    if isinstance(value, dict):
        return {k: to_device(v, device) for k, v in value.items()}
    return value
