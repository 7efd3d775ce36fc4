"""Classification heads: replace one for a new label set, and take it off to get a feature trunk.
The model's spec follows, so a saved model with a new head rebuilds with the new class count."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from slimtune.errors import ConfigError
from slimtune.transfer.anatomy import anatomy


def head_of(model: nn.Module) -> nn.Linear:
    """The final Linear layer of ``model``."""
    return anatomy(model).head_module(model)


def num_classes_of(model: nn.Module) -> int:
    return int(head_of(model).out_features)


def set_head_(model: nn.Module, head: nn.Module, *, path: str | None = None) -> str:
    """Put ``head`` where the model's head is, or at ``path`` (e.g. ``nn.Identity()`` to get features);
    returns the path. The spec is not touched; see :func:`replace_head_`."""
    path = path or anatomy(model).head
    parent_path, _, attr = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, attr, head)
    return path


def replace_head_(
    model: nn.Module, num_classes: int, *, label_names: Sequence[str] | None = None, seed: int | None = None
) -> nn.Linear:
    """A freshly initialised ``num_classes``-way head in place of the model's head; returns it.

    Works for every built-in architecture, Hugging Face classifiers (``HFClassifier``: the config's
    ``num_labels`` and label names follow) and EfficientNet-Lite0; ``UnsupportedModelError`` otherwise.
    """
    if num_classes < 2:
        raise ConfigError(f"num_classes must be at least 2, got {num_classes}")
    if label_names is not None and len(label_names) != num_classes:
        raise ConfigError(f"got {len(label_names)} label names for {num_classes} classes")
    old = head_of(model)
    if seed is not None:
        torch.manual_seed(seed)
    new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
    new.to(device=old.weight.device, dtype=old.weight.dtype)
    set_head_(model, new)
    set_num_classes_(model, num_classes, label_names=label_names)
    return new


def set_num_classes_(model: nn.Module, num_classes: int, *, label_names: Sequence[str] | None = None) -> None:
    """Record a new class count in the model's spec (and a Hugging Face model's config)."""
    spec: Any = getattr(model, "slimtune_spec", None)
    config: Any = getattr(getattr(model, "model", None), "config", None)
    if config is not None and hasattr(config, "num_labels"):
        names = list(label_names) if label_names is not None else [f"LABEL_{i}" for i in range(num_classes)]
        config.num_labels = num_classes
        config.id2label = dict(enumerate(names))
        config.label2id = {n: i for i, n in enumerate(names)}
        if isinstance(spec, dict) and "hf_config" in spec:
            spec["hf_config"] = config.to_dict()
    if isinstance(spec, dict):
        spec["num_classes"] = num_classes
