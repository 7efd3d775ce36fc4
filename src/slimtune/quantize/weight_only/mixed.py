"""Mixed precision under a bit budget: keep the most sensitive Linears at 8 bits, the rest at the method's bits.

``quantize_lm_mixed_(model, config, BitsBudgetConfig(bits_budget=4.5), calibration=ids)``:

1. Sensitivity (``sensitivity.layer_sensitivity``): the output KL when only that Linear is rounded at
   ``config.bits``, on ``windows`` calibration windows.
2. Plan (``plan_bits``): every decoder-block Linear starts at ``config.bits``; layers are promoted to ``high_bits``
   in order of sensitivity per extra stored bit (greedy knapsack) while the weight-averaged **stored** bits stay
   within ``bits_budget``. Stored bits count what MatMulNBits writes (``candidates.stored_bits``): the code
   container (3-bit codes take 4 on disk) plus one fp32 scale per group and, asymmetric, a zero point per group —
   int4 g128 symmetric is 4.25 bits per weight, int8 g128 symmetric 8.25.
3. Apply: the promoted layers are held out of the method's pass (they stay fp32 while GPTQ/AWQ calibrate the
   others, so later layers see their fp32 outputs; AWQ folds scales into them exactly), then rounded with RTN at
   ``high_bits`` on the same group grid (at 8 bits RTN is within +0.5% perplexity of fp32 on SmolLM2).
The export writes 8-bit MatMulNBits nodes for them (``export.lm_nbits``; ``precision: mixed``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from slimtune.config import Config, check
from slimtune.errors import ConfigError
from slimtune.models.blocks import linear_weight
from slimtune.quantize.weight_only.api import block_targets, calibration_ids, quantize_lm_, store_
from slimtune.quantize.weight_only.candidates import stored_bits
from slimtune.quantize.weight_only.config import BITS, WeightOnlyConfig
from slimtune.quantize.weight_only.grid import rtn


@dataclass(frozen=True, kw_only=True)
class BitsBudgetConfig(Config):
    """``bits_budget``: average stored bits per weight over the decoder-block Linears (see the module docstring);
    ``high_bits``: the width of the promoted layers; ``windows``: calibration windows the sensitivity is
    measured on; ``granularity``: ``layer`` (each Linear measured and promoted on its own) or ``block`` (a decoder
    block's Linears together: one forward pass per block, for larger models)."""

    bits_budget: float
    high_bits: int = 8
    windows: int = 4
    granularity: Literal["layer", "block"] = "layer"

    def __post_init__(self) -> None:
        check(self.high_bits in BITS, f"high_bits must be one of 2, 3, 4, 8, got {self.high_bits}")
        check(self.bits_budget > 0, f"bits_budget must be > 0 (e.g. 4.5), got {self.bits_budget}")
        check(self.windows >= 1, f"windows must be >= 1, got {self.windows}")


def _bits_of(layer: nn.Module, bits: int, config: WeightOnlyConfig) -> float:
    return stored_bits(bits, config.group_size, symmetric=config.symmetric,
                       in_features=int(linear_weight(layer).shape[1]))  # fmt: skip


def units_of(layers: dict[str, nn.Module], granularity: str) -> dict[str, list[str]]:
    """Unit name → its layers: each Linear alone, or grouped by decoder block (``model.layers.3``)."""
    if granularity == "layer":
        return {n: [n] for n in layers}
    out: dict[str, list[str]] = {}
    for name in layers:
        parts = name.split(".")
        idx = next(i for i, p in enumerate(parts) if p.isdigit())
        out.setdefault(".".join(parts[: idx + 1]), []).append(name)
    return out


def plan_bits(
    layers: dict[str, nn.Module],
    sensitivity: dict[str, float],
    config: WeightOnlyConfig,
    budget: BitsBudgetConfig,
    *,
    units: dict[str, list[str]] | None = None,
) -> dict[str, Any]:
    """The greedy knapsack plan (see the module docstring) over ``units`` (default: each layer alone), whose
    ``sensitivity`` is given: ``{"bits": {layer: bits}, "average_bits", "layers_per_bits", "budget"}``.
    Raises ``ConfigError`` when even all-low exceeds the budget."""
    units = units if units is not None else {n: [n] for n in layers}
    sizes = {n: int(linear_weight(m).numel()) for n, m in layers.items()}
    total = sum(sizes.values())
    low = {n: _bits_of(m, config.bits, config) * sizes[n] for n, m in layers.items()}
    high = {n: _bits_of(m, budget.high_bits, config) * sizes[n] for n, m in layers.items()}
    used = sum(low.values())
    if used > budget.bits_budget * total + 1e-9:
        raise ConfigError(
            f"bits_budget {budget.bits_budget} is below int{config.bits} g{config.group_size}'s own "
            f"{used / total:.3f} stored bits per weight; raise bits_budget or lower bits"
        )
    plan = {n: config.bits for n in layers}
    extra = {u: sum(high[n] - low[n] for n in names) for u, names in units.items()}
    order = sorted(units, key=lambda u: sensitivity.get(u, 0.0) / max(extra[u], 1e-9), reverse=True)
    for unit in order:
        if extra[unit] <= 0 or sensitivity.get(unit, 0.0) <= 0:
            continue
        if used + extra[unit] <= budget.bits_budget * total + 1e-9:
            plan.update({n: budget.high_bits for n in units[unit]})
            used += extra[unit]
    counts: dict[str, int] = {}
    for b in plan.values():
        counts[f"int{b}"] = counts.get(f"int{b}", 0) + 1
    return {"bits": plan, "average_bits": used / total, "layers_per_bits": counts, "budget": budget.bits_budget}


class _Held(nn.Module):
    """A Linear held out of a weight-only pass: same weight and bias objects, same function, but not an
    ``nn.Linear`` (so the pass does not target it) while still foldable as a previous op (``nf`` marker)."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.weight = linear.weight
        self.bias = linear.bias
        self.nf = int(linear.weight.shape[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


@contextmanager
def held_out(model: nn.Module, names: list[str]) -> Iterator[None]:
    """Within the block, the Linears ``names`` (qualified) are invisible to ``block_targets`` / the calibration
    pass and compute in fp32."""
    swapped: list[tuple[nn.Module, str, nn.Module]] = []
    try:
        for name in names:
            parent_name, _, leaf = name.rpartition(".")
            parent = model.get_submodule(parent_name)
            original = getattr(parent, leaf)
            if not isinstance(original, nn.Linear):
                raise ConfigError(f"layer '{name}' is not an nn.Linear; mixed precision holds out Linears only")
            setattr(parent, leaf, _Held(original))
            swapped.append((parent, leaf, original))
        yield
    finally:
        for parent, leaf, original in reversed(swapped):
            setattr(parent, leaf, original)


def quantize_lm_mixed_(
    model: nn.Module,
    config: WeightOnlyConfig,
    budget: BitsBudgetConfig,
    *,
    calibration: torch.Tensor | None = None,
    sensitivity_windows: torch.Tensor | None = None,
) -> dict[str, Any]:
    """Quantize ``model`` in place with ``config`` except the layers the plan promotes to ``budget.high_bits``
    (see the module docstring); returns the plan with each layer's sensitivity. ``sensitivity_windows``: token
    ids to measure sensitivity on (default: the first ``budget.windows`` calibration windows)."""
    from slimtune.quantize.weight_only.api import check_model
    from slimtune.quantize.weight_only.sensitivity import layer_sensitivity

    layers = block_targets(model)
    check_model(model, config, layers=layers)  # already quantized / group size: before any measurement
    windows = sensitivity_windows
    if windows is None:
        windows = calibration_ids(calibration, samples=budget.windows)
    units = units_of(layers, budget.granularity)
    sens = layer_sensitivity(model, windows[: budget.windows], bits=config.bits, group_size=config.group_size,
                             symmetric=config.symmetric, layers=layers, units=units)  # fmt: skip
    plan = plan_bits(layers, sens, config, budget, units=units)
    promoted = [n for n, b in plan["bits"].items() if b != config.bits]
    with held_out(model, promoted):
        quantize_lm_(model, config, calibration=calibration)
    with torch.no_grad():
        for name in promoted:
            layer = model.get_submodule(name)
            w = linear_weight(layer).float()
            store_(layer, rtn(w, bits=budget.high_bits, group_size=config.group_size, symmetric=config.symmetric))
    plan["sensitivity"] = sens
    return plan
