"""Static int8 of a conv net quantizes the whole chain ONNX Runtime can run in int8 (Conv+Relu, Add,
pooling) with no fp32 round trip between two quantized ops, and still agrees with the model; ``ops: auto``
keeps weights-only for nets without convolutions; dynamic int8 never quantizes a Conv."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from slimtune.data import DataSplits
from slimtune.errors import ConfigError
from slimtune.export import check_parity, export_onnx, parity
from slimtune.models import build
from slimtune.quantize import OrtDynamicInt8Config, OrtStaticInt8Config, quantize_onnx
from slimtune.quantize.qdq_graph import fp32_round_trips, op_counts
from slimtune.train import TrainConfig, fit


@pytest.fixture(scope="module")
def resnet(digits: DataSplits) -> nn.Module:
    torch.manual_seed(0)
    model = build("resnet-small", input_shape=digits.input_shape, num_classes=10)
    fit(model, digits, config=TrainConfig(epochs=4, lr=3e-3, batch_size=32))
    return model.eval()


def _static(model: nn.Module, data: DataSplits, folder: Path, ops: str) -> tuple[Path, dict]:
    assert isinstance(data.test.x, torch.Tensor) and isinstance(data.train.x, torch.Tensor)
    fp32 = export_onnx(model, data.test.x[:1], folder / "fp32.onnx")
    path = folder / f"int8-{ops}.onnx"
    info = quantize_onnx(fp32, path, OrtStaticInt8Config(ops=ops), calibration=data.train.x[:128])  # type: ignore[arg-type]
    return path, info


def test_auto_quantizes_the_whole_conv_chain(resnet: nn.Module, digits: DataSplits, tmp_path: Path) -> None:
    auto, info = _static(resnet, digits, tmp_path, "auto")
    weights, _ = _static(resnet, digits, tmp_path, "weights")
    assert info["ops"] == "chain" and "conv net" in info["ops_reason"]
    assert fp32_round_trips(auto) == []  # no DequantizeLinear → fp32 op → QuantizeLinear inside the chain
    trips = fp32_round_trips(weights)  # weights-only: every Relu (and the Add before it) runs in fp32
    assert len(trips) >= 7 and any("Relu" in t for t in trips)
    a, w = op_counts(auto), op_counts(weights)
    assert "Relu" not in a and a["Add"] == 3 and a["GlobalAveragePool"] == 1  # Relu folded, Add/pool int8
    assert a["QuantizeLinear"] < w["QuantizeLinear"] and a["DequantizeLinear"] < w["DequantizeLinear"]
    report = parity(resnet, auto, digits.test.x)
    check_parity(report, what="resnet-small/chain", max_abs_diff=None, min_argmax_agreement=0.99)


def test_auto_keeps_weights_only_without_convolutions(digits: DataSplits, tmp_path: Path) -> None:
    model = build("mlp", input_shape=digits.input_shape, num_classes=10, hidden=[32]).eval()
    _, info = _static(model, digits, tmp_path, "auto")
    assert info["ops"] == "weights" and "no Conv" in info["ops_reason"]


def test_dynamic_int8_leaves_convolutions_in_fp32(resnet: nn.Module, digits: DataSplits, tmp_path: Path) -> None:
    assert isinstance(digits.test.x, torch.Tensor)
    fp32 = export_onnx(resnet, digits.test.x[:1], tmp_path / "fp32.onnx")
    quantize_onnx(fp32, tmp_path / "dyn.onnx", OrtDynamicInt8Config())
    counts = op_counts(tmp_path / "dyn.onnx")
    assert counts["Conv"] == op_counts(fp32)["Conv"] and "ConvInteger" not in counts
    assert counts.get("MatMulInteger", 0) >= 1  # the classifier head is still int8


def test_unknown_ops_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="ops must be one of"):
        OrtStaticInt8Config(ops="everything")  # type: ignore[arg-type]
