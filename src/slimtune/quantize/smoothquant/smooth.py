"""SmoothQuant's smoothing (Xiao et al.): migrate activation outliers into the weights, exactly in fp32.

For each group of Linears that read a norm's output (Llama: q/k/v after ``input_layernorm``, gate/up after
``post_attention_layernorm``; GPT-2: ``c_attn`` after ``ln_1``, ``c_fc`` after ``ln_2``), with X the calibration
activations and W the group's weights stacked by output rows::

    s_j = max|X_j|^α / max|W_j|^(1−α)      (clamped >= 1e-5, as mit-han-lab/smoothquant's ``smooth_ln_fcs``)

then the norm's weight (and bias) is divided by s and every Linear's input column j multiplied by s_j, so the fp32
model computes the same function (tested) while X/s has flatter channels for int8. Like the reference, o_proj and
down_proj (inputs not produced by a norm) are left as they are. The per-channel maxima come from the shared
block-by-block calibration pass (``models.blocks.calibration_pass``), once; any α is then applied from them
(``smooth_lm_``), which is what the α search does.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from slimtune.errors import UnsupportedModelError
from slimtune.models.blocks import BlockContext, calibration_pass, linear_weight
from slimtune.models.lm_layers import decoder_layers
from slimtune.quantize.weight_only.awq import FoldGroup, apply_scale_, fold_groups, tie_to_prev


def norm_groups(block: nn.Module, *, linear: bool = False) -> list[FoldGroup]:
    """The groups of ``block`` whose previous op is a norm (the ones the reference smooths); with ``linear`` also
    those after a Linear where the fold is exact (v → o, up → down; GPT-2's c_attn value slice → c_proj)."""
    out = []
    for group in fold_groups(block):
        prev = block.get_submodule(group.prev)
        if linear or not (isinstance(prev, nn.Linear) or hasattr(prev, "nf")):
            out.append(group)
    return out


class _ActMax:
    """Per-input-channel max |x| of the first target of every norm group, block by block (no compression)."""

    def __init__(self) -> None:
        self.current: dict[str, torch.Tensor] = {}
        self.maxima: dict[tuple[int, str], torch.Tensor] = {}

    def observe(self, name: str, layer: nn.Module, x: torch.Tensor) -> None:
        m = x.abs().amax(dim=0)
        old = self.current.get(name)
        self.current[name] = m if old is None else torch.maximum(old, m)

    def compress_block(self, ctx: BlockContext, targets: dict[str, nn.Module]) -> None:
        for name, m in self.current.items():
            self.maxima[(ctx.index, name)] = m
        self.current = {}


def activation_maxima(
    model: nn.Module, calibration: torch.Tensor, *, batch_size: int = 8, progress: bool = False
) -> dict[tuple[int, str], torch.Tensor]:
    """Per-channel max |x| at the input of each foldable group, keyed by (block index, first target name)."""
    layers = decoder_layers(model)
    firsts = {g.targets[0] for block in layers for g in norm_groups(block, linear=True)}
    if not firsts:
        raise UnsupportedModelError(
            f"{type(model).__name__}'s decoder blocks have no norm → Linear groups SmoothQuant can smooth "
            "(Llama-family and GPT-2 layouts are supported)"
        )
    stats = _ActMax()
    calibration_pass(model, calibration, stats, batch_size=batch_size, progress=progress,
                     select=lambda name, _: name in firsts)  # fmt: skip
    return stats.maxima


def smoothing_scale(act_max: torch.Tensor, weights: list[torch.Tensor], alpha: float) -> torch.Tensor:
    """s = max|X|^α / max|W|^(1−α) per input channel (``weights``: (out, in) each, stacked by rows)."""
    w_max = torch.cat([w.abs() for w in weights], dim=0).amax(dim=0).float()
    a = act_max.float().clamp_min(1e-5)
    return (a.pow(alpha) / w_max.clamp_min(1e-5).pow(1.0 - alpha)).clamp_min(1e-5)


def smooth_lm_(
    model: nn.Module, maxima: dict[tuple[int, str], torch.Tensor], *, alpha: float, linear: bool = False
) -> dict[str, Any]:
    """Fold the smoothing scales of strength ``alpha`` into ``model`` in place (see the module docstring; with
    ``linear`` also into v → o and up → down); returns the groups smoothed and the largest activation channel
    ratio (max / median) before and after."""
    before, after, count = [], [], 0
    with torch.no_grad():
        for i, block in enumerate(decoder_layers(model)):
            for group in norm_groups(block, linear=linear):
                key = (i, group.targets[0])
                if key not in maxima:
                    continue
                weights = [linear_weight(block.get_submodule(t)).float() for t in group.targets]
                act = maxima[key].float()
                s = tie_to_prev(group, smoothing_scale(act, weights, alpha))  # GQA: one scale per KV channel
                apply_scale_(block, group, s.to(weights[0].dtype))
                before.append(float(act.max() / act.clamp_min(1e-8).median()))
                smoothed = act / s
                after.append(float(smoothed.max() / smoothed.clamp_min(1e-8).median()))
                count += 1
    return {
        "alpha": alpha,
        "groups": count,
        "outlier_ratio_before": max(before, default=0.0),
        "outlier_ratio_after": max(after, default=0.0),
    }
