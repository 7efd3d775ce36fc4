"""SmoothQuant W8A8: smoothing is exact in fp32, flattens a planted activation outlier and lowers the W8A8 error;
α is searched on perplexity without touching the model; ONNX Runtime int8 (dynamic MatMulInteger, static QDQ)
exports and the bundle generates; bad input is one line."""

from __future__ import annotations

import copy
from pathlib import Path

import onnx
import pytest
import torch

from slimtune.errors import ConfigError, DataError, UnsupportedModelError
from slimtune.export.lm_bundle import export_lm, export_lm_bundle
from slimtune.export.lm_onnx import LMExportConfig
from slimtune.quantize.smoothquant import SmoothQuantConfig
from slimtune.quantize.smoothquant.api import smoothquant_lm_
from slimtune.quantize.smoothquant.simulate import simulated_w8a8
from slimtune.quantize.smoothquant.smooth import activation_maxima, smooth_lm_
from slimtune.quantize.weight_only import RTNConfig, quantize_lm_
from slimtune.testing.tiny_lm import byte_tokenizer, tiny_gpt2, tiny_llama

IDS = torch.randint(0, 256, (8, 32), generator=torch.Generator().manual_seed(0))
CHECK = LMExportConfig(greedy_tokens=4, prompts=1, windows=2, window_length=16, min_fast_top1_agreement=0.5)


def outlier_llama() -> torch.nn.Module:
    """A tiny Llama whose attention norm makes channel 5 of every block ~40x larger (an activation outlier),
    compensated in q/k/v so the fp32 function is that of an ordinary model."""
    model = tiny_llama(seed=1)
    with torch.no_grad():
        for block in model.model.layers:
            block.input_layernorm.weight[5] *= 40.0
            for proj in (block.self_attn.q_proj, block.self_attn.k_proj, block.self_attn.v_proj):
                proj.weight[:, 5] /= 40.0
    return model


@pytest.mark.parametrize("linear", [False, True])
@pytest.mark.parametrize("make", [tiny_llama, tiny_gpt2])
def test_smoothing_keeps_the_fp32_output(make: object, linear: bool) -> None:
    model = make()  # type: ignore[operator]
    ref = model(IDS).logits
    maxima = activation_maxima(model, IDS, batch_size=4)
    info = smooth_lm_(model, maxima, alpha=0.5, linear=linear)
    blocks = len(model.base_model.h if hasattr(model.base_model, "h") else model.model.layers)
    per_block = 2 + (0 if not linear else 2 if make is tiny_llama else 1)  # + v->o, up->down (GPT-2: c_attn->c_proj)
    assert info["groups"] == per_block * blocks
    torch.testing.assert_close(model(IDS).logits, ref, atol=1e-4, rtol=1e-4)


def test_smoothing_flattens_an_outlier_and_lowers_the_w8a8_error() -> None:
    model = outlier_llama()
    ref = model(IDS).logits
    with simulated_w8a8(model):
        plain_err = float((model(IDS).logits - ref).pow(2).mean())
    info = smooth_lm_(model, activation_maxima(model, IDS, batch_size=4), alpha=0.5)
    assert info["outlier_ratio_before"] > 20 and info["outlier_ratio_after"] < info["outlier_ratio_before"] / 4
    with simulated_w8a8(model):
        smooth_err = float((model(IDS).logits - ref).pow(2).mean())
    assert smooth_err < 0.5 * plain_err


def test_alpha_search_scores_the_grid_and_plain_int8_and_applies_the_best() -> None:
    model = outlier_llama()
    mask = torch.ones_like(IDS[:, :4])  # held-out text the fp32 model predicts well: its own greedy continuation
    held_out = model.generate(IDS[:, :4], attention_mask=mask, max_new_tokens=28, do_sample=False, pad_token_id=0)
    before = copy.deepcopy(model.state_dict())
    cfg = SmoothQuantConfig(alpha_grid=(0.3, 0.5, 0.8), samples=8)
    info = smoothquant_lm_(model, cfg, calibration=IDS, validation=held_out)
    assert set(info["search"]) == {"none", "0.3", "0.5", "0.8"}
    best = min(info["search"], key=info["search"].get)
    assert best != "none" and info["alpha"] == float(best)
    assert model.slimtune_smoothquant["alpha"] == float(best)
    norm = model.model.layers[0].input_layernorm.weight
    assert not torch.equal(norm, before["model.layers.0.input_layernorm.weight"])


def _ops(path: Path) -> list[str]:
    return [n.op_type for n in onnx.load(str(path)).graph.node]


def test_dynamic_int8_export_uses_matmulinteger_and_the_bundle_generates(tmp_path: Path) -> None:
    from slimtune.runtime import LMGenerator

    model = outlier_llama()
    smoothquant_lm_(model, SmoothQuantConfig(samples=8), calibration=IDS)
    folder = export_lm_bundle(model, byte_tokenizer(), tmp_path / "b", windows=IDS[:2], config=CHECK,
                              prompts=["Hello"], generation={"max_new_tokens": 6})  # fmt: skip
    ops = _ops(folder / "model.onnx")
    assert ops.count("MatMulInteger") == 2 * 4 + 1  # per block: fused qkv, o, fused gate/up, down; + lm_head
    import json

    manifest = json.loads((folder / "bundle.json").read_text())
    assert manifest["precision"] == "int8" and manifest["parity"]["int8"]["top1_agreement"] >= 0.5
    assert manifest["parity"]["max_abs_diff"] < 1e-3  # the smoothed fp32 export matched before int8
    sq = manifest["parity"]["smoothquant"]
    assert sq["bytes_int8"] < 0.6 * sq["bytes_fp32"]  # the fp32 embedding is a large part of so tiny a model
    assert isinstance(LMGenerator(folder).generate("Hi"), str)


def test_static_int8_export_is_qdq(tmp_path: Path) -> None:
    model = tiny_gpt2()
    smoothquant_lm_(model, SmoothQuantConfig(samples=8, mode="static"), calibration=IDS)
    report = export_lm(model, tmp_path / "m.onnx", windows=IDS[:2], config=CHECK)
    assert {"QuantizeLinear", "DequantizeLinear"} <= set(_ops(tmp_path / "m.onnx"))
    assert report["smoothquant"]["mode"] == "static" and report["precision"] == "int8"


def test_bad_input_is_one_line() -> None:
    with pytest.raises(ConfigError, match="alpha must be in"):
        SmoothQuantConfig(alpha=1.5)
    with pytest.raises(ConfigError, match="alpha_grid values"):
        SmoothQuantConfig(alpha_grid=(0.5, 2.0))
    with pytest.raises(DataError, match="8 windows but 32 samples"):
        smoothquant_lm_(tiny_llama(), SmoothQuantConfig(samples=32), calibration=IDS)
    model = tiny_llama()
    quantize_lm_(model, RTNConfig(bits=8, group_size=32))
    with pytest.raises(UnsupportedModelError, match="already quantized"):
        smoothquant_lm_(model, SmoothQuantConfig(samples=8), calibration=IDS)
    smoothed = tiny_llama()
    smoothquant_lm_(smoothed, SmoothQuantConfig(samples=8), calibration=IDS)
    with pytest.raises(UnsupportedModelError, match="already smoothed"):
        smoothquant_lm_(smoothed, SmoothQuantConfig(samples=8), calibration=IDS)
