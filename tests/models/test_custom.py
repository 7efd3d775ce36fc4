"""Your own ``nn.Module``: trained and structurally pruned from the API, saved as safetensors + a spec naming
its class (no pickle), rebuilt from the class the caller passes, and bundled from its ONNX export."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from slimtune.data import DataSplits
from slimtune.errors import ConfigError, DataError, OutputExistsError
from slimtune.export.bundle import export_bundle
from slimtune.export.onnx import export_onnx
from slimtune.models import build, load_model, save_model
from slimtune.prune import StructuredPruneConfig, prune_
from slimtune.runtime import Predictor
from slimtune.train import TrainConfig, fit


class DigitNet(nn.Module):
    """A small CNN of the user's own: conv → BN → ReLU twice, pooled, then a linear head."""

    def __init__(self, width: int = 8, classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )  # fmt: skip
        self.head = nn.Linear(2 * width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.features(x))
        return out


class OtherNet(DigitNet):
    pass


@pytest.fixture(scope="module")
def pruned(digits: DataSplits) -> DigitNet:
    torch.manual_seed(0)
    net = DigitNet(width=8)
    fit(net, digits, config=TrainConfig(epochs=2, lr=0.01, seed=0))
    prune_(net, StructuredPruneConfig(ratio=0.5, channel_round_to=1), data=digits)
    assert net.features[0].out_channels == 4  # physically shrunk: the saved spec must rebuild this
    return net


def test_own_module_saves_without_pickle_and_loads_from_the_callers_class(
    pruned: DigitNet, digits: DataSplits, tmp_path: Path
) -> None:
    x = digits.test.x
    assert isinstance(x, torch.Tensor)
    save_model(pruned, tmp_path / "m", options={"width": 8}, input_shape=(1, 8, 8))
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["model.safetensors", "spec.json"]
    spec = json.loads((tmp_path / "m" / "spec.json").read_text())
    assert spec["arch"] == "custom" and spec["class"].endswith(":DigitNet") and spec["options"] == {"width": 8}
    again = load_model(tmp_path / "m", custom=DigitNet)
    assert isinstance(again, DigitNet) and again.features[0].out_channels == 4
    assert torch.equal(again.eval()(x), pruned.eval()(x))
    factory = load_model(tmp_path / "m", custom=lambda **kw: DigitNet(**kw))  # a factory works as well
    assert torch.equal(factory.eval()(x), pruned.eval()(x))
    save_model(again, tmp_path / "again")  # the loaded model carries its spec: no options needed to re-save
    assert torch.equal(load_model(tmp_path / "again", custom=DigitNet).eval()(x), pruned.eval()(x))


def test_the_class_always_comes_from_the_caller(pruned: DigitNet, tmp_path: Path) -> None:
    save_model(pruned, tmp_path / "m", options={"width": 8})
    with pytest.raises(DataError, match=r"holds your own module .*:DigitNet; .*custom=DigitNet") as info:
        load_model(tmp_path / "m")
    assert "\n" not in str(info.value)
    with pytest.raises(DataError, match=r"saved from .*:DigitNet, not .*:OtherNet"):
        load_model(tmp_path / "m", custom=OtherNet)
    spec_path = tmp_path / "m" / "spec.json"
    spec = json.loads(spec_path.read_text())
    spec["class"] = "a_module_that_does_not_exist:DigitNet"  # never imported: the caller's class is used
    spec_path.write_text(json.dumps(spec))
    assert isinstance(load_model(tmp_path / "m", custom=DigitNet), DigitNet)
    spec["options"] = {"width": 8, "depth": 3}
    spec_path.write_text(json.dumps(spec))
    with pytest.raises(ConfigError, match=r"cannot build DigitNet\(\*\*\{.*'depth': 3\}\)"):
        load_model(tmp_path / "m", custom=DigitNet)


def test_bad_custom_calls_are_one_line(pruned: DigitNet, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="plain JSON values"):
        save_model(pruned, tmp_path / "a", options={"act": nn.ReLU()})
    with pytest.raises(ConfigError, match="input_shape must be positive integers"):
        save_model(pruned, tmp_path / "b", input_shape=(0, 8))
    mlp = build("mlp", input_shape=(64,), num_classes=10, hidden=[8])
    with pytest.raises(ConfigError, match="already has a slimtune spec"):
        save_model(mlp, tmp_path / "c", options={"hidden": [8]})
    save_model(mlp, tmp_path / "c")
    with pytest.raises(ConfigError, match="holds slimtune's 'mlp' model; load it without custom="):
        load_model(tmp_path / "c", custom=DigitNet)
    save_model(pruned, tmp_path / "d", options={"width": 8})
    with pytest.raises(ConfigError, match=r"must be an nn\.Module class"):
        load_model(tmp_path / "d", custom=int)  # type: ignore[arg-type]


def test_own_module_bundles_from_its_onnx_and_predicts(pruned: DigitNet, digits: DataSplits, tmp_path: Path) -> None:
    x = digits.test.x
    assert isinstance(x, torch.Tensor)
    save_model(pruned, tmp_path / "m", options={"width": 8}, input_shape=(1, 8, 8))
    model = load_model(tmp_path / "m", custom=DigitNet)
    onnx = export_onnx(model, x[:1], tmp_path / "net.onnx")
    bundle = export_bundle(model, tmp_path / "bundle", onnx=onnx)  # no data: the spec gives the input shape
    manifest = json.loads((bundle / "bundle.json").read_text())
    assert manifest["input"]["shape"] == [1, 8, 8] and manifest["output"]["labels"] == [str(i) for i in range(10)]
    got = [r["index"] for r in Predictor(bundle).predict(x.numpy())]
    assert got == model.eval()(x).argmax(1).tolist()
    with_data = export_bundle(model, tmp_path / "b2", data=digits)  # fp32 export here, parity-checked
    assert np.array_equal(Predictor(with_data).logits(x.numpy()).argmax(1), np.array(got))


def test_save_model_onto_a_file_and_load_model_on_a_list_spec(tmp_path: Path) -> None:
    mlp = build("mlp", input_shape=(64,), num_classes=10, hidden=[8])
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(OutputExistsError, match="it is a file; give a folder path"):
        save_model(mlp, tmp_path / "file")
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "spec.json").write_text("[]")
    with pytest.raises(DataError, match="holds a JSON list, not the model spec object"):
        load_model(tmp_path / "m")
