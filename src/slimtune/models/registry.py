"""Build models by name and rebuild them from a saved spec."""

from __future__ import annotations

from typing import Any

from torch import nn

from slimtune.errors import ConfigError
from slimtune.models import transformer as _transformer  # noqa: F401  (registers transformer-small)
from slimtune.models.zoo import MODELS, build


def rebuild(spec: dict[str, Any]) -> nn.Module:
    arch = spec.get("arch")
    if not isinstance(arch, str):
        raise ConfigError("model spec has no 'arch'; the spec.json is damaged")
    if arch == "hf":
        from slimtune.models.hf import from_spec

        return from_spec(spec)
    return build(arch, input_shape=spec["input_shape"], num_classes=spec["num_classes"], **spec.get("options", {}))


__all__ = ["MODELS", "build", "rebuild"]
