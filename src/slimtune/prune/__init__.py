"""Pruning: one verb, ``prune_(model, config)``, for every registered method.

Unstructured methods: ``magnitude`` (one-shot), ``random`` (baseline), ``movement``, ``gradual`` and
``iterative`` (schedules) and ``l1`` (sparsity training); they leave exact zeros in the weights.
Causal LMs (calibration text): ``wanda`` and ``sparsegpt`` (unstructured or N:M, one-shot),
``lm-structured`` (GQA-aware heads, FFN channels and blocks).
Structured: ``structured`` physically removes neurons, channels, heads, FFN units and layers.
"""

from slimtune.prune.api import PRUNERS, PruneContext, PruneSummary, prune_, prune_summarized_, register_pruner
from slimtune.prune.lm_recover import LMRecoverConfig, RecoverResult, recover_lm_
from slimtune.prune.lm_sparse import LM_METHODS, SparseGPTConfig, WandaConfig
from slimtune.prune.lm_structured import LMStructuredConfig
from slimtune.prune.schedules import (
    GradualPruneCallback,
    GradualPruneConfig,
    IterativePruneConfig,
    iterative_sparsity,
    polynomial_sparsity,
)
from slimtune.prune.sparsity_reg import (
    L1PenaltyCallback,
    L1SparsityConfig,
    norm_layers,
    norm_producers,
    prune_norm_channels_,
)
from slimtune.prune.structured import (
    Cut,
    LayerHandler,
    StructuredPruneConfig,
    StructuredResult,
    register_layer_handler,
    structured_prune,
)
from slimtune.prune.unstructured import (
    MagnitudePruneConfig,
    MaskCallback,
    MovementPruneConfig,
    MovementScoreCallback,
    RandomPruneConfig,
    apply_masks_,
    magnitude_masks,
    masks_from_zeros,
    prunable_weights,
    score_masks,
)

__all__ = [
    "LM_METHODS",
    "PRUNERS",
    "Cut",
    "GradualPruneCallback",
    "GradualPruneConfig",
    "IterativePruneConfig",
    "L1PenaltyCallback",
    "L1SparsityConfig",
    "LMRecoverConfig",
    "LMStructuredConfig",
    "LayerHandler",
    "MagnitudePruneConfig",
    "MaskCallback",
    "MovementPruneConfig",
    "MovementScoreCallback",
    "PruneContext",
    "PruneSummary",
    "RandomPruneConfig",
    "RecoverResult",
    "SparseGPTConfig",
    "StructuredPruneConfig",
    "StructuredResult",
    "WandaConfig",
    "apply_masks_",
    "iterative_sparsity",
    "magnitude_masks",
    "masks_from_zeros",
    "norm_layers",
    "norm_producers",
    "polynomial_sparsity",
    "prunable_weights",
    "prune_",
    "prune_norm_channels_",
    "prune_summarized_",
    "recover_lm_",
    "register_layer_handler",
    "register_pruner",
    "score_masks",
    "structured_prune",
]
