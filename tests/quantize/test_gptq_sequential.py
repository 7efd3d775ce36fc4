"""GPTQ's true-sequential mode: a block's stages (q|k|v, o, gate|up, down) are found from the forward order, and
each stage's Hessian is collected on the outputs of the stages before it once they are quantized."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch

from slimtune.models.blocks import capture_block0, sequential_stages, target_layers
from slimtune.quantize.weight_only import GPTQConfig, quantize_lm_
from slimtune.quantize.weight_only import gptq_block as wo_methods
from slimtune.quantize.weight_only.gptq import HessianStats
from slimtune.testing.tiny_lm import tiny_gpt2, tiny_llama

from .test_gptq_awq import text_ids


def _stages(model: Any) -> list[list[str]]:
    block = model.model.layers[0] if hasattr(model, "model") else model.transformer.h[0]
    inputs = capture_block0(model, text_ids(2), batch_size=2)
    return sequential_stages(block, inputs, target_layers(block))


def test_stages_follow_the_forward_and_group_layers_reading_one_input() -> None:
    llama = _stages(tiny_llama(hidden=64))
    assert [sorted(s) for s in llama] == [
        ["self_attn.k_proj", "self_attn.q_proj", "self_attn.v_proj"],
        ["self_attn.o_proj"],
        ["mlp.gate_proj", "mlp.up_proj"],
        ["mlp.down_proj"],
    ]
    assert _stages(tiny_gpt2()) == [["attn.c_attn"], ["attn.c_proj"], ["mlp.c_fc"], ["mlp.c_proj"]]


_GPTQ = wo_methods.gptq


def _hessians(model: Any, ids: torch.Tensor, monkeypatch: pytest.MonkeyPatch, **options: Any) -> dict[str, Any]:
    seen: dict[str, torch.Tensor] = {}

    def spy(w: torch.Tensor, h: torch.Tensor, **kw: Any) -> Any:
        seen[kw["name"]] = h.clone()
        return _GPTQ(w, h, **kw)

    monkeypatch.setattr(wo_methods, "gptq", spy)
    quantize_lm_(model, GPTQConfig(bits=4, group_size=32, samples=len(ids), batch_size=4, **options), calibration=ids)
    return seen


def _input_hessian(model: Any, ids: torch.Tensor, layer: torch.nn.Module) -> torch.Tensor:
    stats = HessianStats(layer.in_features)
    model.eval()
    handle = layer.register_forward_pre_hook(lambda _m, args: stats.add(args[0].detach()))
    with torch.no_grad():
        for chunk in ids.split(4):
            model(input_ids=chunk, use_cache=False)
    handle.remove()
    return stats.h


def test_true_sequential_hessians_come_from_the_quantized_earlier_stages(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    fp32, ids = tiny_llama(hidden=64), text_ids(8)
    seq = copy.deepcopy(fp32)
    h_seq = _hessians(seq, ids, monkeypatch, true_sequential=True, gptaq=False)
    h_one = _hessians(copy.deepcopy(fp32), ids, monkeypatch, true_sequential=False, gptaq=False)
    for name in ("self_attn.o_proj", "mlp.down_proj"):
        key = f"layers.0.{name}"
        # the final model's earlier stages are quantized, and a layer's own weight never changes its input
        expected = _input_hessian(seq, ids, seq.model.layers[0].get_submodule(name))
        assert torch.allclose(h_seq[key], expected, rtol=1e-4, atol=1e-6), name
        assert not torch.allclose(h_one[key], expected, rtol=1e-3, atol=1e-5), name
        assert torch.allclose(h_one[key], _input_hessian(fp32, ids, fp32.model.layers[0].get_submodule(name)))
    # the first stage reads the block input, which both modes see unchanged in block 0
    assert torch.allclose(h_seq["layers.0.self_attn.q_proj"], h_one["layers.0.self_attn.q_proj"])


def test_refit_scales_keeps_codes_and_lowers_the_output_error_of_a_real_layer() -> None:
    from slimtune.quantize.weight_only.gptq import gptq
    from slimtune.quantize.weight_only.grid import rtn
    from slimtune.quantize.weight_only.refit import refit_scales

    from .test_gptq_quality import _real_layer

    w, x = _real_layer()
    stats = HessianStats(x.shape[1])
    stats.add(x)

    def err(q: torch.Tensor) -> float:
        return float(((x @ (w - q).t()) ** 2).sum())

    for bits, group, sym in ((4, 32, True), (3, 64, False), (3, 48, False)):
        for qw in (rtn(w, bits=bits, group_size=group, symmetric=sym),
                   gptq(w, stats.h, bits=bits, group_size=group, symmetric=sym, act_order=True, mse=True)):  # fmt: skip
            fit = refit_scales(qw, w, stats.h)
            assert torch.equal(fit.codes, qw.codes) and torch.equal(fit.zeros, qw.zeros)
            assert err(fit.dequantize()) < 0.995 * err(qw.dequantize()), (bits, group, qw.method)
            rows = ((w - fit.dequantize()) @ stats.h * (w - fit.dequantize())).sum(1)
            before = ((w - qw.dequantize()) @ stats.h * (w - qw.dequantize())).sum(1)
            assert bool((rows <= before * (1 + 1e-5) + 1e-6).all())  # no row gets worse


def test_refit_keeps_a_pruned_layers_zeros_through_quantize_lm() -> None:
    torch.manual_seed(0)
    model, ids = tiny_llama(hidden=64), text_ids(8)
    layer = model.model.layers[0].mlp.down_proj
    with torch.no_grad():
        layer.weight[:, ::2] = 0.0
    cfg = GPTQConfig(bits=4, group_size=32, samples=8, batch_size=4, true_sequential=True, refit_scales=True)
    quantize_lm_(model, cfg, calibration=ids)
    assert bool((layer.weight[:, ::2] == 0).all()) and bool((layer.weight[:, 1::2] != 0).any())


def test_true_sequential_sparsegpt_keeps_the_exact_sparsity_and_uses_pruned_inputs() -> None:
    from slimtune.models.blocks import calibration_pass
    from slimtune.prune.lm_sparse import SparseGPTConfig, _SparseGPT

    torch.manual_seed(0)
    fp32, ids = tiny_llama(hidden=64), text_ids(16)
    outs = {}
    for seq in (False, True):
        model = copy.deepcopy(fp32)
        algo = _SparseGPT(SparseGPTConfig(sparsity=0.5, samples=16, batch_size=4, true_sequential=seq))
        calibration_pass(model, ids, algo, batch_size=4, progress=False)
        for layer in model.model.layers:
            for name, m in target_layers(layer).items():
                zeros = (m.weight == 0).float().mean().item()
                assert abs(zeros - 0.5) < 0.02, (name, zeros)
        outs[seq] = model.model.layers[0].mlp.down_proj.weight.detach().clone()
    # down_proj of block 0 was pruned on different (pruned-upstream) inputs: its kept weights differ
    assert not torch.allclose(outs[False], outs[True])


def test_gptaq_fits_the_fp32_inputs_better_than_gptq() -> None:
    from slimtune.quantize.weight_only.gptq import gptq

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2048, 64, generator=gen) @ (torch.eye(64) + 0.3 * torch.randn(64, 64, generator=gen))
    x_fp = x + 0.3 * x @ torch.randn(64, 64, generator=gen) / 8  # upstream quantization moved the inputs
    w = torch.randn(32, 64, generator=gen)
    stats = HessianStats(64)
    for a, b in zip(x.split(256), x_fp.split(256)):
        stats.add(a, b)
    assert stats.d is not None

    def err(q: torch.Tensor) -> float:  # against what the fp32 model computes
        return float(((x_fp @ w.t() - x @ q.t()) ** 2).sum())

    kw: dict[str, Any] = {"bits": 4, "group_size": 32, "symmetric": True, "act_order": True}
    plain = err(gptq(w, stats.h, **kw).dequantize())
    asym = err(gptq(w, stats.h, dxxt=stats.d, **kw).dequantize())
    full = err(gptq(w, stats.h, dxxt=stats.d, alpha=1.0, **kw).dequantize())
    assert asym < 0.95 * plain and full < asym, (plain, asym, full)


def test_gptaq_sees_no_difference_in_block0s_first_stage_and_one_after(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def spy(w: torch.Tensor, h: torch.Tensor, **kw: Any) -> Any:
        seen[kw["name"]] = kw.get("dxxt")
        return _GPTQ(w, h, **kw)

    monkeypatch.setattr(wo_methods, "gptq", spy)
    torch.manual_seed(0)
    model, ids = tiny_llama(hidden=64), text_ids(8)
    cfg = GPTQConfig(bits=4, group_size=32, samples=8, batch_size=4, true_sequential=True, gptaq=True)
    quantize_lm_(model, cfg, calibration=ids)
    assert float(seen["layers.0.self_attn.q_proj"].abs().max()) == 0.0  # block 0's input is the same in both
    assert float(seen["layers.0.mlp.down_proj"].abs().max()) > 0.0
    assert float(seen["layers.1.self_attn.q_proj"].abs().max()) > 0.0


def test_options_that_do_not_apply_are_refused_in_one_line() -> None:
    from slimtune.errors import ConfigError
    from slimtune.quantize.weight_only import AWQGPTQConfig

    with pytest.raises(ConfigError, match="true_sequential and gptaq are options of method gptq"):
        AWQGPTQConfig(true_sequential=True)
    with pytest.raises(ConfigError, match="true_sequential and gptaq"):
        AWQGPTQConfig(gptaq=True)
    with pytest.raises(ConfigError, match="gptaq_alpha must be in"):
        GPTQConfig(gptaq=True, gptaq_alpha=0.0)
    assert GPTQConfig().true_sequential and GPTQConfig().gptaq and not GPTQConfig().refit_scales
