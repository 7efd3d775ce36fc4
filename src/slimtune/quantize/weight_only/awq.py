"""AWQ (Lin et al.): protect the weights that meet large activations by scaling input channels before rounding.

For each group of layers that read the same input (q/k/v after the attention norm; gate/up after the MLP norm;
o after v; down after up — GPT-2: c_attn after ln_1, the attention c_proj after c_attn's value slice, c_fc after
ln_2), the scale is s = x̄^r, normalised by √(max·min), with r on a grid of ratios; each candidate fake-quantizes
W·s and divides by s, and the block's output error against the fp32 block on the first calibration batch picks r
(r = 0, s = 1, is plain RTN).
The winner is folded exactly: 1/s into the previous norm (weight and bias) or the previous Linear's output rows,
s into the layer's input columns, so the fp32 model computes the same function before rounding. Under
grouped-query attention, o's input channels follow v's KV heads, so their scales are shared per KV head.
With ``clip``, each group's range is then shrunk where that lowers the layer output error (``awq_clip``).
At the end the block is kept only if it beats plain RTN on the block output; otherwise RTN is used.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from slimtune.models.blocks import BlockContext, BlockInputs, linear_weight, set_linear_weight
from slimtune.quantize.weight_only.grid import rtn


@dataclass(frozen=True)
class FoldGroup:
    """Layers ``targets`` read the output of ``prev`` (a norm or a Linear; rows ``offset``.. when a slice)."""

    prev: str
    targets: tuple[str, ...]
    offset: int = 0
    kv_repeat: int = 1  # query heads per KV head, when prev is v and the target is o (GQA)
    head_dim: int = 1


def fold_groups(block: Any) -> list[FoldGroup]:
    """The scale-foldable groups of a Llama-family or GPT-2 decoder block (none for other layouts)."""
    if hasattr(block, "self_attn") and hasattr(block.self_attn, "q_proj"):
        attn, mlp = block.self_attn, block.mlp
        groups = [FoldGroup("input_layernorm", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"))]
        hd = int(linear_weight(attn.q_proj).shape[0]) // max(1, _heads(attn))
        kv = int(linear_weight(attn.v_proj).shape[0]) // hd
        heads = int(linear_weight(attn.o_proj).shape[1]) // hd
        groups.append(FoldGroup("self_attn.v_proj", ("self_attn.o_proj",), kv_repeat=heads // kv, head_dim=hd))
        if hasattr(mlp, "gate_proj"):
            groups.append(FoldGroup("post_attention_layernorm", ("mlp.gate_proj", "mlp.up_proj")))
            groups.append(FoldGroup("mlp.up_proj", ("mlp.down_proj",)))
        return groups
    if hasattr(block, "attn") and hasattr(block.attn, "c_attn"):
        width = int(linear_weight(block.attn.c_proj).shape[1])
        return [
            FoldGroup("ln_1", ("attn.c_attn",)),
            FoldGroup("attn.c_attn", ("attn.c_proj",), offset=2 * width),
            FoldGroup("ln_2", ("mlp.c_fc",)),
        ]
    return []


def _heads(attn: Any) -> int:
    for holder in (attn, getattr(attn, "config", None)):
        value = getattr(holder, "num_heads", None) or getattr(holder, "num_attention_heads", None)
        if value:
            return int(value)
    hd = int(getattr(attn, "head_dim", 0))
    return int(linear_weight(attn.q_proj).shape[0]) // hd


def _prev_scale(group: FoldGroup, s: torch.Tensor) -> torch.Tensor:
    """The scale of prev's output channels that yields ``s`` on the targets' inputs."""
    if group.kv_repeat == 1:
        return s
    return s.reshape(-1, group.kv_repeat, group.head_dim)[:, 0, :].reshape(-1)


def tie_to_prev(group: FoldGroup, s: torch.Tensor) -> torch.Tensor:
    """Make ``s`` realisable by prev: under GQA, one value per KV-head channel (the mean of its query heads)."""
    if group.kv_repeat == 1:
        return s
    kv = s.reshape(-1, group.kv_repeat, group.head_dim).mean(dim=1)
    return kv.repeat_interleave(group.kv_repeat, dim=0).reshape(-1)


def apply_scale_(block: nn.Module, group: FoldGroup, s: torch.Tensor) -> None:
    """Fold 1/s into prev and s into the targets' input columns; exact in fp32 arithmetic up to rounding."""
    prev = block.get_submodule(group.prev)
    ps = _prev_scale(group, s)
    rows = slice(group.offset, group.offset + ps.numel())
    if isinstance(prev, nn.Linear) or hasattr(prev, "nf"):
        w = linear_weight(prev).clone()
        w[rows] /= ps.unsqueeze(1)
        set_linear_weight(prev, w)
    else:
        prev.weight.data[rows] /= ps  # type: ignore[index, operator]
    bias = getattr(prev, "bias", None)
    if isinstance(bias, torch.Tensor):
        bias.data[rows] /= ps
    for name in group.targets:
        layer = block.get_submodule(name)
        set_linear_weight(layer, linear_weight(layer) * s.unsqueeze(0))


