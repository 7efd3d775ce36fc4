"""Mixed precision end to end: sensitivity → plan → ORT nodes_to_exclude → really fp32 in the graph."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import torch
from torch import nn

from slimtune.errors import ConfigError, ParityError
from slimtune.export import check_parity, export_onnx, parity
from slimtune.models import build
from slimtune.quantize import (
    MixedPrecisionConfig,
    OrtDynamicInt8Config,
    OrtStaticInt8Config,
    onnx_precision,
    quantize_model,
)
from slimtune.recipe import parse_recipe, run_recipe


def _sabotaged() -> tuple[nn.Module, torch.Tensor]:
    """An MLP whose middle layer has a huge weight from an always-dead unit: fp32 is unaffected, but any
    int8 grid for that layer (per channel too) rounds every other weight of it to zero."""
    torch.manual_seed(0)
    model = build("mlp", input_shape=(16,), num_classes=4, hidden=[32, 32]).eval()
    with torch.no_grad():
        model.net[1].weight[5].mul_(0.01)  # (not zero: ORT quantizes the bias by weight scale × input scale)
        model.net[1].bias[5] = -50.0
        model.net[3].weight[:, 5] = 1000.0
    return model, torch.randn(400, 16, generator=torch.Generator().manual_seed(1))


def _fp32_gemms(path: Path) -> set[str]:
    """Names of the Gemm nodes whose weight input is a float32 initializer (not dequantized int8)."""
    graph = onnx.load(str(path)).graph
    floats = {t.name for t in graph.initializer if t.data_type == onnx.TensorProto.FLOAT}
    return {n.name for n in graph.node if n.op_type == "Gemm" and n.input[1] in floats}


@pytest.mark.parametrize(
    ("config", "mixed"),
    [
        (OrtStaticInt8Config(), MixedPrecisionConfig(max_fp32_layers=1)),
        (OrtDynamicInt8Config(), MixedPrecisionConfig(min_sqnr_db=20.0)),
    ],
)
def test_planned_fp32_layers_are_fp32_in_the_graph(config: object, mixed: MixedPrecisionConfig, tmp_path: Path) -> None:
    model, x = _sabotaged()
    calib, test = x[:200], x[200:]
    with pytest.raises(ParityError, match="agree on only"):  # all int8 is caught by the API's own check
        quantize_model(model, tmp_path / "all.onnx", config, example=test[:1], calibration=calib)  # type: ignore[arg-type]
    plain = quantize_model(model, tmp_path / "all.onnx", config, example=test[:1], calibration=calib, verify=False)  # type: ignore[arg-type]
    assert plain["precision"] == {"net.1": "int8", "net.3": "int8", "net.5": "int8"} and "mixed_precision" not in plain
    # all int8 wrecks net.3 (measured: 75.5% agreement, max |Δ| 0.26 on logits of ±0.3)
    assert parity(model, tmp_path / "all.onnx", test)["argmax_agreement"] < 0.9
    info = quantize_model(model, tmp_path / "mp.onnx", config, example=test[:1], calibration=calib,  # type: ignore[arg-type]
                          mixed_precision=mixed)  # fmt: skip
    mp = info["mixed_precision"]
    assert info["parity"]["argmax_agreement_beyond_ties"] >= 0.99  # checked on the calibration inputs
    assert list(mp["fp32_layers"]) == ["net.3"] and mp["fp32_layers"]["net.3"]["sqnr_db"] < 20.0
    assert mp["fp32_layers"]["net.3"]["nodes"] == ["/net/net.3/Gemm"]
    assert min(v for k, v in mp["sensitivity_db"].items() if k != "net.3") > 30.0
    assert info["precision"] == onnx_precision(tmp_path / "mp.onnx", ["net.1", "net.3", "net.5"])
    assert info["precision"] == {"net.1": "int8", "net.3": "fp32", "net.5": "int8"}
    if isinstance(config, OrtStaticInt8Config):
        assert _fp32_gemms(tmp_path / "mp.onnx") == {"/net/net.3/Gemm"}  # its weight is the fp32 initializer
    report = parity(
        model, tmp_path / "mp.onnx", test
    )  # measured: 95.5% (all flips near ties) / 100%, max |Δ| 0.067 / 0.005
    assert report["argmax_agreement_beyond_ties"] >= 0.99 and report["max_abs_diff"] < 0.1
    check_parity(report, what="mixed", max_abs_diff=None, min_argmax_agreement=0.99)


def test_python_api_checks_int8_against_pytorch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``quantize_model`` runs what it wrote in ONNX Runtime: an int8 file that computes something else (here a
    quantizer that writes another model) is a ParityError, not a silent success."""
    import slimtune.quantize.api as api

    torch.manual_seed(0)
    model = build("mlp", input_shape=(16,), num_classes=4, hidden=[32, 32]).eval()
    x = torch.randn(400, 16, generator=torch.Generator().manual_seed(1))
    info = quantize_model(model, tmp_path / "ok.onnx", OrtDynamicInt8Config(), example=x[:1], calibration=x[:200])
    assert info["parity"]["argmax_agreement_beyond_ties"] >= 0.99
    torch.manual_seed(123)
    other = nn.Sequential(nn.Linear(x.shape[1], model(x[:1]).shape[1]))

    def wrong(src: Path, dst: Path, config: object, *, calibration: object = None) -> dict:
        export_onnx(other, x[:1], dst)
        return {}

    monkeypatch.setattr(api, "quantize_onnx", wrong)
    with pytest.raises(ParityError, match=r"int8 model '.*bad\.onnx': ONNX Runtime and PyTorch agree on only") as error:
        quantize_model(model, tmp_path / "bad.onnx", OrtDynamicInt8Config(), example=x[:1], calibration=x[:200])
    assert "\n" not in str(error.value)
    quantize_model(model, tmp_path / "unchecked.onnx", OrtDynamicInt8Config(), example=x[:1], verify=False)
    with pytest.raises(ParityError, match=r"outputs shape \[200, 3\] where the PyTorch model gives \[200, 4\]"):
        parity(model, export_onnx(nn.Linear(x.shape[1], 3), x[:1], tmp_path / "three.onnx"), x[:200])


