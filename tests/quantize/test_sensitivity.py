from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from slimtune.data import DataSplits, Split
from slimtune.errors import ConfigError, DataError, UnsupportedModelError
from slimtune.models import build
from slimtune.quantize.affine import QuantSpec
from slimtune.quantize.calibration import CalibrationDataset, calibrate, fake_quants, quantize_layers
from slimtune.quantize.sensitivity import (
    LayerSensitivity,
    format_sensitivity,
    layer_sensitivity,
    mixed_precision_plan,
    sqnr,
)
from slimtune.train import TrainConfig, fit
from slimtune.train.loop import predict


@pytest.fixture(scope="module")
def trained(digits: DataSplits) -> nn.Module:
    torch.manual_seed(0)
    model = build("mlp", input_shape=digits.input_shape, num_classes=10, hidden=[64])
    fit(model, digits, config=TrainConfig(epochs=30, lr=5e-3), progress=False)
    return model


def _accuracy(model: nn.Module, split: Split) -> float:
    assert isinstance(split.x, torch.Tensor)
    return float((predict(model, split.x).argmax(1) == split.y).float().mean())


def _fake_quantized(model: nn.Module, digits: DataSplits, bits: int) -> nn.Module:
    q = copy.deepcopy(model)
    quantize_layers(q, weight=QuantSpec.weights(bits), activation=QuantSpec.activations(bits))
    return calibrate(q, CalibrationDataset(digits.calibration(200), batch_size=50))


def test_fake_quant_keeps_8_bit_accuracy_and_loses_it_at_2(trained: nn.Module, digits: DataSplits) -> None:
    fp32 = _accuracy(trained, digits.test)
    assert fp32 > 0.9
    int8 = _fake_quantized(trained, digits, 8)
    assert all(fq.enabled and not fq.observe for fq in fake_quants(int8).values())
    assert abs(_accuracy(int8, digits.test) - fp32) <= 0.01
    assert _accuracy(_fake_quantized(trained, digits, 2), digits.test) < fp32 - 0.1


def test_quantize_layers_and_calibrate_errors() -> None:
    model = build("lenet5", input_shape=(1, 8, 8), num_classes=10)
    with pytest.raises(ConfigError, match="no FakeQuantize modules; insert them first"):
        calibrate(model, torch.rand(4, 1, 8, 8))
    with pytest.raises(ConfigError, match=r"no quantizable layer named nope; known: features\.0, features\.3"):
        quantize_layers(model, layers=["nope"])
    with pytest.raises(UnsupportedModelError, match="no Linear or Conv layers"):
        quantize_layers(nn.Sequential(nn.ReLU()))
    wrapped = quantize_layers(model, layers=["features.0", "classifier.1"], quantize_activations=False)
    assert set(wrapped) == {"features.0", "classifier.1"} and len(fake_quants(model)) == 2
    with pytest.raises(DataError, match="empty calibration set"):
        calibrate(model, torch.empty(0, 1, 8, 8))
    with pytest.raises(ConfigError, match="num_batches must be >= 1, got 0"):
        calibrate(model, torch.rand(4, 1, 8, 8), num_batches=0)


def test_transformer_layers_quantize() -> None:
    model = build("transformer-small", input_shape=(12,), num_classes=3, vocab_size=50, dim=16, heads=2, layers=1)
    ids = torch.randint(1, 50, (20, 12))
    ref = predict(model, ids)
    wrapped = quantize_layers(model)
    attn = {f"layers.0.attn.{p}" for p in "qkvo"}
    assert set(wrapped) == attn | {"layers.0.ffn.0", "layers.0.ffn.2", "head"}
    calibrate(model, ids, num_batches=1)
    assert sqnr(ref, predict(model, ids)) > 20.0


def test_sqnr() -> None:
    x = torch.randn(100, 10)
    assert sqnr(x, x) == math.inf
    assert sqnr(x, 0.9 * x) == pytest.approx(20.0)
    assert sqnr(torch.zeros(3), torch.ones(3)) == -math.inf
    with pytest.raises(ConfigError, match=r"sqnr needs tensors of one shape, got \(3,\) and \(4,\)"):
        sqnr(torch.zeros(3), torch.zeros(4))


def _sabotaged_mlp() -> tuple[nn.Module, Split]:
    """An MLP whose middle layer carries a huge weight on a hidden unit that is always 0: the fp32
    function is untouched, but quantizing that layer's weights wipes out every other weight."""
    model = build("mlp", input_shape=(16,), num_classes=4, hidden=[32, 32])
    with torch.no_grad():
        first, middle = model.net[1], model.net[3]
        first.weight[5].zero_()
        first.bias[5] = -1.0  # unit 5 is dead after the ReLU
        middle.weight[:, 5] = 1000.0
    x = torch.randn(300, 16)
    y = predict(model, x).argmax(1)  # labels the fp32 model gets right
    return model, Split(x, y)


def test_sensitivity_ranks_the_sabotaged_layer_worst() -> None:
    model, split = _sabotaged_mlp()
    before = copy.deepcopy(model.state_dict())
    results = layer_sensitivity(model, split, bits=8)
    assert results[0].name == "net.3"
    assert results[0].sqnr_db < results[1].sqnr_db - 15.0
    assert results[1].sqnr_db > 25.0 and results[1].accuracy_delta is not None
    assert results[0].accuracy_delta is not None and results[0].accuracy_delta < -0.2
    assert results[0].params == 32 * 32 + 32
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # model left as it was
    assert mixed_precision_plan(results, max_fp32_layers=1) == {"net.3"}
    assert mixed_precision_plan(results, sqnr_threshold=results[1].sqnr_db - 1.0) == {"net.3"}
    assert mixed_precision_plan(results, sqnr_threshold=math.inf, max_fp32_layers=2) == {r.name for r in results[:2]}
    table = format_sensitivity(results)
    assert table.splitlines()[1].startswith("net.3") and "SQNR dB" in table
    with_inputs = layer_sensitivity(model, split.x, bits=8, activations=True, calibration=split.x[:100])
    assert with_inputs[0].name == "net.3" and with_inputs[0].accuracy_delta is None


def test_sensitivity_on_convs_and_errors() -> None:
    model = build("lenet5", input_shape=(1, 8, 8), num_classes=10)
    x = torch.rand(64, 1, 8, 8)
    results = layer_sensitivity(model, x, bits=4, weight_spec=QuantSpec(bits=4, symmetric=True), activations=True)
    assert {r.name for r in results} == {"features.0", "features.3", "classifier.1", "classifier.3", "classifier.5"}
    assert [r.sqnr_db for r in results] == sorted(r.sqnr_db for r in results)
    with pytest.raises(DataError, match="sensitivity needs tensor inputs; tokenize text first"):
        layer_sensitivity(model, Split(["a", "b"], torch.zeros(2, dtype=torch.long)))
    with pytest.raises(ConfigError, match=r"bits must be in 1\.\.8, got 9"):
        layer_sensitivity(model, x, bits=9)
    fake = [LayerSensitivity("a", 10.0, None, 1)]
    with pytest.raises(ConfigError, match="mixed_precision_plan needs max_fp32_layers, sqnr_threshold or both"):
        mixed_precision_plan(fake)
    with pytest.raises(ConfigError, match="max_fp32_layers must be >= 0, got -1"):
        mixed_precision_plan(fake, max_fp32_layers=-1)
