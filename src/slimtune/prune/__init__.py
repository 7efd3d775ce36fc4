"""Pruning: one verb, ``prune_(model, config)``, for every registered method."""

from slimtune.prune.api import PRUNERS, PruneContext, prune_, register_pruner
from slimtune.prune.unstructured import (
    MagnitudePruneConfig,
    MaskCallback,
    apply_masks_,
    magnitude_masks,
    masks_from_zeros,
    prunable_weights,
)

__all__ = [
    "PRUNERS",
    "MagnitudePruneConfig",
    "MaskCallback",
    "PruneContext",
    "apply_masks_",
    "magnitude_masks",
    "masks_from_zeros",
    "prunable_weights",
    "prune_",
    "register_pruner",
]
