"""Weight-only LM quantization: the RTN/HQQ grid, GPTQ's solver, the bad-input lines, and the stored codes."""

from __future__ import annotations

import copy
import logging

import pytest
import torch

from slimtune.errors import ConfigError, DataError, UnsupportedModelError
from slimtune.models.blocks import linear_weight
from slimtune.quantize.weight_only import (
    AWQConfig,
    GPTQConfig,
    HQQConfig,
    RTNConfig,
    quantize_lm_,
    quantized_layers,
)
from slimtune.quantize.weight_only.gptq import gptq
from slimtune.quantize.weight_only.grid import hqq, rtn
from slimtune.testing.tiny_lm import tiny_gpt2, tiny_llama

W = torch.randn(24, 128, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("group", [32, 64, 128, -1])
@pytest.mark.parametrize("symmetric", [True, False])
def test_rtn_codes_fit_the_bits_and_dequantize_near_the_weight(bits: int, group: int, symmetric: bool) -> None:
    q = rtn(W, bits=bits, group_size=group, symmetric=symmetric)
    assert q.codes.dtype == torch.uint8 and int(q.codes.max()) <= 2**bits - 1
    assert q.scales.shape == (24, 128 // (128 if group == -1 else group))
    assert torch.equal(q.zeros, q.zeros.round())
    err = (q.dequantize() - W).abs()
    # round to nearest: within half a step (one step where a symmetric code is clamped)
    step = q.scales.abs().repeat_interleave(q.group_size, dim=1)
    assert bool((err <= step * (1.0 if symmetric else 0.5) + 1e-6).all())


def test_more_bits_and_smaller_groups_mean_less_error() -> None:
    errs = [float((rtn(W, bits=b, group_size=32, symmetric=True).dequantize() - W).pow(2).mean()) for b in (2, 3, 4, 8)]
    assert errs == sorted(errs, reverse=True)
    g32 = float((rtn(W, bits=4, group_size=32, symmetric=True).dequantize() - W).pow(2).mean())
    pc = float((rtn(W, bits=4, group_size=-1, symmetric=True).dequantize() - W).pow(2).mean())
    assert g32 < pc


def test_hqq_is_never_worse_than_rtn_and_usually_better() -> None:
    heavy = W * torch.rand(1, 128, generator=torch.Generator().manual_seed(1)) * 3  # uneven columns
    for bits in (2, 3, 4, 8):
        for sym in (True, False):
            r = (rtn(heavy, bits=bits, group_size=64, symmetric=sym).dequantize() - heavy).abs().mean()
            q = hqq(heavy, bits=bits, group_size=64, symmetric=sym)
            h = (q.dequantize() - heavy).abs().mean()
            assert h <= r + 1e-7 and torch.equal(q.zeros, q.zeros.round())
            if bits <= 4:
                assert h < 0.97 * r


def test_gptq_with_identity_hessian_equals_rtn() -> None:
    for group, sym in ((32, True), (-1, False)):
        g = gptq(W, torch.eye(128), bits=4, group_size=group, symmetric=sym)
        r = rtn(W, bits=4, group_size=group, symmetric=sym)
        assert torch.equal(g.codes, r.codes) and torch.equal(g.scales, r.scales)


def test_gptq_falls_back_to_rtn_when_cholesky_fails(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        g = gptq(W, -torch.eye(128), bits=4, group_size=32, symmetric=True, name="layers.0.q")
    assert torch.equal(g.codes, rtn(W, bits=4, group_size=32, symmetric=True).codes)
    assert "layers.0.q" in caplog.text and "RTN" in caplog.text


def test_quantized_model_keeps_codes_and_dequantized_weights() -> None:
    for model in (tiny_llama(), tiny_gpt2()):
        quantize_lm_(model, RTNConfig(bits=4, group_size=32))
        layers = quantized_layers(model)
        assert len(layers) == (14 if hasattr(model, "model") else 8)
        for layer, qw in layers.values():
            assert torch.equal(linear_weight(layer), qw.dequantize())
            assert qw.bits == 4 and qw.group_size == 32


def test_lm_head_is_quantized_and_untied_only_when_asked() -> None:
    model = tiny_llama()
    emb = model.get_input_embeddings().weight.detach().clone()
    quantize_lm_(model, RTNConfig(bits=8, group_size=32, lm_head=True))
    assert "lm_head" in quantized_layers(model)
    assert torch.equal(model.get_input_embeddings().weight, emb)  # the embedding stays fp32
    assert model.lm_head.weight is not model.get_input_embeddings().weight


def test_bad_inputs_say_what_to_do() -> None:
    with pytest.raises(ConfigError, match="bits must be one of 2, 3, 4, 8"):
        RTNConfig(bits=5)
    with pytest.raises(ConfigError, match="group_size"):
        RTNConfig(group_size=48)
    with pytest.raises(ConfigError, match="iters"):
        HQQConfig(iters=0)
    model = tiny_llama(hidden=96)
    with pytest.raises(ConfigError) as err:
        quantize_lm_(model, RTNConfig(group_size=64))
    msg = str(err.value)
    assert "model.layers.0.self_attn.q_proj" in msg and "96" in msg and "32" in msg and "-1" in msg
    assert "\n" not in msg and not quantized_layers(model)
    model = tiny_llama()
    quantize_lm_(model, RTNConfig(group_size=32))
    with pytest.raises(UnsupportedModelError, match="already quantized"):
        quantize_lm_(model, RTNConfig(group_size=32))
    with pytest.raises(DataError, match="4 windows but 8 samples"):
        quantize_lm_(
            tiny_llama(), GPTQConfig(samples=8, group_size=32), calibration=torch.zeros(4, 16, dtype=torch.long)
        )
    with pytest.raises(DataError, match="calibration"):
        quantize_lm_(tiny_llama(), AWQConfig(samples=8, group_size=32))


def test_every_method_quantizes_both_families() -> None:
    ids = torch.randint(0, 256, (4, 16), generator=torch.Generator().manual_seed(0))
    for make in (tiny_llama, tiny_gpt2):
        base = make()
        for cfg in (
            RTNConfig(bits=4, group_size=32),
            HQQConfig(bits=3, group_size=64),
            GPTQConfig(bits=4, group_size=-1, samples=4, act_order=True),
            AWQConfig(bits=8, group_size=32, samples=4, grid=4),
        ):
            model = copy.deepcopy(base)
            quantize_lm_(model, cfg, calibration=ids)
            assert quantized_layers(model)
            with torch.no_grad():
                assert torch.isfinite(model(ids).logits).all()
