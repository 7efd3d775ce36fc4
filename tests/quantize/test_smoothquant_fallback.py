"""SmoothQuant per-group α and fp32 fallback: per-group folds keep the fp32 logits; a fallback (named, N, auto)
keeps exactly its MatMuls fp32 in the ONNX Runtime int8 file, found by weight (not by name) in the export;
static calibration methods; bad options are one line."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import torch

from slimtune.errors import ConfigError
from slimtune.export.lm_bundle import export_lm
from slimtune.export.lm_onnx import LMExportConfig, export_lm_onnx
from slimtune.quantize.smoothquant import SmoothQuantConfig
from slimtune.quantize.smoothquant.api import smoothquant_lm_
from slimtune.quantize.smoothquant.fallback import input_units
from slimtune.quantize.smoothquant.layerwise import smooth_lm_per_group_
from slimtune.quantize.smoothquant.ort import linear_nodes
from slimtune.testing.tiny_lm import tiny_gpt2, tiny_llama

IDS = torch.randint(0, 256, (8, 32), generator=torch.Generator().manual_seed(0))
CHECK = LMExportConfig(greedy_tokens=4, prompts=1, windows=2, window_length=16, min_fast_top1_agreement=0.0)


def outlier_llama() -> torch.nn.Module:
    """tiny_llama with a ~40x activation outlier on channel 5 after each attention norm (fp32 function kept)."""
    model = tiny_llama(seed=1)
    with torch.no_grad():
        for block in model.model.layers:
            block.input_layernorm.weight[5] *= 40.0
            for proj in (block.self_attn.q_proj, block.self_attn.k_proj, block.self_attn.v_proj):
                proj.weight[:, 5] /= 40.0
    return model


def own_text(model: torch.nn.Module) -> torch.Tensor:
    """Held-out windows the fp32 model predicts well (its greedy continuation), so int8 visibly costs perplexity."""
    mask = torch.ones_like(IDS[:4, :4])
    return model.generate(IDS[:4, :4], attention_mask=mask, max_new_tokens=28, do_sample=False, pad_token_id=0)


def _int8(model: torch.nn.Module, path: Path) -> tuple[dict[str, str], dict]:
    report = export_lm(model, path, windows=IDS[:2], config=CHECK)
    return {n.name: n.op_type for n in onnx.load(str(path)).graph.node}, report


@pytest.mark.parametrize("make", [outlier_llama, tiny_gpt2])
def test_per_group_alpha_keeps_the_fp32_logits(make: object) -> None:
    model = make()  # type: ignore[operator]
    ref = model(IDS).logits
    info = smooth_lm_per_group_(model, IDS, (0.3, 0.6, 0.9), batch_size=4)
    torch.testing.assert_close(model(IDS).logits, ref, atol=1e-4, rtol=1e-4)
    per_block = 4 if make is outlier_llama else 3  # q/k/v, v->o, gate/up, up->down (GPT-2: ln_1, c_attn->c_proj, ln_2)
    assert len(info["alphas"]) == 2 * per_block
    assert set(info["alphas"].values()) <= {None, 0.3, 0.6, 0.9}
    assert all(set(e) == {"none", "0.3", "0.6", "0.9"} for e in info["block_errors"].values())
    chosen = {k: min(e, key=e.get) for k, e in info["block_errors"].items()}  # the lowest block error won
    assert {k: None if v == "none" else float(v) for k, v in chosen.items()} == info["alphas"]
    if make is outlier_llama:  # the planted outlier gets smoothed
        assert info["alphas"]["0:input_layernorm"] is not None
        assert info["outlier_ratio_after"] < info["outlier_ratio_before"] / 4


def test_layer_scope_through_the_api_records_the_alphas() -> None:
    model = outlier_llama()
    info = smoothquant_lm_(model, SmoothQuantConfig(samples=8, alpha_scope="layer", alpha_grid=(0.5, 0.8)),
                           calibration=IDS)  # fmt: skip
    assert model.slimtune_smoothquant["alpha"] == "per-group" and len(info["alphas"]) == 8


def test_export_maps_matmuls_to_linears_by_weight(tmp_path: Path) -> None:
    llama, gpt2 = tiny_llama(), tiny_gpt2()
    fused = linear_nodes(llama, export_lm_onnx(llama, tmp_path / "l.onnx"))
    assert fused["layers.1.qkv"] == [f"model.layers.1.self_attn.{p}_proj" for p in "qkv"]
    assert fused["layers.0.gate_up"] == ["model.layers.0.mlp.gate_proj", "model.layers.0.mlp.up_proj"]
    traced = linear_nodes(gpt2, export_lm_onnx(gpt2, tmp_path / "g.onnx"))
    units = {u for u in input_units(gpt2)}
    assert sorted(tuple(v) for v in traced.values()) == sorted(units)  # every Linear, once, in its own Gemm
    assert "transformer.h.1.attn.c_attn" not in "".join(traced)  # the traced names would not have told


def test_named_fallback_keeps_exactly_those_matmuls_fp32(tmp_path: Path) -> None:
    model = outlier_llama()
    names = ("model.layers.1.mlp.down_proj", "model.layers.0.self_attn.k_proj")
    info = smoothquant_lm_(model, SmoothQuantConfig(samples=8, fallback=names), calibration=IDS)
    assert info["fallback"] == ["model.layers.1.mlp.down_proj", *(f"model.layers.0.self_attn.{p}_proj" for p in "qkv")]
    ops, report = _int8(model, tmp_path / "m.onnx")
    assert list(ops.values()).count("MatMulInteger") == 9 - 2  # 2 blocks x 4 MatMuls + lm_head, two kept
    assert sorted(n for n, op in ops.items() if op == "MatMul") == ["layers.0.qkv", "layers.1.down"]
    assert report["smoothquant"]["fp32_nodes"] == ["layers.0.qkv", "layers.1.down"]


def test_count_and_auto_fallback_keep_the_top_ranked_units(tmp_path: Path) -> None:
    model = outlier_llama()
    info = smoothquant_lm_(model, SmoothQuantConfig(samples=8, fallback=3), calibration=IDS, validation=IDS[:4])
    top = [name for unit, _ in info["fallback_rank"]["top"][:3] for name in unit.split("+")]
    assert info["fallback"] == top
    ops, _ = _int8(model, tmp_path / "n.onnx")
    assert list(ops.values()).count("MatMul") == 3 and list(ops.values()).count("MatMulInteger") == 6

    model = outlier_llama()
    cfg = SmoothQuantConfig(samples=8, fallback="auto", fallback_budget=1e-3, fallback_rank="outlier", smooth=False)
    info = smoothquant_lm_(model, cfg, calibration=IDS, validation=own_text(model))
    auto = info["fallback_auto"]
    n, tried = auto["n"], auto["tried"]
    assert 0 < n <= 9 and tried[n] <= auto["target"]  # reached, and one fewer does not
    assert n - 1 in tried and tried[n - 1] > auto["target"]
    ops, _ = _int8(model, tmp_path / "a.onnx")
    assert list(ops.values()).count("MatMul") == n and list(ops.values()).count("MatMulInteger") == 9 - n


@pytest.mark.parametrize("calibrate", ["percentile", "entropy"])
def test_static_calibration_methods_and_fallback(tmp_path: Path, calibrate: str) -> None:
    model = tiny_llama()
    cfg = SmoothQuantConfig(samples=8, mode="static", calibrate=calibrate, fallback=("lm_head",))
    smoothquant_lm_(model, cfg, calibration=IDS)
    report = export_lm(model, tmp_path / "s.onnx", windows=IDS[:2], config=CHECK)
    graph = onnx.load(str(tmp_path / "s.onnx")).graph
    made_by = {o: n.op_type for n in graph.node for o in n.output}
    head = next(n for n in graph.node if n.name == "lm_head/MatMul")
    assert all(made_by.get(i) != "DequantizeLinear" for i in head.input)  # the kept node reads fp32 tensors
    matmuls = [n for n in graph.node if n.op_type == "MatMul" and n.name != "lm_head/MatMul"]
    assert len(matmuls) == 8 and report["smoothquant"]["calibrate"] == calibrate
    for node in matmuls:  # activations too, not only weights: the fused graph's com.microsoft outputs got typed
        assert all(made_by.get(i) == "DequantizeLinear" for i in node.input), node.name
    # outputs stay fp32: a static per-tensor range on q/k/v or on what joins the residual cost SmolLM2 +480%
    assert not any(n.op_type == "QuantizeLinear" and made_by.get(n.input[0]) == "MatMul" for n in graph.node)


def test_bad_options_are_one_line() -> None:
    with pytest.raises(ConfigError, match=r"'model.layers.0.mlp.down' is not a quantized Linear.*did you mean"):
        smoothquant_lm_(tiny_llama(), SmoothQuantConfig(samples=8, fallback=("model.layers.0.mlp.down",)),
                        calibration=IDS)  # fmt: skip
    cases = [({"fallback": "outo"}, "did you mean 'auto'"), ({"fallback": -1}, "fallback must be >= 0"),
             ({"fallback": []}, "empty list"), ({"calibrate": "percentil"}, "did you mean 'percentile'"),
             ({"alpha_scope": "block"}, "'block' is not one of"), ({"fallback_budget": 0}, "fallback_budget"),
             ({"smooth": False, "alpha_scope": "layer"}, "alpha_scope: layer needs smooth")]  # fmt: skip
    for options, message in cases:
        with pytest.raises(ConfigError, match=message) as err:
            SmoothQuantConfig.from_dict(options, where="quantize")
        assert "\n" not in str(err.value)
