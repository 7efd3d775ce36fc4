"""Causal-LM students cut from their teacher: a copy that keeps some of its decoder blocks.

``lm_student(teacher, layers=[0, 2])`` (or ``keep_every=2``) copies the teacher — embeddings, the kept blocks
with their weights, the final norm and the LM head (tied or not) — and renumbers the kept blocks so the
KV cache, the saved spec and the ONNX export see a model of ``len(layers)`` blocks. Distillation
(``distill_`` with LM data) then trains it against the teacher. Llama-style and GPT-2 models are handled
(every model whose blocks ``slimtune.models.lm_layers.decoder_layers`` finds).
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Sequence
from typing import Any

from torch import nn

from slimtune.errors import ConfigError
from slimtune.models.lm_layers import decoder_layers, layer_shapes, sync_config


def lm_student(teacher: nn.Module, *, layers: Sequence[int] | None = None, keep_every: int | None = None) -> nn.Module:
    """A trainable copy of causal LM ``teacher`` with only the decoder blocks ``layers`` (or every
    ``keep_every``-th, counting from 0)."""
    blocks = decoder_layers(teacher)
    n = len(blocks)
    if (layers is None) == (keep_every is None):
        raise ConfigError("an LM student keeps some of the teacher's blocks: give layers: [0, 2] or keep_every: 2")
    keep = list(layers) if layers is not None else list(range(0, n, int(keep_every or 1)))
    if not keep or any(b <= a for a, b in itertools.pairwise(keep)) or keep[0] < 0 or keep[-1] >= n:
        raise ConfigError(f"from_teacher.layers must be increasing block indices in 0..{n - 1}, got {keep}")
    student = copy.deepcopy(teacher)
    box = decoder_layers(student)
    kept = [box[i] for i in keep]
    for i, block in enumerate(kept):
        for m in block.modules():  # the KV cache is indexed by each attention's layer_idx
            if isinstance(getattr(m, "layer_idx", None), int):
                setattr(m, "layer_idx", i)  # noqa: B010
    for i in reversed(range(n)):  # the same ModuleList object, the dropped blocks removed
        if i not in keep:
            del box[i]
    config: Any = student.config
    types = getattr(config, "layer_types", None)
    if isinstance(types, list) and len(types) == n:
        config.layer_types = [types[i] for i in keep]
    sync_config(config, layer_shapes(student))
    spec = getattr(student, "slimtune_spec", None)
    if isinstance(spec, dict):
        student.slimtune_spec = {**spec, "student_of": {"name": spec.get("name"), "layers": keep}}  # type: ignore[assignment]
    for p in student.parameters():
        p.requires_grad_(True)
    return student.train()
