"""Bits per layer read back from what a model holds: torch wrappers and weights, ONNX graphs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from slimtune.errors import ConfigError
from slimtune.export import export_onnx
from slimtune.models import build
from slimtune.quantize import (
    ClusterConfig,
    OrtDynamicInt8Config,
    OrtStaticInt8Config,
    QATConfig,
    QuantSpec,
    binarize_,
    calibrate,
    cluster_,
    fold_,
    nodes_for_layers,
    onnx_precision,
    prepare_qat_,
    quantize_layers,
    quantize_onnx,
    torch_precision,
)
from slimtune.quantize.precision import layer_modules, scope_name, weight_label
from slimtune.quantize.qat import export_qat_onnx
from slimtune.testing.tiny import tiny


def _mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return build("mlp", input_shape=(16,), num_classes=4, hidden=[64, 64])


def test_scope_names_of_legacy_exporter_nodes() -> None:
    assert scope_name("/net/net.1/Gemm") == "net.1"
    assert scope_name("/layers/layers.1/downsample/downsample.0/Conv") == "layers.1.downsample.0"
    assert scope_name("/layers.0/attn/q/MatMul") == "layers.0.attn.q"
    assert scope_name("/fc/Gemm_MatMul_quant") == "fc"
    assert scope_name("/Gemm") is None and scope_name("node_linear") is None


def test_torch_precision_reads_wrappers_and_weights() -> None:
    model = _mlp()
    assert torch_precision(model) == {"net.1": "fp32", "net.3": "fp32", "net.5": "fp32"}
    quantize_layers(model, weight=QuantSpec.weights(4), layers=["net.1"])
    quantize_layers(model, weight=QuantSpec.weights(3), quantize_activations=False, layers=["net.3"])
    assert torch_precision(model)["net.1"] == "w4 fake-quant"  # inputs pass through until calibrated
    calibrate(model, torch.rand(32, 16))
    assert torch_precision(model) == {"net.1": "w4a8 fake-quant", "net.3": "w3 fake-quant", "net.5": "fp32"}
    low = _mlp()
    binarize_(low)  # first and last layers stay float by default
    assert torch_precision(low) == {"net.1": "fp32", "net.3": "binary", "net.5": "fp32"}
    fold_(low)  # plain layers again: read from the values
    assert torch_precision(low)["net.3"] == "binary"
    clustered = _mlp()
    cluster_(clustered, ClusterConfig(bits=3, iterations=20))
    assert set(torch_precision(clustered).values()) == {"clustered 3-bit"}
    assert torch_precision(_mlp().half()) == {"net.1": "fp16", "net.3": "fp16", "net.5": "fp16"}


def test_onnx_precision_is_read_from_the_graph(tmp_path: Path) -> None:
    model, data = tiny("lenet5")
    assert isinstance(data.train.x, torch.Tensor) and isinstance(data.test.x, torch.Tensor)
    layers = list(layer_modules(model))
    fp32 = export_onnx(model, data.test.x[:1], tmp_path / "fp32.onnx")
    assert set(onnx_precision(fp32, layers).values()) == {"fp32"}
    quantize_onnx(fp32, tmp_path / "static.onnx", OrtStaticInt8Config(), calibration=data.train.x[:32])
    assert onnx_precision(tmp_path / "static.onnx", layers) == dict.fromkeys(layers, "int8")
    quantize_onnx(fp32, tmp_path / "dyn.onnx", OrtDynamicInt8Config())  # dynamic int8 never quantizes Conv
    convs = {"features.0", "features.3"}
    assert onnx_precision(tmp_path / "dyn.onnx", layers) == {k: "fp32" if k in convs else "int8" for k in layers}
    excluded = OrtStaticInt8Config(exclude_layers=("features.3", "classifier.5"))
    info = quantize_onnx(fp32, tmp_path / "mixed.onnx", excluded, calibration=data.train.x[:32])
    assert info["excluded_nodes"] == ["/features/features.3/Conv", "/classifier/classifier.5/Gemm"]
    got = onnx_precision(tmp_path / "mixed.onnx", layers)
    assert got == {**dict.fromkeys(layers, "int8"), "features.3": "fp32", "classifier.5": "fp32"}
    assert onnx_precision(tmp_path / "mixed.onnx") == got  # without layer names: the scope names


def test_qat_graph_and_wrapped_layer_names(tmp_path: Path) -> None:
    model, data = tiny("transformer-small")
    assert isinstance(data.train.x, torch.Tensor) and isinstance(data.test.x, torch.Tensor)
    prepare_qat_(model, QATConfig(exclude=("<last>",), reduce_range=True), calibration=data.train.x[:32])
    layers = layer_modules(model)  # the QAT wrappers stand for the layers they wrap
    assert "head" in layers and not any(n.endswith(".layer") for n in layers)
    assert set(torch_precision(model).values()) == {"w7a8 fake-quant", "fp32"}  # reduce_range: 7-bit weights
    path = export_qat_onnx(model, data.test.x[:1], tmp_path / "qat.onnx")
    got = onnx_precision(path, layers)
    assert got["head"] == "fp32" and {v for k, v in got.items() if k != "head"} == {"int8"}
    assert len(got) == len(layers) == 13  # attention score MatMuls (no weights) are not layers


def test_nodes_for_unknown_layer_is_one_line(tmp_path: Path) -> None:
    fp32 = export_onnx(_mlp(), torch.rand(1, 16), tmp_path / "m.onnx")
    assert nodes_for_layers(fp32, ["net.5", "net.1"]) == ["/net/net.5/Gemm", "/net/net.1/Gemm"]
    with pytest.raises(ConfigError, match=r"layer 'net\.9' computes no MatMul/Gemm/Conv node.*net\.1") as info:
        nodes_for_layers(fp32, ["net.9"])
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="layer 'fc' computes no"):
        quantize_onnx(fp32, tmp_path / "q.onnx", OrtDynamicInt8Config(exclude_layers=("fc",)))


def test_weight_label_edge_cases() -> None:
    assert weight_label(torch.randn(8, 1)) == "fp32"  # one weight per row is trivially ±α: not binary
    assert weight_label(torch.zeros(8, 16)) == "fp32"  # fully pruned
    assert weight_label(torch.randn(8, 16).sign()) == "binary"
    assert weight_label(torch.randn(8, 16).bfloat16()) == "bf16"
