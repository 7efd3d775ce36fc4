"""What lowers GPTQ's error further: grids chosen by weighted rounding error (``mse``), lazy group grids, AWQ's
scales before GPTQ (``awq-gptq``); and ragged last groups (a group size that does not divide the width)."""

from __future__ import annotations

import copy

import torch

from slimtune.models.blocks import calibration_pass, linear_weight
from slimtune.quantize.weight_only import AWQGPTQConfig, GPTQConfig, RTNConfig, quantize_lm_
from slimtune.quantize.weight_only.api import LM_QUANTIZERS
from slimtune.quantize.weight_only.gptq import HessianStats, gptq
from slimtune.quantize.weight_only.grid import _groups, qparams, rtn
from slimtune.quantize.weight_only.mse_grid import padded_importance, search_qparams
from slimtune.testing.tiny_lm import tiny_llama

from .test_gptq_awq import Collect, text_ids


def _weighted_error(g: torch.Tensor, s: torch.Tensor, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    q = (torch.clamp(torch.round(g / s.unsqueeze(-1)) + z.unsqueeze(-1), 0, 15) - z.unsqueeze(-1)) * s.unsqueeze(-1)
    return ((q - g).abs().pow(2.4) * a).sum(-1)


def test_mse_grid_is_never_worse_than_min_max_and_shrinks_groups_with_outliers() -> None:
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(16, 128, generator=gen)
    w[:, ::37] *= 2.5  # a large value in most groups: min/max spends grid steps on it
    a = torch.rand(128, generator=gen) + 0.1
    for symmetric in (True, False):
        g = _groups(w, 32)
        s0, z0 = qparams(g, bits=4, symmetric=symmetric)
        s1, z1 = search_qparams(g, bits=4, symmetric=symmetric, importance=padded_importance(a, 32))
        e0, e1 = _weighted_error(g, s0, z0, a.reshape(4, 32)), _weighted_error(g, s1, z1, a.reshape(4, 32))
        assert bool((e1 <= e0 + 1e-6).all())
        assert float(e1.sum()) < 0.97 * float(e0.sum())
        assert bool((s1.abs() <= s0.abs() + 1e-7).all()) and bool((s1.abs() < s0.abs()).any())


def _real_layer() -> tuple[torch.Tensor, torch.Tensor]:
    model = tiny_llama(hidden=128)
    rec = Collect()
    calibration_pass(model, text_ids(), rec, progress=False)
    x = torch.cat(rec.x[(1, "mlp.down_proj")])
    return linear_weight(model.model.layers[1].mlp.down_proj).float(), x


def test_gptq_options_lower_the_output_error_of_a_real_layer_below_rtn_and_plain_gptq() -> None:
    w, x = _real_layer()
    stats = HessianStats(x.shape[1])
    stats.add(x)

    def err(q: torch.Tensor) -> float:
        return float(((x @ (w - q).t()) ** 2).sum())

    for bits, group in ((4, 32), (3, 64)):
        kw = {"bits": bits, "group_size": group, "symmetric": True}
        r = err(rtn(w, **kw).dequantize())
        plain = err(gptq(w, stats.h, **kw).dequantize())
        mse = err(gptq(w, stats.h, **kw, mse=True).dequantize())
        lazy = err(gptq(w, stats.h, **kw, static_groups=False).dequantize())
        both = err(gptq(w, stats.h, **kw, act_order=True, mse=True).dequantize())
        assert mse < plain < r and lazy < 0.9 * r and both < 0.9 * plain, (bits, group, r, plain, mse, lazy, both)


def test_ragged_last_group_gets_its_own_grid_in_rtn_and_gptq() -> None:
    w, x = _real_layer()  # (128, 256): groups of 96 leave a last group of 64
    q = rtn(w, bits=4, group_size=96, symmetric=False)
    assert q.codes.shape == w.shape and q.scales.shape == (128, 3)
    tail = rtn(w[:, 192:], bits=4, group_size=-1, symmetric=False)
    torch.testing.assert_close(q.scales[:, 2:], tail.scales)
    torch.testing.assert_close(q.dequantize()[:, 192:], tail.dequantize())
    stats = HessianStats(x.shape[1])
    stats.add(x)
    g = gptq(w, stats.h, bits=4, group_size=96, symmetric=True, act_order=True, mse=True)
    assert g.codes.shape == w.shape and g.dequantize().shape == w.shape
    e_g = float(((x @ (w - g.dequantize()).t()) ** 2).sum())
    e_r = float(((x @ (w - rtn(w, bits=4, group_size=96, symmetric=True).dequantize()).t()) ** 2).sum())
    assert e_g < 0.9 * e_r


def test_awq_then_gptq_beats_rtn_and_keeps_codes_on_every_layer() -> None:
    ids = text_ids()
    base = tiny_llama()
    with torch.no_grad():
        ref = base(ids).logits
    errs = {}
    for name, cfg in (
        ("rtn", RTNConfig(bits=3, group_size=32)),
        ("gptq", GPTQConfig(bits=3, group_size=32, samples=8)),
        ("awq-gptq", AWQGPTQConfig(bits=3, group_size=32, samples=8, grid=10, act_order=True, mse=True)),
    ):
        model = copy.deepcopy(base)
        quantize_lm_(model, cfg, calibration=ids)
        with torch.no_grad():
            errs[name] = float(((model(ids).logits - ref) ** 2).mean())
        if name == "awq-gptq":
            layers = [m for m in model.modules() if hasattr(m, "slimtune_qweight")]
            assert layers and all(m.slimtune_qweight.method == "awq-gptq" for m in layers)
            for m in layers:
                torch.testing.assert_close(m.weight.data, m.slimtune_qweight.dequantize())
    assert errs["awq-gptq"] < errs["rtn"], errs
    assert "awq-gptq" in LM_QUANTIZERS.names()


def test_symmetric_grid_maps_the_largest_magnitude_exactly_on_a_finer_step() -> None:
    w = torch.randn(24, 128, generator=torch.Generator().manual_seed(1))
    q = rtn(w, bits=4, group_size=32, symmetric=True)
    g, deq = w.reshape(24, 4, 32), q.dequantize().reshape(24, 4, 32)
    peak = g.abs().argmax(-1, keepdim=True)
    torch.testing.assert_close(deq.gather(-1, peak), g.gather(-1, peak))  # ONNX Runtime's convention: exact peak
    assert bool((q.scales.abs() < 2 * g.abs().amax(-1) / 15).all())  # step max|w|/8, not max|w|/7.5
    assert bool((q.scales < 0).any()) and bool((q.zeros == 8).all())
