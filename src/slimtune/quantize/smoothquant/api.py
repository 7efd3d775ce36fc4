"""``smoothquant_lm_(model, config, calibration=ids, validation=ids)``: smooth a causal LM in place for W8A8.

The per-channel activation maxima come from one calibration pass. Without ``config.alpha_grid``, ``config.alpha``
is applied. With it, the α of the grid with the lowest W8A8-simulated perplexity on ``validation`` windows is
applied — and no smoothing competes too: when plain int8 scores best the model is left as it is (``alpha``
None in the report). With ``alpha_scope: layer`` each smoothing group gets its own α instead
(``layerwise``). Then ``fallback`` picks the Linears kept fp32 in the int8 file (``fallback``). The model then
carries ``slimtune_smoothquant`` (α, mode, the fp32 fallback, the static calibration windows), so
``export_lm`` / ``export_lm_bundle`` write its ONNX Runtime int8 file.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from slimtune.errors import UnsupportedModelError
from slimtune.quantize.smoothquant.config import SmoothQuantConfig
from slimtune.quantize.smoothquant.fallback import auto_fallback, rank_units, resolve_names

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
    from slimtune.quantize.smoothquant.layerwise import smooth_lm_per_group_
    from slimtune.quantize.smoothquant.simulate import search_alpha
    from slimtune.quantize.smoothquant.smooth import activation_maxima, smooth_lm_
    from slimtune.quantize.weight_only.api import calibration_ids

    check_not_quantized(model)
    wanted = resolve_names(model, config.fallback) if isinstance(config.fallback, tuple) else []
    ids = calibration_ids(calibration, samples=config.samples)
    held_out = (validation if validation is not None else ids).long()
    sim = {"per_channel": config.per_channel, "reduce_range": config.reduce_range}
    info: dict[str, Any] = {}
    alpha: float | str | None = config.alpha if config.smooth else None
    if config.smooth and config.alpha_scope == "layer":
        info.update(smooth_lm_per_group_(model, ids, config.layer_grid, linear=config.fold_linear,
                                         batch_size=config.batch_size, **sim))  # fmt: skip
        alpha = "per-group"
    else:
        maxima = activation_maxima(model, ids, batch_size=config.batch_size) if config.smooth else {}
        if config.smooth and config.alpha_grid:
            found = search_alpha(model, maxima, held_out[: config.search_windows], config.alpha_grid,
                                 linear=config.fold_linear, **sim)  # fmt: skip
            info["search"] = found["perplexity"]
            alpha = found["best_alpha"]
        if isinstance(alpha, float):
            info.update(smooth_lm_(model, maxima, alpha=alpha, linear=config.fold_linear))
        else:
            info.update(alpha=None, groups=0)
    units = wanted or _chosen_fallback(model, config, held_out, info, sim)
    fallback = [name for unit in units for name in unit]
    if fallback:
        info.update(fallback=fallback, fallback_units=["+".join(u) for u in units])
    model.slimtune_smoothquant = {  # type: ignore[assignment]
        "alpha": alpha,
        "mode": config.mode,
        "per_channel": config.per_channel,
        "reduce_range": config.reduce_range,
        "fallback": fallback,
        "calibrate": config.calibrate,
        "calibration_windows": ids[:STATIC_WINDOWS].clone() if config.mode == "static" else None,
    }
    return info


def _chosen_fallback(
    model: nn.Module, config: SmoothQuantConfig, held_out: torch.Tensor, info: dict[str, Any], sim: dict[str, Any]
) -> list[tuple[str, ...]]:
    """The units a count or ``auto`` keeps fp32: the top of the sensitivity ranking (``info`` gets the ranking
    and, for ``auto``, the search)."""
    fb = config.fallback
    if fb == 0 or isinstance(fb, tuple):
        return []
    ranked = rank_units(model, held_out[: config.fallback_windows], by=config.fallback_rank, **sim)
    info["fallback_rank"] = {"by": config.fallback_rank, "top": [["+".join(u), score] for u, score in ranked[:16]]}
    units = [u for u, _ in ranked]
    if fb == "auto":
        found = auto_fallback(model, units, held_out[: config.search_windows], budget=config.fallback_budget, **sim)
        info["fallback_auto"] = found
        return units[: found["n"]]
    return units[: int(fb)]
