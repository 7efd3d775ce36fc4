"""Text bundles pad dynamically: rows are grouped by length and each batch is padded only to its own
longest text, with logits equal to running every row at the fixed ``max_length`` padding."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from slimtune.export.bundle import _padding_is_masked, export_bundle
from slimtune.export.onnx import export_onnx
from slimtune.models.serialization import get_spec
from slimtune.quantize.ort_dynamic import OrtDynamicInt8Config, quantize_dynamic_onnx
from slimtune.runtime import Predictor
from slimtune.runtime.text import length_buckets
from slimtune.testing.tiny import SEQ, tiny
from slimtune.train import TrainConfig, fit

WORDS = ["[PAD]", "[UNK]", "good", "bad", "movie", "food", "the", "was", "very", "not"]
TEXTS = ["good", "the movie was very very good", "bad food", "not good", "the food was not very bad at all",
         "movie", "was the movie good", "very bad"]  # fmt: skip


class Recorder:
    """Wraps an ONNX Runtime session and records the shape of every batch it runs."""

    def __init__(self, session: Any) -> None:
        self.session, self.shapes = session, []

    def run(self, outputs: Any, feed: dict[str, np.ndarray]) -> Any:
        self.shapes.append(next(iter(feed.values())).shape)
        return self.session.run(outputs, feed)


@pytest.fixture(scope="module")
def trained() -> tuple[Any, Any, Any]:
    """A tiny BERT trained one epoch, with a word-level tokenizer that pads to ``SEQ`` with id 0."""
    tokenizers = pytest.importorskip("tokenizers")
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.enable_padding(length=SEQ, pad_id=0)
    tok.enable_truncation(SEQ)
    model, data = tiny("tiny-bert")
    get_spec(model)["preprocess"] = {"hf_tokenizer": tok.to_str(), "max_length": SEQ}
    fit(model, data, config=TrainConfig(epochs=1, batch_size=16), progress=False)
    return model.eval(), data, tok


@pytest.fixture(scope="module")
def bundle(trained: tuple[Any, Any, Any], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    model, data, tok = trained
    return export_bundle(model, tmp_path_factory.mktemp("b") / "hf", data=data), tok


@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_dynamic_padding_gives_the_fixed_padding_logits(bundle: tuple[Path, Any], batch_size: int) -> None:
    folder, tok = bundle
    p = Predictor(folder)
    fixed = np.asarray([e.ids for e in tok.encode_batch(TEXTS)], dtype=np.int64)  # every row at max_length
    expected = np.concatenate([p.session.run(None, {p.input_name: row[None]})[0] for row in fixed])
    p.session = Recorder(p.session)
    got = p.logits(TEXTS, batch_size=batch_size)
    assert got.shape == expected.shape and np.abs(got - expected).max() < 1e-5
    lengths = [int(np.nonzero(r)[0][-1]) + 1 for r in fixed]
    shapes = p.session.shapes
    assert sum(s[0] for s in shapes) == len(TEXTS) and all(s[0] <= batch_size for s in shapes)
    assert max(s[1] for s in shapes) == max(lengths) < SEQ  # never padded to the fixed length
    if batch_size < len(TEXTS):  # length buckets: the short texts' batch is shorter than the longest text
        assert min(s[1] for s in shapes) < max(lengths)


def test_length_buckets_group_similar_lengths_and_keep_track_of_rows() -> None:
    ids = [[5, 6, 7, 0, 0], [5, 0, 0, 0, 0], [5, 6, 7, 8, 9], [0, 0, 0, 0, 0], [5, 6, 0, 0, 0]]
    buckets = length_buckets(ids, 0, 2)
    assert [rows for rows, _ in buckets] == [[1, 3], [4, 0], [2]]
    assert buckets[0][1] == [[5], [0]] and buckets[1][1] == [[5, 6, 0], [5, 6, 7]] and buckets[2][1] == [ids[2]]


class _LengthDependent(torch.nn.Module):
    """A float model that does not mask its padding: its logits move with the padded length."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.inner(ids)
        return out + 0.01 * ids.shape[1]


def test_dynamic_int8_text_bundle_pads_dynamically_when_the_float_model_masks(
    trained: tuple[Any, Any, Any], tmp_path: Path
) -> None:
    """A dynamic int8 graph's activation scales see the padding, so cutting it moves the logits by a quantization
    step: the float model is checked instead, and the graph's predictions must not change."""
    model, data, tok = trained
    ids = torch.tensor([e.ids for e in tok.encode_batch(TEXTS)])
    fp32 = export_onnx(model, ids[:1], tmp_path / "fp32.onnx")
    int8 = tmp_path / "int8.onnx"
    quantize_dynamic_onnx(fp32, int8, OrtDynamicInt8Config())
    assert _padding_is_masked(int8, ids, 0, model)
    assert not _padding_is_masked(int8, ids, 0, _LengthDependent(model))  # the float model must mask
    assert not _padding_is_masked(int8, ids, None, model)  # no pad id: nothing to cut
    folder = export_bundle(model, tmp_path / "bundle", data=data, onnx=int8)
    p = Predictor(folder)
    assert p.manifest.input["tokenizer"]["trim_padding"] is True
    fixed = np.concatenate([p.session.run(None, {p.input_name: row[None].numpy()})[0] for row in ids])
    got = p.logits(TEXTS, batch_size=1)
    assert (got.argmax(1) == fixed.argmax(1)).all()
    np.testing.assert_allclose(got, fixed, atol=0.1)  # the same answers up to the int8 activation scales
    assert p.preprocess(TEXTS[:1]).shape[1] < SEQ  # the padding is cut
