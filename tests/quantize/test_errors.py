"""Bad inputs to quantization end in one clear line (a SlimtuneError), never a traceback from deep inside:
bits outside 1..8, an empty calibration set, an unknown observer, a layer the ONNX exporter can't handle."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from slimtune.errors import ConfigError, DataError, SlimtuneError, UnsupportedModelError
from slimtune.export import export_onnx
from slimtune.models import build
from slimtune.quantize import (
    CalibrationDataset,
    ClusterConfig,
    FakeQuantize,
    MixedPrecisionConfig,
    OrtDynamicInt8Config,
    OrtStaticInt8Config,
    QATConfig,
    QuantSpec,
    calibrate,
    layer_sensitivity,
    make_observer,
    prepare_qat_,
    quantize_layers,
    quantize_model,
    quantize_onnx,
)
from slimtune.quantize.qat import export_qat_onnx
from slimtune.recipe import parse_recipe


class Spectral(nn.Module):
    """A Linear layer after an FFT: the legacy ONNX exporter has no aten::fft_fft."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.fft.fft(x).abs())


MIXED = MixedPrecisionConfig(max_fp32_layers=1)


def _mlp() -> nn.Module:
    return build("mlp", input_shape=(4,), num_classes=3, hidden=[8])


def _qat_stage(bits: int) -> None:
    parse_recipe(
        {"data": {"name": "digits"}, "model": {"name": "mlp"}, "stages": [{"stage": "qat", "qat": {"bits": bits}}]}
    )


def _fp32(tmp: Path) -> Path:
    return export_onnx(_mlp(), torch.rand(1, 4), tmp / "m.onnx")


def _prepared_spectral() -> nn.Module:
    model = Spectral()
    prepare_qat_(model, QATConfig(), calibration=torch.rand(8, 4))
    return model


CASES: dict[str, tuple[type[SlimtuneError], str, Callable[[Path], object]]] = {
    "spec bits 0": (ConfigError, r"bits must be in 1\.\.8, got 0", lambda _: QuantSpec(bits=0)),
    "spec bits 9": (ConfigError, r"bits must be in 1\.\.8, got 9", lambda _: QuantSpec.weights(9)),
    "qat bits 9": (ConfigError, r"bits must be in 2\.\.8, got 9", lambda _: QATConfig(bits=9)),
    "recipe qat bits": (ConfigError, r"bits must be in 2\.\.8, got 12", lambda _: _qat_stage(12)),
    "cluster bits 0": (ConfigError, r"bits must be an integer in 1\.\.8", lambda _: ClusterConfig(bits=0)),
    "sensitivity bits 9": (
        ConfigError, r"bits must be in 1\.\.8, got 9", lambda _: layer_sensitivity(_mlp(), torch.rand(4, 4), bits=9),
    ),
    "empty dataset": (DataError, "^empty calibration set", lambda _: CalibrationDataset(torch.empty(0, 4))),
    "empty calibrate": (
        DataError, "^empty calibration set", lambda _: calibrate(_with_fake_quant(), torch.empty(0, 4)),
    ),
    "empty observer": (ConfigError, "observer saw no data", lambda _: make_observer("mse").range()),
    "empty static": (
        ConfigError, "static int8 needs a calibration set",
        lambda t: quantize_onnx(_fp32(t), t / "q.onnx", OrtStaticInt8Config(), calibration=torch.empty(0, 4)),
    ),
    "empty mixed": (
        ConfigError, "mixed precision needs calibration inputs",
        lambda t: quantize_model(_mlp(), t / "q.onnx", OrtDynamicInt8Config(), example=torch.rand(1, 4),
                                 calibration=torch.empty(0, 4), mixed_precision=MIXED),
    ),
    "observer name": (ConfigError, r"unknown observer 'kl'.*known: entropy", lambda _: make_observer("kl")),
    "observer fq": (
        ConfigError, r"unknown observer 'minmx' \(did you mean 'minmax'", lambda _: FakeQuantize(QuantSpec(), "minmx"),
    ),
    "observer qat": (ConfigError, "unknown observer 'ema'", lambda _: QATConfig(observer="ema")),
    "observer ort": (
        ConfigError, "observer: 'mse' is not one of", lambda _: OrtStaticInt8Config.from_dict({"observer": "mse"}),
    ),
    "observer sensitivity": (
        ConfigError, "unknown observer 'kl'",
        lambda _: layer_sensitivity(_mlp(), torch.rand(4, 4), activations=True, observer="kl"),
    ),
    "export int8": (
        UnsupportedModelError, r"^ONNX export of Spectral failed: .*'aten::fft_fft'",
        lambda t: quantize_model(Spectral(), t / "q.onnx", OrtDynamicInt8Config(), example=torch.rand(1, 4)),
    ),
    "export qat": (
        UnsupportedModelError, r"^ONNX export of Spectral failed",
        lambda t: export_qat_onnx(_prepared_spectral(), torch.rand(1, 4), t / "q.onnx"),
    ),
}  # fmt: skip


def _with_fake_quant() -> nn.Module:
    model = _mlp()
    quantize_layers(model)
    return model


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_clear_line(case: str, tmp_path: Path) -> None:
    error, message, call = CASES[case]
    with pytest.raises(error, match=message) as info:
        call(tmp_path)
    assert "\n" not in str(info.value) and len(str(info.value)) < 300
