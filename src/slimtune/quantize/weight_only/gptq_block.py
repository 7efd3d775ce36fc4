"""GPTQ's block algorithm on the one calibration pass (``models.blocks.calibration_pass``): one Hessian per target
layer, then the solver (``gptq.gptq``) layer by layer, with three options from the reference implementations:

- ``true_sequential``: a block's stages (q|k|v, o, gate|up, down) are quantized in forward order, each on the
  inputs that the already quantized stages produce (``models.blocks.compress_in_stages``).
- ``gptaq``: the fp32 model's own inputs x̃ of every layer are carried beside the quantized stream (one extra run of
  each block, still fp32, on the fp32 stream) so the solver also sees D = 2/n·Σ(x̃ − x)xᵀ and fits W·x̃ (GPTAQ).
  Every stage is then observed again with x̃ paired chunk by chunk.
- ``refit_scales``: least-squares group scales for the chosen codes (``refit.refit_scales``).
"""

from __future__ import annotations

import torch
from torch import nn

from slimtune.models.blocks import BlockContext, BlockInputs, compress_in_stages, linear_weight, observe_block
from slimtune.quantize.weight_only.api import store_
from slimtune.quantize.weight_only.config import GPTQConfig
from slimtune.quantize.weight_only.gptq import HessianStats, gptq
from slimtune.quantize.weight_only.refit import refit_scales


class GPTQ:
    """The block algorithm (see the module docstring)."""

    def __init__(self, config: GPTQConfig) -> None:
        self.config = config
        self.stats: dict[str, HessianStats] = {}
        self.fp_stream: BlockInputs | None = None  # gptaq: the fp32 model's inputs to the current block
        self.fp_inputs: dict[str, list[torch.Tensor]] = {}  # gptaq: x̃ of each target, per chunk
        self.seen: dict[str, int] = {}

    def observe(self, name: str, layer: nn.Module, x: torch.Tensor) -> None:
        x_fp = None
        if name in self.fp_inputs:
            j = self.seen.get(name, 0)
            x_fp, self.seen[name] = self.fp_inputs[name][j], j + 1
        self.stats.setdefault(name, HessianStats(x.shape[-1])).add(x, x_fp)

    def compress_block(self, ctx: BlockContext, targets: dict[str, nn.Module]) -> None:
        c = self.config
        if c.gptaq:
            self._capture_fp(ctx, targets)

            def forget(n: str) -> None:
                self.stats.pop(n, None)
                self.seen.pop(n, None)

            if c.true_sequential:
                compress_in_stages(ctx, targets, self, lambda t: self._quantize(ctx, t), forget, refresh_first=True)
            else:
                for n in targets:
                    forget(n)
                observe_block(ctx.block, ctx.inputs, targets, self)
                self._quantize(ctx, targets)
            self.fp_inputs, self.seen = {}, {}
        elif c.true_sequential:
            compress_in_stages(ctx, targets, self, lambda t: self._quantize(ctx, t), lambda n: self.stats.pop(n, None))
        else:
            self._quantize(ctx, targets)
        self.stats.clear()

    def _capture_fp(self, ctx: BlockContext, targets: dict[str, nn.Module]) -> None:
        """Run the still-fp32 block on the fp32 stream: keep each target's inputs and the next block's fp32 input."""
        stream = self.fp_stream if self.fp_stream is not None and ctx.index > 0 else ctx.inputs
        store = _Inputs()
        outs = observe_block(ctx.block, stream, targets, store)
        self.fp_inputs, self.seen = store.x, {}
        self.fp_stream = BlockInputs(outs, stream.kwargs)

    def _quantize(self, ctx: BlockContext, targets: dict[str, nn.Module]) -> None:
        c = self.config
        for name, layer in targets.items():
            stats = self.stats.pop(name)
            w = linear_weight(layer)
            zeros = w != 0  # a pruned layer keeps its zeros (mask-aware GPTQ)
            qw = gptq(w, stats.h, bits=c.bits, group_size=c.group_size, symmetric=c.symmetric,
                      damp=c.damp, block_size=c.block_size, act_order=c.act_order,
                      static_groups=c.static_groups, mse=c.mse, dxxt=stats.d, alpha=c.gptaq_alpha,
                      name=f"{ctx.name}.{name}", mask=None if bool(zeros.all()) else zeros)  # fmt: skip
            if c.refit_scales:
                qw = refit_scales(qw, w, stats.h)
            store_(layer, qw)


class _Inputs:
    """An ``observe`` that keeps each layer's inputs, chunk by chunk."""

    def __init__(self) -> None:
        self.x: dict[str, list[torch.Tensor]] = {}

    def observe(self, name: str, layer: nn.Module, x: torch.Tensor) -> None:
        self.x.setdefault(name, []).append(x)
