"""Static int8 in ONNX Runtime with activation ranges from slimtune's observers (TensorQuantOverrides)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from slimtune.data import DataSplits
from slimtune.errors import ConfigError
from slimtune.export import export_onnx, parity
from slimtune.models import build
from slimtune.quantize import OrtStaticInt8Config, quantize_onnx
from slimtune.quantize.ort_observe import calibration_tensors, observed_ranges
from slimtune.train import TrainConfig, fit


def _activation_scales(path: Path) -> dict[str, float]:
    graph = onnx.load(str(path)).graph
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    return {
        n.input[0]: float(inits[n.input[1]])
        for n in graph.node
        if n.op_type == "QuantizeLinear" and n.input[0] not in inits and inits[n.input[1]].size == 1
    }


def test_range_observer_sets_ort_activation_ranges(digits: DataSplits, tmp_path: Path) -> None:
    assert isinstance(digits.train.x, torch.Tensor) and isinstance(digits.test.x, torch.Tensor)
    torch.manual_seed(0)
    model = build("mlp", input_shape=digits.input_shape, num_classes=10, hidden=[32])
    fit(model, digits, config=TrainConfig(epochs=5, lr=5e-3, batch_size=32))
    model.eval()
    fp32 = export_onnx(model, digits.test.x[:1], tmp_path / "fp32.onnx")
    calib = digits.train.x[:128]
    names = calibration_tensors(onnx.load(str(fp32)))
    assert names[0] == "input" and "logits" in names
    ranges = observed_ranges(fp32, calib.numpy(), observer="minmax")
    assert set(ranges) == set(names)
    assert float(ranges["input"][0]["rmin"]) == float(calib.min()) and float(ranges["input"][0]["rmax"]) == float(
        calib.max()
    )
    scales = {}
    for name, config in [
        ("ort", OrtStaticInt8Config()),
        ("minmax", OrtStaticInt8Config(range_observer="minmax")),
        ("entropy", OrtStaticInt8Config(range_observer="entropy")),
    ]:
        info = quantize_onnx(fp32, tmp_path / f"{name}.onnx", config, calibration=calib)
        scales[name] = _activation_scales(tmp_path / f"{name}.onnx")
        floor = 0.97 if name == "entropy" else 0.98  # entropy clips outliers on purpose: a little less agreement
        assert parity(model, tmp_path / f"{name}.onnx", digits.test.x)["argmax_agreement"] >= floor, name
    assert info["observer"] == "entropy (slimtune)"
    assert scales["minmax"] == pytest.approx(scales["ort"], rel=1e-6)  # same ranges as ORT's own MinMax
    clipped = [k for k in scales["ort"] if scales["entropy"][k] < scales["ort"][k] * 0.999]
    assert clipped and all(scales["entropy"][k] <= scales["ort"][k] * 1.001 for k in scales["ort"])
    assert np.isfinite(list(scales["entropy"].values())).all()


def test_unknown_range_observer_is_one_line() -> None:
    with pytest.raises(ConfigError, match=r"unknown observer 'msee' \(did you mean 'mse'\?\)") as info:
        OrtStaticInt8Config.from_dict({"range_observer": "msee"})
    assert "\n" not in str(info.value)
