"""AWQ then GPTQ: AWQ's activation-aware channel scales are searched and folded first (``awq.AWQ.search``, exact in
fp32), then GPTQ quantizes the scaled weights with its error feedback instead of AWQ's plain rounding.

Both statistics come from the same calibration run of the fp32 block: mean |x| per input channel (AWQ) and the
Hessian H = 2·XXᵀ/n (GPTQ). Folding scale s into a layer's input columns divides its inputs by s, so its Hessian
becomes H / (s sᵀ) exactly; no second run is needed.
"""

from __future__ import annotations

import torch
from torch import nn

from slimtune.models.blocks import BlockContext, linear_weight
from slimtune.quantize.weight_only.awq import AWQ, apply_scale_, fold_groups
from slimtune.quantize.weight_only.config import AWQGPTQConfig
from slimtune.quantize.weight_only.gptq import HessianStats, gptq
from slimtune.quantize.weight_only.refit import refit_scales


class AWQGPTQ:
    """The block algorithm (see the module docstring)."""

    def __init__(self, config: AWQGPTQConfig) -> None:
        self.config = config
        self.awq = AWQ(bits=config.bits, group_size=config.group_size, symmetric=config.symmetric, grid=config.grid)
        self.hessians: dict[str, HessianStats] = {}

    def observe(self, name: str, layer: nn.Module, x: torch.Tensor) -> None:
        self.awq.observe(name, layer, x)
        self.hessians.setdefault(name, HessianStats(x.shape[-1])).add(x)

    def compress_block(self, ctx: BlockContext, targets: dict[str, nn.Module]) -> None:
        from slimtune.quantize.weight_only.api import store_

        c, block = self.config, ctx.block
        h = {n: s.h for n, s in self.hessians.items()}
        ref = ctx.inputs.run(block)
        for group in fold_groups(block):
            if all(n in targets and n in self.awq.stats for n in group.targets):
                s = self.awq.search(ctx, group, ref)
                apply_scale_(block, group, s)
                for n in group.targets:
                    h[n] = h[n] / torch.outer(s, s)
        for name, layer in targets.items():
            qw = gptq(linear_weight(layer), h[name], bits=c.bits, group_size=c.group_size, symmetric=c.symmetric,
                      damp=c.damp, block_size=c.block_size, act_order=c.act_order, static_groups=c.static_groups,
                      mse=c.mse, name=f"{ctx.name}.{name}")  # fmt: skip
            if c.refit_scales:
                qw = refit_scales(qw, linear_weight(layer), h[name])
            qw.method = "awq-gptq"
            store_(layer, qw)
        self.awq.stats, self.hessians = {}, {}
