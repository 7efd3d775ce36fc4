"""Per-group α (``alpha_scope: layer``): each smoothing group of each block gets its own migration strength.

One block-by-block calibration pass (``models.blocks.calibration_pass``): the per-channel input maxima of every
group are gathered as for the global α; then, in ``compress_block``, the groups of the block are visited in order
and each tries every α of the grid and no smoothing, with the block's Linears W8A8-simulated (the groups already
decided applied), scored by the mean squared error of the block's output against its fp32 output on the captured
calibration inputs. The best is folded in (exact in fp32), so the next block sees the same fp32 activations.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from slimtune.models.blocks import BlockContext, calibration_pass, linear_weight, target_layers
from slimtune.models.lm_layers import decoder_layers
from slimtune.quantize.smoothquant.simulate import simulated_w8a8
from slimtune.quantize.smoothquant.smooth import _ActMax, norm_groups, smoothing_scale
from slimtune.quantize.weight_only.awq import apply_scale_, tie_to_prev


def _error(outs: list[torch.Tensor], ref: list[torch.Tensor]) -> float:
    num = sum(float((o.float() - r.float()).pow(2).sum()) for o, r in zip(outs, ref))
    return num / max(1, sum(r.numel() for r in ref))


class _GroupAlpha(_ActMax):
    """``_ActMax`` whose ``compress_block`` also chooses and folds each group's α (see the module docstring)."""

    def __init__(self, grid: Sequence[float], *, linear: bool, per_channel: bool, reduce_range: bool) -> None:
        super().__init__()
        self.grid, self.linear = [float(a) for a in grid], linear
        self.per_channel, self.reduce_range = per_channel, reduce_range
        self.chosen: dict[str, float | None] = {}
        self.errors: dict[str, dict[str, float]] = {}
        self.ratios: list[tuple[float, float]] = []

    def compress_block(self, ctx: BlockContext, targets: dict[str, nn.Module]) -> None:
        super().compress_block(ctx, targets)
        block = ctx.block
        layers = list(target_layers(block).values())
        with torch.no_grad():
            ref = ctx.inputs.run(block)
            for group in norm_groups(block, linear=self.linear):
                act = self.maxima.get((ctx.index, group.targets[0]))
                if act is None:
                    continue
                act = act.float()
                weights = [linear_weight(block.get_submodule(t)).float() for t in group.targets]
                saved = {k: v.clone() for k, v in block.state_dict().items()}
                scores: dict[str, float] = {}
                for alpha in [None, *self.grid]:
                    if alpha is not None:
                        s = tie_to_prev(group, smoothing_scale(act, weights, alpha))
                        apply_scale_(block, group, s.to(weights[0].dtype))
                    with simulated_w8a8(block, layers=layers, per_channel=self.per_channel,
                                        reduce_range=self.reduce_range):  # fmt: skip
                        scores["none" if alpha is None else f"{alpha:g}"] = _error(ctx.inputs.run(block), ref)
                    block.load_state_dict(saved)
                best = min(scores, key=lambda k: scores[k])
                key = f"{ctx.index}:{group.prev}"
                self.errors[key] = scores
                self.chosen[key] = None if best == "none" else float(best)
                if best != "none":
                    s = tie_to_prev(group, smoothing_scale(act, weights, float(best)))
                    apply_scale_(block, group, s.to(weights[0].dtype))
                    smoothed = act / s
                    self.ratios.append((float(act.max() / act.clamp_min(1e-8).median()),
                                        float(smoothed.max() / smoothed.clamp_min(1e-8).median())))  # fmt: skip


def smooth_lm_per_group_(
    model: nn.Module,
    calibration: torch.Tensor,
    grid: Sequence[float],
    *,
    linear: bool = True,
    per_channel: bool = True,
    reduce_range: bool = False,
    batch_size: int = 8,
) -> dict[str, Any]:
    """Smooth ``model`` in place with one α (or none) per group (see the module docstring); returns the α of every
    group (``"block:prev"`` keys), their block-output errors, and the outlier ratios as ``smooth_lm_`` does."""
    firsts = {g.targets[0] for block in decoder_layers(model) for g in norm_groups(block, linear=True)}
    algo = _GroupAlpha(grid, linear=linear, per_channel=per_channel, reduce_range=reduce_range)
    calibration_pass(model, calibration, algo, batch_size=batch_size, progress=False,
                     select=lambda name, _: name in firsts)  # fmt: skip
    used = [a for a in algo.chosen.values() if a is not None]
    return {
        "alpha": "per-group",
        "alphas": algo.chosen,
        "block_errors": algo.errors,
        "groups": len(used),
        "alpha_mean": sum(used) / len(used) if used else None,
        "outlier_ratio_before": max((r[0] for r in algo.ratios), default=0.0),
        "outlier_ratio_after": max((r[1] for r in algo.ratios), default=0.0),
    }
