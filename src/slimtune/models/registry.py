"""Build models by name and rebuild them from a saved spec.

Pretrained models (``PRETRAINED``) are listed in ``MODELS`` like any architecture, but their builders
attach their own spec: a Hugging Face model is rebuilt from its stored config (arch ``hf``) and
EfficientNet-Lite0 without its pretrained file, the weights of both coming from the saved safetensors.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

from torch import nn

from slimtune._registry import Registry
from slimtune.errors import ConfigError
from slimtune.models import efficientnet as _efficientnet
from slimtune.models import hf as _hf
from slimtune.models import lm as _lm
from slimtune.models import transformer as _transformer  # noqa: F401  (registers transformer-small)
from slimtune.models import zoo
from slimtune.models.serialization import get_spec
from slimtune.models.zoo import MODELS, Builder

PRETRAINED: Registry[Builder] = Registry("pretrained model")
PRETRAINED.add("minilm-l6", _hf.minilm_l6)
PRETRAINED.add("hf", _hf.hf_model)
PRETRAINED.add(_efficientnet.ARCH, _efficientnet.efficientnet_lite0)
for _name in PRETRAINED:
    MODELS.add(_name, PRETRAINED.get(_name), help=PRETRAINED.help(_name))


def build(name: str, *, input_shape: Sequence[int], num_classes: int, **options: Any) -> nn.Module:
    """Build a registered architecture or pretrained model, with its spec (``model.slimtune_spec``)."""
    if name not in PRETRAINED:
        return zoo.build(name, input_shape=input_shape, num_classes=num_classes, **options)
    builder = PRETRAINED.get(name)
    try:
        inspect.signature(builder).bind(input_shape=tuple(input_shape), num_classes=num_classes, **options)
    except TypeError as exc:
        raise ConfigError(f"model '{name}': {exc}") from None
    return builder(input_shape=tuple(input_shape), num_classes=num_classes, **options)


def rebuild(spec: dict[str, Any]) -> nn.Module:
    arch = spec.get("arch")
    if not isinstance(arch, str):
        raise ConfigError("model spec has no 'arch'; the spec.json is damaged")
    model: nn.Module
    if arch == _lm.ARCH:
        from slimtune.models.lm_io import from_spec as lm_from_spec

        model = lm_from_spec(spec)
    elif arch == _hf.ARCH:
        model = _hf.from_spec(spec)
    elif arch == _efficientnet.ARCH:
        model = _efficientnet.from_spec(spec)
    else:
        model = build(arch, input_shape=spec["input_shape"], num_classes=spec["num_classes"], **spec.get("options", {}))
    if "preprocess" in spec:  # the tokenizer travels with the model through save → load → save
        get_spec(model)["preprocess"] = spec["preprocess"]
    return model


__all__ = ["MODELS", "PRETRAINED", "build", "rebuild"]
