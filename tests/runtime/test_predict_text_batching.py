"""Dynamic-int8 TEXT bundles run in batches: token ids cannot hold an extreme row, so running them one row at
a time (the isolation float inputs get, see test_predict_inputs.py) would only cost throughput."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from slimtune.export.bundle import export_bundle
from slimtune.export.onnx import export_onnx
from slimtune.models.serialization import get_spec
from slimtune.quantize.ort_dynamic import OrtDynamicInt8Config, quantize_dynamic_onnx
from slimtune.runtime import Predictor
from slimtune.testing.tiny import SEQ, tiny

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "good", "bad", "movie", "food", "the", "was"]
TEXTS = ["the movie was good", "bad food", "good good movie", "the food was bad", "movie"]


class _CountingSession:
    """Wraps an ORT session and counts its ``run`` calls."""

    def __init__(self, session: Any) -> None:
        self.session, self.calls = session, 0

    def run(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return self.session.run(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.session, name)


@pytest.fixture(scope="module")
def text_int8_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("text-dyn")
    model, data = tiny("transformer-small")
    get_spec(model)["preprocess"] = {"tokenizer": {"type": "word", "vocab": VOCAB}, "max_length": SEQ}
    assert isinstance(data.test.x, torch.Tensor)
    fp32 = export_onnx(model.eval(), data.test.x[:1], root / "fp32.onnx")
    quantize_dynamic_onnx(fp32, root / "int8.onnx", OrtDynamicInt8Config(reduce_range=True))
    return export_bundle(model, root / "bundle", data=data, onnx=root / "int8.onnx")


def test_text_int8_bundle_runs_in_batches(text_int8_bundle: Path) -> None:
    predictor = Predictor(text_int8_bundle, threads=1)
    assert predictor.manifest.raw["precision"] == "int8" and not predictor.row_by_row
    counting = _CountingSession(predictor.session)
    predictor.session = counting
    batched = predictor.logits(TEXTS)
    assert counting.calls == 1 and batched.shape[0] == len(TEXTS)
    one_by_one = np.concatenate([predictor.logits([t]) for t in TEXTS])
    np.testing.assert_allclose(batched, one_by_one, atol=0.1)  # same answers up to the batch's int8 scales
    assert (batched.argmax(1) == one_by_one.argmax(1)).all()


def test_float_int8_bundle_still_runs_row_by_row(tmp_path: Path) -> None:
    model, data = tiny("mlp")
    assert isinstance(data.test.x, torch.Tensor)
    fp32 = export_onnx(model.eval(), data.test.x[:1], tmp_path / "fp32.onnx")
    quantize_dynamic_onnx(fp32, tmp_path / "int8.onnx", OrtDynamicInt8Config(reduce_range=True))
    predictor = Predictor(export_bundle(model, tmp_path / "b", data=data, onnx=tmp_path / "int8.onnx"), threads=1)
    assert predictor.row_by_row
    counting = _CountingSession(predictor.session)
    predictor.session = counting
    predictor.logits(data.test.x[:5].numpy())
    assert counting.calls == 5
