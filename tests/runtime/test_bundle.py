"""Deploy bundles: made by a recipe or export_bundle, served by the torch-free Predictor and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from slimtune.cli.main import main as cli
from slimtune.data import load
from slimtune.errors import DataError
from slimtune.export.bundle import export_bundle
from slimtune.models.serialization import get_spec
from slimtune.recipe import parse_recipe, run_recipe
from slimtune.runtime import Predictor, bench
from slimtune.testing.tiny import SEQ, tiny
from slimtune.train import TrainConfig, fit

RECIPE = {
    "data": {"name": "digits", "seed": 0, "limit": 400},
    "model": {"name": "mlp", "options": {"hidden": [32]}},
    "stages": [
        {"stage": "train", "train": {"epochs": 8, "lr": 0.01, "seed": 0}},
        {"stage": "quantize", "method": "ort-dynamic-int8"},
        {"stage": "bundle"},
    ],
}


@pytest.fixture(scope="module")
def int8_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run")
    run_recipe(parse_recipe(RECIPE), out)
    return out / "03-bundle" / "bundle"


def test_recipe_bundle_holds_int8_model_report_and_card(int8_bundle: Path) -> None:
    manifest = json.loads((int8_bundle / "bundle.json").read_text())
    assert manifest["precision"] == "int8" and manifest["input"]["pixel_scale"] == pytest.approx(1 / 16)
    assert manifest["parity"]["argmax_agreement"] >= 0.99
    for name in ("model.onnx", "examples.npy", "report.json", "report.html", "MODEL_CARD.md"):
        assert (int8_bundle / name).is_file(), name
    card = (int8_bundle / "MODEL_CARD.md").read_text()
    assert "**quantize**" in card and "int8" in card and "argmax agreement" in card


def test_predictor_matches_test_accuracy_and_takes_raw_pixels(int8_bundle: Path) -> None:
    data = load("digits", seed=0, limit=400)
    assert isinstance(data.test.x, torch.Tensor)
    predictor = Predictor(int8_bundle, threads=1)
    preds = np.array([r["index"] for r in predictor.predict(data.test.x.numpy())])
    report = json.loads((int8_bundle / "report.json").read_text())
    acc = report["stages"][-1]["metrics"]["accuracy"]
    assert (preds == data.test.y.numpy()).mean() == pytest.approx(acc, abs=1e-6)
    raw = np.rint(data.test.x.numpy()[:, 0] * 16).astype(np.uint8)  # 0..16 pixels, no channel axis
    assert [r["index"] for r in predictor.predict(raw)] == preds.tolist()
    one = predictor.predict(raw[0], top_k=3)[0]
    assert len(one["top"]) == 3 and one["label"] == one["top"][0][0]
    assert sum(p for _, p in predictor.predict(raw[0], top_k=10)[0]["top"]) == pytest.approx(1, abs=1e-5)


def test_runtime_and_cli_work_without_torch(int8_bundle: Path, tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.load(int8_bundle / "examples.npy")[:3])
    code = (
        "import sys; sys.modules['torch'] = None\n"  # any 'import torch' now raises ImportError
        "from slimtune.cli.main import main\n"
        f"code = main(['predict', {str(int8_bundle)!r}, {str(tmp_path / 'x.npy')!r}, '--json'])\n"
        "assert 'torch' not in [m for m, v in sys.modules.items() if v is not None]\n"
        "sys.exit(code)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)) == 3


def test_bench_reports_percentiles_throughput_and_memory(int8_bundle: Path) -> None:
    result = bench(int8_bundle, batch_sizes=[1, 4], threads=[1], seconds=0.05)
    assert [r["batch"] for r in result["rows"]] == [1, 4]
    for r in result["rows"]:
        assert 0 < r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"] and r["throughput_per_s"] > 0
    assert result["startup_ms"] > 0 and result["peak_rss_mib"] > 0 and result["precision"] == "int8"


def test_text_bundles_tokenize_like_training(tmp_path: Path) -> None:
    tokenizers = pytest.importorskip("tokenizers")
    words = ["[PAD]", "[UNK]", "good", "bad", "movie", "food", "the", "was"]
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.enable_padding(length=SEQ, pad_id=0)
    tok.enable_truncation(SEQ)
    model, data = tiny("tiny-bert")
    get_spec(model)["preprocess"] = {"hf_tokenizer": tok.to_str(), "max_length": SEQ}
    fit(model, data, config=TrainConfig(epochs=1, batch_size=16), progress=False)
    folder = export_bundle(model, tmp_path / "hf", data=data)
    texts = ["the movie was good", "bad food", "unknownword"]
    ids = torch.tensor([e.ids for e in tok.encode_batch(texts)])
    with torch.no_grad():
        expected = model.eval()(ids).numpy()
    got = Predictor(folder).logits(texts)
    assert np.abs(got - expected).max() < 1e-4
    # the model masks its padding (checked at export), so batches are padded only to their longest text
    assert json.loads((folder / "bundle.json").read_text())["input"]["tokenizer"]["trim_padding"] is True
    assert Predictor(folder).preprocess(texts).shape == (3, 4) and SEQ > 4

    word_model, word_data = tiny("transformer-small")
    get_spec(word_model)["preprocess"] = {"tokenizer": {"type": "word", "vocab": ["[PAD]", "[UNK]", "[CLS]", "good"]},
                                          "max_length": SEQ}  # fmt: skip
    folder = export_bundle(word_model, tmp_path / "word", data=word_data)
    with torch.no_grad():
        expected = word_model.eval()(torch.tensor([[2, 3, 1] + [0] * (SEQ - 3)])).numpy()
    assert np.abs(Predictor(folder).logits("Good grief") - expected).max() < 1e-4


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--text", "hello"], "takes image arrays, not text"),
        (["WRONG_SHAPE"], "expects images of shape (1, 8, 8) or (8, 8); got an array of shape (2, 5, 5)"),
        (["MISSING"], "input file not found"),
    ],
)
def test_bad_predict_input_is_one_clear_line(
    int8_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    np.save(tmp_path / "bad.npy", np.zeros((2, 5, 5), dtype=np.uint8))
    args = [str(tmp_path / "bad.npy") if a == "WRONG_SHAPE" else str(tmp_path / "no.npy") if a == "MISSING" else a
            for a in args]  # fmt: skip
    assert cli(["predict", str(int8_bundle), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_broken_or_newer_bundles_are_refused(int8_bundle: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "b"
    shutil.copytree(int8_bundle, copy)
    manifest = json.loads((copy / "bundle.json").read_text())
    (copy / "bundle.json").write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(DataError, match="format version 99, newer than this slimtune reads"):
        Predictor(copy)
    (copy / "bundle.json").write_text(json.dumps(manifest))
    (copy / "model.onnx").unlink()
    with pytest.raises(DataError, match=r"is missing 'model\.onnx'"):
        Predictor(copy)
    with pytest.raises(DataError, match="not a folder"):
        Predictor(tmp_path / "nothing")
    assert Predictor(int8_bundle).predict(np.load(int8_bundle / "examples.npy")[:1])  # the original still works


def test_empty_text_is_refused(tmp_path: Path) -> None:
    model, data = tiny("transformer-small")
    get_spec(model)["preprocess"] = {"tokenizer": {"type": "word", "vocab": ["[PAD]", "[UNK]", "[CLS]"]},
                                     "max_length": SEQ}  # fmt: skip
    predictor = Predictor(export_bundle(model, tmp_path / "t", data=data))
    with pytest.raises(DataError, match="text #1 is empty"):
        predictor.predict(["fine", "  "])
    with pytest.raises(DataError, match="pass a string or a list of strings"):
        predictor.predict(np.zeros(3))
