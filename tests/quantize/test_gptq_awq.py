"""GPTQ beats RTN on a real layer fed real text; AWQ's scale folding is exact in fp32, and its grid (which holds
s = 1) is never worse than RTN on a block's output (Llama with GQA, GPT-2)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from slimtune.models.blocks import BlockContext, calibration_pass, capture_block0, linear_weight
from slimtune.quantize.weight_only import AWQConfig, RTNConfig, quantize_lm_
from slimtune.quantize.weight_only.awq import apply_scale_, fold_groups, tie_to_prev
from slimtune.quantize.weight_only.gptq import HessianStats, gptq
from slimtune.quantize.weight_only.grid import rtn
from slimtune.testing.tiny_lm import tiny_gpt2, tiny_llama

TEXT = (
    "Our revels now are ended. These our actors, as I foretold you, were all spirits and are melted into air, "
    "into thin air: and, like the baseless fabric of this vision, the cloud-capp'd towers, the gorgeous palaces, "
    "the solemn temples, the great globe itself, yea, all which it inherit, shall dissolve and, like this "
    "insubstantial pageant faded, leave not a rack behind. We are such stuff as dreams are made on, and our "
    "little life is rounded with a sleep. Full fathom five thy father lies; of his bones are coral made."
)


def text_ids(n: int = 8, length: int = 48) -> torch.Tensor:
    data = torch.tensor(list(TEXT.encode()), dtype=torch.long)
    starts = torch.linspace(0, len(data) - length - 1, n).long()
    return torch.stack([data[s : s + length] for s in starts])


class Collect:
    def __init__(self) -> None:
        self.x: dict[tuple[int, str], list[torch.Tensor]] = {}
        self.block = 0

    def observe(self, name: str, layer: nn.Module, x: torch.Tensor) -> None:
        self.x.setdefault((self.block, name), []).append(x)

    def compress_block(self, ctx: BlockContext, targets: dict[str, nn.Module]) -> None:
        self.block += 1


def test_gptq_output_error_is_below_rtn_on_real_layers() -> None:
    model = tiny_llama(hidden=128)
    rec = Collect()
    calibration_pass(model, text_ids(), rec, progress=False)
    for key in ((1, "self_attn.q_proj"), (1, "mlp.down_proj"), (0, "self_attn.o_proj")):
        x = torch.cat(rec.x[key])
        w = linear_weight(model.model.layers[key[0]].get_submodule(key[1])).float()
        stats = HessianStats(x.shape[1])
        stats.add(x)
        for group, act_order in ((32, False), (-1, True)):
            r = rtn(w, bits=4, group_size=group, symmetric=True).dequantize()
            g = gptq(w, stats.h, bits=4, group_size=group, symmetric=True, act_order=act_order).dequantize()
            err_r = float(((x @ (w - r).t()) ** 2).sum())
            err_g = float(((x @ (w - g).t()) ** 2).sum())
            assert err_g < 0.9 * err_r, (key, group, err_g, err_r)


def test_awq_scale_folding_keeps_the_fp32_model_output() -> None:
    ids = text_ids(4, 24)
    for model in (tiny_llama(), tiny_gpt2()):
        with torch.no_grad():
            before = model(ids).logits
        layers = model.model.layers if hasattr(model, "model") else model.transformer.h
        gen = torch.Generator().manual_seed(0)
        for block in layers:
            groups = fold_groups(block)
            assert len(groups) == (4 if hasattr(model, "model") else 3)
            for group in groups:
                width = int(linear_weight(block.get_submodule(group.targets[0])).shape[1])
                s = tie_to_prev(group, torch.rand(width, generator=gen) * 4 + 0.25)
                apply_scale_(block, group, s)
        with torch.no_grad():
            torch.testing.assert_close(model(ids).logits, before, rtol=1e-4, atol=1e-4)
        if hasattr(model, "model"):  # GQA: o's 4 heads read v's 2 KV heads, so their scales come in pairs
            assert [g.kv_repeat for g in fold_groups(layers[0])] == [1, 2, 1, 1]


def _block0_error(model: nn.Module, base: nn.Module, ids: torch.Tensor) -> float:
    with torch.no_grad():
        inputs = capture_block0(base, ids, batch_size=8)
        layers = lambda m: m.model.layers if hasattr(m, "model") else m.transformer.h  # noqa: E731
        ref, got = inputs.run(layers(base)[0]), inputs.run(layers(model)[0])
    return float(sum(((a - b) ** 2).sum() for a, b in zip(ref, got)))


def test_awq_is_never_worse_than_rtn_on_the_block_output() -> None:
    ids = text_ids()
    for make in (tiny_llama, tiny_gpt2):
        base = make()
        for bits, group in ((4, 32), (3, 64), (8, -1)):
            awq, plain = copy.deepcopy(base), copy.deepcopy(base)
            quantize_lm_(awq, AWQConfig(bits=bits, group_size=group, samples=8, grid=10), calibration=ids)
            quantize_lm_(plain, RTNConfig(bits=bits, group_size=group))
            assert _block0_error(awq, base, ids) <= _block0_error(plain, base, ids) * (1 + 1e-5)


def test_awq_clip_search_never_raises_a_group_error_and_clips_some() -> None:
    from slimtune.quantize.weight_only.awq_clip import clip_ratios, clippable, group_errors

    model = tiny_llama(hidden=128)
    rec = Collect()
    calibration_pass(model, text_ids(), rec, progress=False)
    x = torch.cat(rec.x[(1, "mlp.down_proj")])
    w = linear_weight(model.model.layers[1].mlp.down_proj).float()
    for bits in (3, 4):
        ratios = clip_ratios(w, x, bits=bits, group_size=32, symmetric=True)
        assert bool((ratios <= 1).all()) and bool((ratios >= 0.5).all()) and bool((ratios < 1).any())
        plain = rtn(w, bits=bits, group_size=32, symmetric=True).dequantize()
        clipped = rtn(w, bits=bits, group_size=32, symmetric=True, clip=ratios).dequantize()
        assert bool((group_errors(w, clipped, x, 32) <= group_errors(w, plain, x, 32) + 1e-6).all())
    assert not clippable("self_attn.q_proj") and not clippable("attn.c_attn") and clippable("mlp.down_proj")
    ids = text_ids()
    for make in (tiny_llama, tiny_gpt2):
        base = make()
        awq, plain_model = copy.deepcopy(base), copy.deepcopy(base)
        quantize_lm_(awq, AWQConfig(bits=3, group_size=32, samples=8, grid=5, clip=True), calibration=ids)
        quantize_lm_(plain_model, RTNConfig(bits=3, group_size=32))
        assert _block0_error(awq, base, ids) <= _block0_error(plain_model, base, ids) * (1 + 1e-5)
