"""Pruning: unstructured magnitude pruning with masks that survive training."""

from slimtune.prune.unstructured import (
    MagnitudePruneConfig,
    MaskCallback,
    apply_masks_,
    magnitude_masks,
    masks_from_zeros,
    prunable_weights,
    prune_,
)

__all__ = [
    "MagnitudePruneConfig",
    "MaskCallback",
    "apply_masks_",
    "magnitude_masks",
    "masks_from_zeros",
    "prunable_weights",
    "prune_",
]
