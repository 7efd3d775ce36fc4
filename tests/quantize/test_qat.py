from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from slimtune.data import DataSplits
from slimtune.errors import ConfigError
from slimtune.export.onnx import check_parity, ort_predict, parity
from slimtune.models import build, save_model
from slimtune.prune import MaskCallback, masks_from_zeros, prune_
from slimtune.prune.unstructured import MagnitudePruneConfig
from slimtune.quantize.affine import FakeQuantize, Int8Weight
from slimtune.quantize.qat import (
    QATCallback,
    QATConfig,
    convert_qat,
    export_qat_onnx,
    load_qat_model,
    prepare_qat_,
    qat_,
    qat_layers,
)
from slimtune.testing.tiny import tiny
from slimtune.train import TrainConfig, fit, predict

TRAIN = TrainConfig(epochs=12, lr=1e-2, batch_size=32)
QAT_TRAIN = TrainConfig(epochs=3, lr=1e-3, batch_size=32)


@pytest.fixture(scope="module")
def trained(digits: DataSplits) -> nn.Module:
    torch.manual_seed(0)
    model = build("mlp", input_shape=digits.input_shape, num_classes=digits.num_classes, hidden=[64, 32])
    fit(model, digits, config=TRAIN)
    return model


def _accuracy(model: nn.Module, data: DataSplits) -> float:
    assert isinstance(data.test.x, torch.Tensor)
    return float((predict(model, data.test.x).argmax(1) == data.test.y).float().mean())


def _int8_weights(path: Path) -> list[np.ndarray]:
    graph = onnx.load(str(path)).graph
    return [
        numpy_helper.to_array(t) for t in graph.initializer if t.data_type == onnx.TensorProto.INT8 and len(t.dims) >= 2
    ]


def test_qat_exports_qdq_with_parity(trained: nn.Module, digits: DataSplits, tmp_path: Path) -> None:
    model = copy.deepcopy(trained)
    fp32 = _accuracy(model, digits)
    layers = prepare_qat_(model, QATConfig(), calibration=digits.train.x[:128])
    assert list(layers) == ["net.1", "net.3", "net.5"]
    qat_(model, digits, QATConfig(), train=QAT_TRAIN)
    assert _accuracy(model, digits) >= fp32 - 0.03  # measured: 0.925 fp32, 0.933 after QAT
    path = export_qat_onnx(model, digits.test.x[:1], tmp_path / "qat.onnx")
    graph = onnx.load(str(path)).graph
    ops = [n.op_type for n in graph.node]
    assert ops.count("QuantizeLinear") == 3 and ops.count("DequantizeLinear") == 6  # 3 inputs, 3 weights
    assert not {"ReduceMin", "ReduceMax", "Min", "Max"} & set(ops)  # no observer ops in the graph
    weights = _int8_weights(path)
    assert len(weights) == 3 and all(np.abs(w).max() <= 127 for w in weights)
    # the exported weight scales are the learnt ones
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    scales = [inits[n.input[1]] for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits]
    learnt = [layer.weight_fq.scale.numpy() for layer in qat_layers(model).values() if layer.weight_fq is not None]
    assert all(np.array_equal(a, b) for a, b in zip(scales, learnt))
    # ORT's fused int8 kernels requantize with their own rounding: rarely one activation lands one level
    # off (measured: 1 row of 120, max |Δ| 0.023 on logits up to 18.5); the unfused graph is exact
    report = parity(model, path, digits.test.x, digits.test.y)
    assert report["max_abs_diff"] < 0.05 and report["argmax_agreement"] >= 0.99
    check_parity(report, what="qat", max_abs_diff=0.05, min_argmax_agreement=0.99, max_accuracy_drop=1.0)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    unfused = ort_predict(session, digits.test.x.numpy())
    assert np.abs(unfused - predict(model, digits.test.x).numpy()).max() < 1e-4


def test_convert_matches_fake_quant_and_eval_never_observes(trained: nn.Module, digits: DataSplits) -> None:
    model = copy.deepcopy(trained)
    prepare_qat_(model, QATConfig(), calibration=digits.train.x[:64])
    before = {n: b.clone() for n, b in model.named_buffers()}
    ref = predict(model, digits.test.x)  # eval mode: ranges must not move
    assert all(torch.equal(before[n], b) for n, b in model.named_buffers())
    frozen = convert_qat(model)
    assert any(isinstance(m, Int8Weight) for m in frozen.modules())
    assert all(not m.observe for m in frozen.modules() if isinstance(m, FakeQuantize))
    assert torch.equal(predict(frozen, digits.test.x), ref)


def test_qat_keeps_pruning_sparsity(trained: nn.Module, digits: DataSplits, tmp_path: Path) -> None:
    model = copy.deepcopy(trained)
    prune_(model, MagnitudePruneConfig(sparsity=0.9))
    masks = masks_from_zeros(model)  # names of the plain layers: the QAT wrappers expose .weight
    zeros = sum(int((~m).sum()) for m in masks.values())
    config = QATConfig()
    prepare_qat_(model, config, calibration=digits.train.x[:128])
    train = TrainConfig(epochs=4, lr=3e-3, batch_size=32)
    fit(model, digits, config=train, callbacks=[QATCallback(config), MaskCallback(masks)])
    assert _accuracy(model, digits) > 0.5  # measured 0.64 (0.35 right after pruning)
    assert sum(int((layer.weight == 0).sum()) for layer in qat_layers(model).values()) == zeros
    path = export_qat_onnx(model, digits.test.x[:1], tmp_path / "sparse.onnx")
    assert sum(int((w == 0).sum()) for w in _int8_weights(path)) == zeros


