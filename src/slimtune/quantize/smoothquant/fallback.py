"""Accuracy-driven fp32 fallback for W8A8: the most int8-sensitive Linears stay fp32 in the ONNX Runtime file.

The unit is a set of Linears that read one activation tensor (Llama: q/k/v, o, gate/up, down; GPT-2: c_attn,
attn.c_proj, c_fc, mlp.c_proj; and the lm_head): ONNX Runtime quantizes that tensor once for all of them, and the
fused export computes them as one MatMul. Units are ranked by ``kl`` — the mean KL divergence of the output
distribution from the fp32 model's on validation windows when that unit alone is W8A8-simulated — or by
``outlier``, the max/median ratio of its input channels' max |x| (after smoothing). ``auto`` keeps the smallest
N top-ranked units fp32 whose W8A8-simulated perplexity is within the budget of fp32's (N doubled, then bisected).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from slimtune._registry import did_you_mean
from slimtune.errors import ConfigError
from slimtune.models.blocks import target_layers
from slimtune.models.lm_layers import decoder_layers
from slimtune.quantize.smoothquant.simulate import sim_targets, simulated_w8a8
from slimtune.quantize.smoothquant.smooth import norm_groups

Unit = tuple[str, ...]


def input_units(model: nn.Module) -> list[Unit]:
    """Every W8A8-quantized Linear, by qualified name, grouped by the activation tensor it reads."""
    names = {id(m): n for n, m in model.named_modules()}
    units: list[Unit] = []
    for block in decoder_layers(model):
        prefix = names[id(block)]
        grouped: set[str] = set()
        for group in norm_groups(block, linear=True):
            units.append(tuple(f"{prefix}.{t}" for t in group.targets))
            grouped.update(group.targets)
        units += [(f"{prefix}.{n}",) for n in target_layers(block) if n not in grouped]
    blocks = {id(m) for m in decoder_layers(model)}
    for m in sim_targets(model):  # the lm_head (block Linears were listed above)
        name = names[id(m)]
        if not any(name.startswith(f"{names[b]}.") for b in blocks if b in names):
            units.append((name,))
    return units


def resolve_names(model: nn.Module, wanted: tuple[str, ...]) -> list[Unit]:
    """The units holding the Linears named in ``wanted``; an unknown name is one ``ConfigError`` line."""
    units = input_units(model)
    owner = {n: u for u in units for n in u}
    out: list[Unit] = []
    for name in wanted:
        if name not in owner:
            listed = sorted(owner)
            raise ConfigError(
                f"fallback: '{name}' is not a quantized Linear of {type(model).__name__}{did_you_mean(name, listed)}; "
                f"names look like '{units[0][0]}' or '{units[-1][0]}' ({len(listed)} Linears)"
            )
        if owner[name] not in out:
            out.append(owner[name])
    return out


def _modules(model: nn.Module, units: list[Unit]) -> list[nn.Module]:
    return [model.get_submodule(n) for u in units for n in u]


def _logits(model: nn.Module, windows: torch.Tensor) -> torch.Tensor:
    return torch.cat([model(windows[i : i + 2]).logits.float() for i in range(0, len(windows), 2)])


def rank_units(model: nn.Module, windows: torch.Tensor, *, by: str = "kl", **sim: Any) -> list[tuple[Unit, float]]:
    """Units with their sensitivity, most sensitive first (see the module docstring)."""
    units = input_units(model)
    scores: list[float] = []
    with torch.inference_mode():
        if by == "kl":
            ref = F.log_softmax(_logits(model, windows), dim=-1)
            for unit in units:
                with simulated_w8a8(model, layers=_modules(model, [unit]), **sim):
                    out = F.log_softmax(_logits(model, windows), dim=-1)
                scores.append(float(F.kl_div(out, ref, log_target=True, reduction="none").sum(-1).mean()))
        else:
            maxima: dict[int, torch.Tensor] = {}

            def hook(i: int) -> Any:
                def observe(_m: nn.Module, args: tuple[Any, ...]) -> None:
                    m = args[0].detach().abs().flatten(0, -2).amax(dim=0).float()
                    maxima[i] = m if i not in maxima else torch.maximum(maxima[i], m)

                return observe

            handles = [model.get_submodule(u[0]).register_forward_pre_hook(hook(i)) for i, u in enumerate(units)]
            try:
                _logits(model, windows)
            finally:
                for h in handles:
                    h.remove()
            scores = [float(maxima[i].max() / maxima[i].clamp_min(1e-8).median()) for i in range(len(units))]
    order = sorted(range(len(units)), key=lambda i: -scores[i])
    return [(units[i], scores[i]) for i in order]


def auto_fallback(
    model: nn.Module, ranked: list[Unit], windows: torch.Tensor, *, budget: float, **sim: Any
) -> dict[str, Any]:
    """The smallest N such that keeping ``ranked[:N]`` fp32 brings the W8A8-simulated perplexity on ``windows``
    within ``(1 + budget)`` × fp32's; returns N, the target and every N tried with its perplexity."""
    from slimtune.evaluate.lm import perplexity

    fp32 = float(perplexity(model, windows, batch_size=2)["perplexity"])
    target = fp32 * (1.0 + budget)
    tried: dict[int, float] = {}

    def ppl(n: int) -> float:
        if n not in tried:
            with simulated_w8a8(model, skip=_modules(model, ranked[:n]), **sim):
                tried[n] = float(perplexity(model, windows, batch_size=2)["perplexity"])
        return tried[n]

    lo, hi = -1, 0  # ppl(lo) misses the target (lo = -1: nothing tried), ppl(hi) is the candidate
    while hi < len(ranked) and ppl(hi) > target:
        lo, hi = hi, min(len(ranked), max(1, 2 * hi))
    if hi == len(ranked):
        tried.setdefault(hi, fp32)  # everything fp32: the fp32 model itself
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ppl(mid) <= target else (mid, hi)
    return {"n": hi, "fp32_perplexity": fp32, "target": target, "tried": dict(sorted(tried.items()))}