def test_mixed_precision_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs max_fp32_layers, min_sqnr_db or both") as info:
        MixedPrecisionConfig.from_dict({})
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="max_fp32_layers must be >= 0, got -1"):
        MixedPrecisionConfig(max_fp32_layers=-1)
    with pytest.raises(ConfigError, match="unknown key 'max_fp32'"):
        MixedPrecisionConfig.from_dict({"max_fp32": 2})
    model, x = _sabotaged()
    with pytest.raises(ConfigError, match="mixed precision needs calibration inputs"):
        quantize_model(model, tmp_path / "q.onnx", OrtDynamicInt8Config(), example=x[:1],
                       mixed_precision=MixedPrecisionConfig(max_fp32_layers=1))  # fmt: skip


def _recipe(quantize: dict) -> dict:
    return {
        "data": {"name": "digits", "seed": 0, "limit": 300},
        "model": {"name": "mlp", "options": {"hidden": [32, 32]}},
        "stages": [{"stage": "train", "train": {"epochs": 8, "lr": 0.005, "batch_size": 32}}, quantize],
    }


def test_recipe_quantize_stage_keeps_the_worst_layer_fp32_and_reports_why(tmp_path: Path) -> None:
    stage = {"stage": "quantize", "method": "ort-static-int8", "mixed_precision": {"max_fp32_layers": 1}}
    report = run_recipe(parse_recipe(_recipe(stage)), tmp_path / "out")
    train, quant = report.rows
    assert train.precision == {"net.1": "fp32", "net.3": "fp32", "net.5": "fp32"}
    kept = quant.extra["mixed_precision"]["fp32_layers"]
    assert len(kept) == 1
    (name,) = kept
    assert quant.precision == {**dict.fromkeys(["net.1", "net.3", "net.5"], "int8"), name: "fp32"}
    assert quant.precision == onnx_precision(tmp_path / "out" / "02-quantize" / "model.int8.onnx", quant.precision)
    assert quant.parity is not None and quant.parity["argmax_agreement_beyond_ties"] >= 0.99
    md = (tmp_path / "out" / "report.md").read_text()
    assert "int8 \N{MULTIPLICATION SIGN}2, fp32 \N{MULTIPLICATION SIGN}1" in md
    assert f"`{name}` ({kept[name]['sqnr_db']:.1f} dB)" in md and "## Mixed precision" in md
    html = (tmp_path / "out" / "report.html").read_text()
    assert "<details><summary>quantize: int8" in html and "with only this layer quantized" in html


def test_recipe_rejects_bad_mixed_precision() -> None:
    bad = {"stage": "quantize", "method": "ort-static-int8", "mixed_precision": {"min_sqnr": 20}}
    with pytest.raises(ConfigError, match=r"stages\[2\] \(quantize\)\.mixed_precision: unknown key 'min_sqnr'"):
        parse_recipe(_recipe(bad))
