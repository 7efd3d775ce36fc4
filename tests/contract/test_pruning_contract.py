"""Every registered pruning method on every built-in architecture (and a tiny BERT): the output shape
is kept, the model trains, saves, reloads to identical outputs, and exports to ONNX with parity.
Registering a new method adds its row here for free."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from slimtune.export import export_onnx, parity
from slimtune.models import load_model, save_model
from slimtune.prune import LM_METHODS, PRUNERS, prune_
from slimtune.testing.tiny import TINY, tiny
from slimtune.train import TrainConfig, fit, predict


@pytest.mark.parametrize("arch", list(TINY))
@pytest.mark.parametrize("method", PRUNERS.names())
def test_method_on_architecture(method: str, arch: str, tmp_path: Path) -> None:
    if method in LM_METHODS:
        pytest.skip("a causal-LM method (needs text): covered by tests/prune/test_lm_*.py")
    if arch == "tiny-bert":
        pytest.importorskip("transformers")
    model, data = tiny(arch)
    assert isinstance(data.test.x, torch.Tensor)
    before = predict(model, data.test.x)
    prune_(model, PRUNERS.get(method)(), data=data, train=TrainConfig(epochs=1, batch_size=16))
    after = predict(model, data.test.x)
    assert after.shape == before.shape and torch.isfinite(after).all()
    fit(model, data, config=TrainConfig(epochs=1, batch_size=16))  # still trains
    save_model(model, tmp_path / "m")
    again = load_model(tmp_path / "m")
    torch.testing.assert_close(predict(again, data.test.x), predict(model, data.test.x))
    onnx_path = export_onnx(again, data.test.x[:1], tmp_path / "m.onnx")
    assert parity(again, onnx_path, data.test.x)["max_abs_diff"] < 1e-4