def test_freezing_observers(trained: nn.Module, digits: DataSplits) -> None:
    model = copy.deepcopy(trained)
    config = QATConfig(freeze_observers_after_epoch=0)
    prepare_qat_(model, config, calibration=digits.train.x[:128])
    before = {n: b.clone() for n, b in model.named_buffers() if n.endswith(("scale", "zero_point"))}
    fit(model, digits, config=TrainConfig(epochs=1, lr=1e-3), callbacks=[QATCallback(config)])
    assert all(torch.equal(before[n], b) for n, b in model.named_buffers() if n in before)
    moving = copy.deepcopy(trained)
    prepare_qat_(moving, QATConfig(), calibration=digits.train.x[:128])
    start = moving.net[3].input_fq.scale.clone()  # hidden activations: their range moves while training
    fit(moving, digits, config=TrainConfig(epochs=1, lr=1e-3), callbacks=[QATCallback(QATConfig())])
    assert not torch.equal(start, moving.net[3].input_fq.scale)


def test_conv_qat_export(tmp_path: Path) -> None:
    model, data = tiny("lenet5")
    assert isinstance(data.train.x, torch.Tensor) and isinstance(data.test.x, torch.Tensor)
    qat_(model, data, QATConfig(reduce_range=True), train=TrainConfig(epochs=1, lr=1e-3), calibration=data.train.x)
    path = export_qat_onnx(model, data.test.x[:1], tmp_path / "conv.onnx")
    assert all(w.min() >= -64 and w.max() <= 63 for w in _int8_weights(path))  # 7-bit weights in int8
    report = parity(model, path, data.test.x)
    assert report["max_abs_diff"] < 0.05 and report["argmax_agreement"] >= 0.99


def test_save_and_load_prepared_model(trained: nn.Module, digits: DataSplits, tmp_path: Path) -> None:
    model = copy.deepcopy(trained)
    prepare_qat_(model, QATConfig(exclude=("<last>",)), calibration=digits.train.x[:64])
    assert model.slimtune_spec["qat"]["layers"] == ["net.1", "net.3"]
    folder = save_model(model, tmp_path / "qat")
    loaded = load_qat_model(folder)
    assert isinstance(loaded.net[5], nn.Linear) and list(qat_layers(loaded)) == ["net.1", "net.3"]
    assert torch.equal(predict(loaded, digits.test.x), predict(model, digits.test.x))
    save_model(trained, tmp_path / "plain")
    with pytest.raises(ConfigError, match="no QAT model"):
        load_qat_model(tmp_path / "plain")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"bits": 1}, "bits must be in 2..8"),
        ({"observer": "moving-averag"}, "did you mean 'moving-average'"),
        ({"freeze_observers_after_epoch": -1}, "must be >= 0"),
        ({"exclude": ["net.("]}, "not a valid regular expression"),
    ],
)
def test_config_errors(options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        QATConfig.from_dict(options)
    assert "\n" not in str(info.value)


def test_misuse_errors(trained: nn.Module, digits: DataSplits, tmp_path: Path) -> None:
    example = digits.test.x[:1]
    with pytest.raises(ConfigError, match="prepare_qat_"):
        export_qat_onnx(copy.deepcopy(trained), example, tmp_path / "x.onnx")
    with pytest.raises(ConfigError, match="matches no layer"):
        prepare_qat_(copy.deepcopy(trained), QATConfig(exclude=("classifier",)))
    model = copy.deepcopy(trained)
    prepare_qat_(model)
    with pytest.raises(ConfigError, match="never saw data"):
        export_qat_onnx(model, example, tmp_path / "x.onnx")
    with pytest.raises(ConfigError, match="runs once"):
        prepare_qat_(model)
    with pytest.raises(ConfigError, match="pass calibration"):
        fit(model, digits, config=QAT_TRAIN, callbacks=[QATCallback(QATConfig(freeze_observers_after_epoch=0))])
    low = copy.deepcopy(trained)
    prepare_qat_(low, QATConfig(activation_bits=4), calibration=digits.train.x[:64])
    with pytest.raises(ConfigError, match="8-bit activations"):
        export_qat_onnx(low, example, tmp_path / "x.onnx")


def test_qat_keeps_the_forward_of_conv_subclasses(tmp_path: Path) -> None:
    """A Conv2d subclass that pads in its own forward (EfficientNet's Conv2dStaticSamePadding) keeps doing
    so under QAT and in the exported QDQ graph."""
    from torch import nn

    from slimtune.export import parity
    from slimtune.quantize.qat import QATConfig, export_qat_onnx, prepare_qat_

    class PaddedConv(nn.Conv2d):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(nn.functional.pad(x, (1, 2, 1, 2)))

    torch.manual_seed(0)
    model = nn.Sequential(PaddedConv(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(3))
    x = torch.rand(8, 1, 6, 6)
    ref = model(x)
    prepare_qat_(model, QATConfig(), calibration=x)
    model.eval()
    out = model(x)
    assert out.shape == ref.shape and (out - ref).abs().max() < 0.05
    path = export_qat_onnx(model, x[:1], tmp_path / "m.onnx")
    assert parity(model, path, x)["max_abs_diff"] < 1e-2
