"""Structured pruning (``method: structured``): physically remove neurons, conv channels, attention heads,
FFN units and whole layers, so the pruned model is smaller and faster, not just sparser.

Coupled layers are found by tracing the model once (``trace.py``, ``ops.py``, ``spaces.py``): a residual add
couples the channels of everything it joins, a flatten turns a conv channel into a block of Linear columns, a
grouped or depthwise conv makes its input lose whole groups, a squeeze-excitation gate is cut with the channels
it scales, and anything not understood is left whole. Hugging Face attention is recognised by shape
(``handlers.py``: BERT-family; ``attention.py``: DistilBERT, ViT). Every run logs (``slimtune.prune``) and
returns per group what was cut and what stayed whole and why (``summary.py``). Teach it a new layer type with
``register_layer_handler``.
"""

from torch import nn

from slimtune.prune.api import PruneContext, PruneSummary, register_pruner
from slimtune.prune.structured import attention as _attention  # noqa: F401  (registers HF attention handlers)
from slimtune.prune.structured.config import TARGETS, StructuredPruneConfig
from slimtune.prune.structured.core import StructuredResult, structured_prune
from slimtune.prune.structured.graph import Group, build_groups
from slimtune.prune.structured.handlers import Cut, Inner, LayerHandler, handler_for, register_layer_handler


@register_pruner(
    "structured", StructuredPruneConfig, help="structured: physically remove neurons, channels, heads, layers"
)
def _structured(model: nn.Module, config: StructuredPruneConfig, ctx: PruneContext) -> None:
    result = structured_prune(model, config, data=ctx.data, example_inputs=ctx.example_inputs)
    ctx.summary = PruneSummary(result.summary(), [o.to_dict() for o in result.outcomes], result.lines())


__all__ = [
    "TARGETS",
    "Cut",
    "Group",
    "Inner",
    "LayerHandler",
    "StructuredPruneConfig",
    "StructuredResult",
    "build_groups",
    "handler_for",
    "register_layer_handler",
    "structured_prune",
]
