"""``smoothquant_lm_(model, config, calibration=ids, validation=ids)``: smooth a causal LM in place for W8A8.

The per-channel activation maxima come from one calibration pass. Without ``config.alpha_grid``, ``config.alpha``
is applied. With it, the α of the grid with the lowest W8A8-simulated perplexity on ``validation`` windows is
applied — and no smoothing competes too: when plain int8 scores best the model is left as it is (``alpha``
None in the report). The model then carries ``slimtune_smoothquant`` (α, mode, the static calibration windows), so
``export_lm`` / ``export_lm_bundle`` write its ONNX Runtime int8 file.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from slimtune.errors import UnsupportedModelError
from slimtune.quantize.smoothquant.config import SmoothQuantConfig

STATIC_WINDOWS = 16  # prefill windows the static quantizer calibrates its activation ranges on


def check_not_quantized(model: nn.Module) -> None:
    """Refuse a model that is already quantized (weight-only codes, or already smoothed for int8)."""
    from slimtune.quantize.weight_only.api import quantized_layers

    done = quantized_layers(model)
    if done:
        name, (_, qw) = next(iter(done.items()))
        raise UnsupportedModelError(
            f"the model is already quantized ({name}: {qw.method} int{qw.bits}); quantize the original fp32 model"
        )
    if getattr(model, "slimtune_smoothquant", None):
        raise UnsupportedModelError(
            "the model is already smoothed for SmoothQuant int8; quantize the original fp32 model"
        )


def smoothquant_lm_(
    model: nn.Module,
    config: SmoothQuantConfig,
    *,
    calibration: torch.Tensor | None,
    validation: torch.Tensor | None = None,
) -> dict[str, Any]:
    """Smooth ``model`` in place (see the module docstring); returns the α used, the search scores (if any) and
    the activation outlier ratio before/after."""
    from slimtune.quantize.smoothquant.simulate import search_alpha
    from slimtune.quantize.smoothquant.smooth import activation_maxima, smooth_lm_
    from slimtune.quantize.weight_only.api import calibration_ids

    check_not_quantized(model)
    ids = calibration_ids(calibration, samples=config.samples)
    info: dict[str, Any] = {}
    alpha: float | None = config.alpha if config.smooth else None
    maxima = activation_maxima(model, ids, batch_size=config.batch_size) if config.smooth else {}
    if config.smooth and config.alpha_grid:
        held_out = validation if validation is not None else ids
        found = search_alpha(model, maxima, held_out[: config.search_windows].long(), config.alpha_grid,
                             per_channel=config.per_channel, reduce_range=config.reduce_range,
                             linear=config.fold_linear)  # fmt: skip
        info["search"] = found["perplexity"]
        alpha = found["best_alpha"]
    if alpha is not None:
        info.update(smooth_lm_(model, maxima, alpha=alpha, linear=config.fold_linear))
    else:
        info.update(alpha=None, groups=0)
    model.slimtune_smoothquant = {  # type: ignore[assignment]
        "alpha": alpha,
        "mode": config.mode,
        "per_channel": config.per_channel,
        "reduce_range": config.reduce_range,
        "calibration_windows": ids[:STATIC_WINDOWS].clone() if config.mode == "static" else None,
    }
    return info