class AbsMeanStats:
    def __init__(self, width: int) -> None:
        self.total = torch.zeros(width, dtype=torch.float64)
        self.n = 0

    def add(self, x: torch.Tensor) -> None:
        self.total += x.abs().sum(dim=0).double()
        self.n += int(x.shape[0])

    def mean(self) -> torch.Tensor:
        return (self.total / max(1, self.n)).float()


def _mse(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return float(sum(((x - y) ** 2).sum() for x, y in zip(a, b)))


class AWQ:
    """The block algorithm (see the module docstring); the targets end up RTN-quantized on the scaled weights."""

    def __init__(self, *, bits: int, group_size: int, symmetric: bool, grid: int = 20, clip: bool = False) -> None:
        self.bits, self.group_size, self.symmetric, self.grid, self.clip = bits, group_size, symmetric, grid, clip
        self.stats: dict[str, AbsMeanStats] = {}

    def observe(self, name: str, layer: nn.Module, x: torch.Tensor) -> None:
        self.stats.setdefault(name, AbsMeanStats(x.shape[-1])).add(x)

    def _q(self, w: torch.Tensor) -> torch.Tensor:
        return rtn(w, bits=self.bits, group_size=self.group_size, symmetric=self.symmetric).dequantize()

    def search(self, ctx: BlockContext, group: FoldGroup, ref: list[torch.Tensor]) -> torch.Tensor:
        """The best scale of ``group`` on the ratio grid, by the block output error (others left fp32)."""
        block, sample = ctx.block, BlockInputs(ctx.inputs.hidden[:1], ctx.inputs.kwargs[:1])  # first batch only
        layers = {n: block.get_submodule(n) for n in group.targets}
        originals = {n: linear_weight(m).clone() for n, m in layers.items()}
        xbar = tie_to_prev(group, self.stats[group.targets[0]].mean().clamp_min(1e-8))
        best, best_err = torch.ones_like(xbar), float("inf")
        try:
            for k in range(self.grid):
                s = xbar.pow(k / self.grid)
                s = (s / (s.max() * s.min()).sqrt()).clamp_min(1e-4)
                for n, m in layers.items():
                    set_linear_weight(m, self._q(originals[n] * s.unsqueeze(0)) / s.unsqueeze(0))
                err = _mse(sample.run(block), ref[:1])
                if err < best_err:
                    best, best_err = s, err
        finally:
            for n, m in layers.items():
                set_linear_weight(m, originals[n])
        return best

    def compress_block(self, ctx: BlockContext, targets: dict[str, nn.Module]) -> None:
        from slimtune.quantize.weight_only.api import store_

        block = ctx.block
        saved = copy.deepcopy(block.state_dict())
        ref = ctx.inputs.run(block)
        for group in fold_groups(block):
            if all(n in targets and n in self.stats for n in group.targets):
                apply_scale_(block, group, self.search(ctx, group, ref))
        clips: dict[str, torch.Tensor] = {}
        if self.clip:
            from slimtune.quantize.weight_only.awq_clip import capture_inputs, clip_ratios, clippable

            sample = BlockInputs(ctx.inputs.hidden[:1], ctx.inputs.kwargs[:1])
            xs = capture_inputs(block, {n: m for n, m in targets.items() if clippable(n)}, sample)
            clips = {n: clip_ratios(linear_weight(targets[n]).float(), x, bits=self.bits, group_size=self.group_size,
                                    symmetric=self.symmetric) for n, x in xs.items()}  # fmt: skip
        awq = {
            n: rtn(linear_weight(m).float(), bits=self.bits, group_size=self.group_size, symmetric=self.symmetric,
                   method="awq", clip=clips.get(n))
            for n, m in targets.items()
        }  # fmt: skip
        for n, m in targets.items():
            set_linear_weight(m, awq[n].dequantize())
        awq_err = _mse(ctx.inputs.run(block), ref)
        scaled = copy.deepcopy(block.state_dict())
        block.load_state_dict(saved)
        plain = {n: rtn(linear_weight(m).float(), bits=self.bits, group_size=self.group_size,
                        symmetric=self.symmetric, method="awq") for n, m in targets.items()}  # fmt: skip
        for n, m in targets.items():
            set_linear_weight(m, plain[n].dequantize())
        if awq_err <= _mse(ctx.inputs.run(block), ref):
            block.load_state_dict(scaled)
            chosen = awq
        else:
            chosen = plain
        for n, m in targets.items():
            store_(m, chosen[n])
        self.stats = {}
