"""Helpers for tests (slimtune's and users'): shrink a recipe to a tiny, fast run of the same stages."""

from __future__ import annotations

import copy
from typing import Any

TRAINING_KEYS = ("train", "recovery")


def shrink_recipe(
    raw: dict[str, Any], *, limit: int = 500, max_epochs: int = 10, batch_size: int = 32
) -> dict[str, Any]:
    """A copy of a recipe dict on ``limit`` examples with at most ``max_epochs`` per training stage."""
    out = copy.deepcopy(raw)
    out["data"]["limit"] = limit
    for stage in out["stages"]:
        for key in TRAINING_KEYS:
            if key in stage:
                stage[key]["epochs"] = min(stage[key].get("epochs", max_epochs), max_epochs)
                stage[key]["batch_size"] = batch_size
    return out
