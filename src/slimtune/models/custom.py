"""Your own ``nn.Module`` saved and loaded like a registered model — without pickle and without ever
importing code a file names.

``save_model(net, "saved/", options={"width": 16}, input_shape=(3, 32, 32))`` writes the weights as
safetensors and a spec that names the class (``module:qualname``) and the keyword arguments it is built
with. ``load_model("saved/", custom=MyNet)`` calls ``MyNet(**options)`` — the class (or any factory that
returns the module) comes from the caller, never from the file — then restores layers that structured
pruning shrank and loads the weights. The loaded model carries its spec, so it re-saves and bundles
(``export_bundle``) like any other.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from slimtune.errors import ConfigError, DataError

ARCH = "custom"
Factory = Callable[..., nn.Module]


def class_name(obj: Any) -> str:
    """``module:qualname`` of a class (or of a factory function)."""
    return f"{getattr(obj, '__module__', '?')}:{getattr(obj, '__qualname__', type(obj).__qualname__)}"


def custom_spec(
    model: nn.Module, *, options: Mapping[str, Any] | None, input_shape: Sequence[int] | None
) -> dict[str, Any]:
    """The spec of a module slimtune did not build: its class name, its constructor options, its input shape."""
    opts = dict(options or {})
    try:
        json.dumps(opts, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"save_model options must be plain JSON values (numbers, strings, lists): {exc}") from None
    spec: dict[str, Any] = {"arch": ARCH, "class": class_name(type(model)), "options": opts}
    if input_shape is not None:
        shape = list(input_shape)
        if not shape or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape):
            raise ConfigError(f"input_shape must be positive integers without the batch axis, got {input_shape!r}")
        spec["input_shape"] = shape
    return spec


def rebuild_custom(spec: Mapping[str, Any], custom: Factory | None, folder: str | Path) -> nn.Module:
    """``custom(**spec['options'])``, checked against the class the spec names."""
    saved = str(spec.get("class", "?"))
    qualname = saved.rpartition(":")[2]
    if custom is None:
        raise DataError(
            f"'{folder}' holds your own module {saved}; load it in Python with "
            f"load_model('{folder}', custom={qualname}) (slimtune never imports code a file names)"
        )
    if isinstance(custom, type):
        if not issubclass(custom, nn.Module):
            raise ConfigError(f"custom= must be an nn.Module class or a function returning one, got {custom!r}")
        if custom.__qualname__ != qualname:
            raise DataError(
                f"'{folder}' was saved from {saved}, not {class_name(custom)}; pass custom={qualname} "
                "(or a function that builds it)"
            )
    elif not callable(custom):
        raise ConfigError(f"custom= must be an nn.Module class or a function returning one, got {custom!r}")
    options = spec.get("options", {})
    if not isinstance(options, dict):
        raise DataError(f"{Path(folder) / 'spec.json'}: 'options' must be a mapping; re-save the model")
    try:
        model = custom(**options)
    except TypeError as exc:
        raise ConfigError(
            f"cannot build {qualname}(**{options}) for '{folder}': {exc}; pass a custom= that takes these options"
        ) from None
    if not isinstance(model, nn.Module):
        raise ConfigError(f"custom= returned {type(model).__name__}, not an nn.Module")
    return model
