"""Damaged saved models, Hugging Face folders and .pt checkpoints: exit 2 and one line naming the file and
the fix, never a traceback. Each case damages a fresh copy of a good artefact, then runs the CLI on it."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from slimtune.models import build, save_model

FEATURES, CLASSES = 64, 4


def _npz(path: Path, features: int, seed: int = 0, classes: int = CLASSES) -> Path:
    rng = np.random.default_rng(seed)
    np.savez(path, x=rng.random((120, features)).astype(np.float32), y=np.arange(120) % classes)
    return path


@pytest.fixture(scope="module")
def area(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A good saved model (mlp, 64 features, 4 classes), its checkpoint, and data of 64 and of 32 features."""
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    model = build("mlp", input_shape=(FEATURES,), num_classes=CLASSES, hidden=[8])
    save_model(model, root / "saved")
    torch.save(model.state_dict(), root / "good.pt")
    _npz(root / "d64.npz", FEATURES)
    _npz(root / "d32.npz", 32)
    _npz(root / "d64c6.npz", FEATURES, classes=6)
    return root


def _edit_spec(edit: Callable[[dict], object]) -> Callable[[Path], None]:
    def damage(folder: Path) -> None:
        spec = json.loads((folder / "spec.json").read_text())
        edit(spec)
        (folder / "spec.json").write_text(json.dumps(spec))

    return damage


def _write(name: str, data: bytes) -> Callable[[Path], None]:
    return lambda folder: (folder / name).write_bytes(data)


def _truncate(name: str, keep: int) -> Callable[[Path], None]:
    return lambda folder: (folder / name).write_bytes((folder / name).read_bytes()[:keep])


def _other_weights(folder: Path) -> None:
    save_model(build("mlp", input_shape=(FEATURES,), num_classes=CLASSES, hidden=[16]), folder / "other")
    shutil.copyfile(folder / "other" / "model.safetensors", folder / "model.safetensors")
    shutil.rmtree(folder / "other")


class MyNet(nn.Module):
    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(FEATURES, width), nn.ReLU(), nn.Linear(width, CLASSES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.body(x)
        return out


def _custom(folder: Path) -> None:
    shutil.rmtree(folder)
    save_model(MyNet(width=8), folder, options={"width": 8}, input_shape=(FEATURES,))


SAVED_CASES: list[tuple[str, Callable[[Path], None], str]] = [
    ("truncated-weights", _truncate("model.safetensors", 100), "model.safetensors is damaged"),
    ("garbage-weights", _write("model.safetensors", os.urandom(5000)), "model.safetensors is damaged"),
    ("empty-weights", _write("model.safetensors", b""), "model.safetensors is damaged"),
    ("no-weights", lambda f: (f / "model.safetensors").unlink(), "save was incomplete"),
    ("weights-of-another-model", _other_weights, "shape mismatch"),
    ("spec-not-json", _write("spec.json", b'{"arch": '), "spec.json is not valid JSON (line 1"),
    ("spec-not-utf8", _write("spec.json", b"\xff\xfe{}"), "not UTF-8"),
    ("spec-a-list", _write("spec.json", b"[1, 2]"), "holds a JSON list"),
    ("spec-version-a-string", _edit_spec(lambda s: s.update(format_version="1")), "format_version must be a whole"),
    ("spec-from-the-future", _edit_spec(lambda s: s.update(format_version=99)), "upgrade slimtune"),
    ("spec-without-arch", _edit_spec(lambda s: s.pop("arch")), "names no architecture"),
    ("spec-unknown-arch", _edit_spec(lambda s: s.update(arch="no-such-net")), "cannot rebuild"),
    ("spec-bad-options", _edit_spec(lambda s: s["options"].update(depth=3)), "cannot rebuild"),
    ("spec-options-a-list", _edit_spec(lambda s: s.update(options=[8])), "'options' must be a JSON object"),
    ("spec-layers-damaged", _edit_spec(lambda s: s["layers"]["net.1"].pop("out")), "cannot rebuild"),
    ("spec-sparse-layout-damaged", _edit_spec(lambda s: s.update(sparse={"net.1.weight": {}})), "sparse layout"),
    ("spec-declares-other-shape", _edit_spec(lambda s: s.update(input_shape=[32])), "takes inputs shaped (32,)"),
    ("empty-folder", lambda f: _empty(f), "no spec.json in"),
    ("your-own-module", _custom, "custom=MyNet"),
]


def _empty(folder: Path) -> None:
    for p in folder.iterdir():
        p.unlink()


@pytest.mark.parametrize(("damage", "needle"), [c[1:] for c in SAVED_CASES], ids=[c[0] for c in SAVED_CASES])
def test_damaged_saved_model(
    damage: Callable[[Path], None], needle: str, area: Path, tmp_path: Path, cli, one_line_error
) -> None:
    folder = tmp_path / "model"
    shutil.copytree(area / "saved", folder)
    damage(folder)
    argv = ["--data", str(area / "d64.npz"), "--set", "train.epochs=1", "--out", str(tmp_path / "out")]
    one_line_error(cli("stage", "train", "--load", str(folder), *argv, cwd=tmp_path), needle)


@pytest.mark.parametrize(
    ("target", "needle"),
    [
        ("missing", "saved model folder not found"),
        ("good.pt", "is a PyTorch checkpoint"),
        ("d64.npz", "is a file"),
    ],
)
def test_load_that_is_not_a_model_folder(target: str, needle: str, area: Path, tmp_path: Path, cli, one_line_error):
    argv = ["--data", str(area / "d64.npz"), "--out", str(tmp_path / "out")]
    one_line_error(cli("stage", "train", "--load", str(area / target), *argv, cwd=tmp_path), needle)


def test_recipe_load_of_a_hugging_face_folder_names_the_way(area: Path, tmp_path: Path, cli, one_line_error):
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text('{"model_type": "bert"}')  # what it has instead of spec.json
    recipe = {"data": {"name": str(area / "d64.npz")}, "model": {"load": "hf"}, "stages": [{"stage": "train"}]}
    (tmp_path / "r.yaml").write_text(json.dumps(recipe))
    one_line_error(cli("run", "r.yaml", "--out", "out", cwd=tmp_path), "hugging face folder", "{name: hf, options:")


def test_saved_model_on_data_with_another_feature_count(area: Path, tmp_path: Path, cli, one_line_error) -> None:
    argv = ["--data", str(area / "d32.npz"), "--set", "train.epochs=1", "--out", str(tmp_path / "out")]
    res = cli("stage", "train", "--load", str(area / "saved"), *argv, cwd=tmp_path)
    one_line_error(res, "takes inputs shaped (64,)", "(32,)")
    assert "[1/1]" not in res.out  # refused before the stage started


def test_saved_model_on_data_with_more_classes(area: Path, tmp_path: Path, cli, one_line_error) -> None:
    argv = ["--data", str(area / "d64c6.npz"), "--set", "train.epochs=1", "--out", str(tmp_path / "out")]
    res = cli("stage", "train", "--load", str(area / "saved"), *argv, cwd=tmp_path)
    one_line_error(res, "the model predicts 4 classes but d64c6 has 6", "finetune")


class _Evil:
    def __reduce__(self) -> tuple[Callable[..., object], tuple[str]]:
        return (print, ("this ran while loading",))


def _pt(kind: str, path: Path, good: Path) -> None:
    if kind == "pickled-code":
        torch.save({"net.1.weight": _Evil()}, path)
    elif kind == "plain-pickle":
        path.write_bytes(pickle.dumps({"a": 1}))
    elif kind == "truncated":
        path.write_bytes(good.read_bytes()[:60])
    elif kind == "text":
        path.write_text("these are not weights\n")
    elif kind == "a-list":
        torch.save([torch.zeros(2)], path)
    elif kind == "other-shapes":
        torch.save(build("mlp", input_shape=(FEATURES,), num_classes=CLASSES, hidden=[16]).state_dict(), path)
    elif kind == "non-tensor-values":
        torch.save({"net.1.weight": 3}, path)
    elif kind == "a-folder":
        path.mkdir()


PT_CASES = [
    ("pickled-code", "holds Python objects besides tensors"),
    ("plain-pickle", "refused"),
    ("truncated", "not a readable PyTorch checkpoint"),
    ("text", "not a readable PyTorch checkpoint"),
    ("a-list", "holds a list"),
    ("other-shapes", "shape mismatch"),
    ("non-tensor-values", "non-tensor values"),
    ("a-folder", "is a folder"),
    ("missing", "checkpoint not found"),
]


@pytest.mark.parametrize(("kind", "needle"), PT_CASES, ids=[c[0] for c in PT_CASES])
def test_bad_checkpoint(kind: str, needle: str, area: Path, tmp_path: Path, cli, one_line_error) -> None:
    pt = tmp_path / "w.pt"
    _pt(kind, pt, area / "good.pt")
    model = {"name": "mlp", "options": {"hidden": [8]}, "checkpoint": str(pt)}
    recipe = {"data": {"name": str(area / "d64.npz")}, "model": model, "stages": [{"stage": "train"}]}
    (tmp_path / "r.yaml").write_text(json.dumps(recipe))
    res = cli("run", "r.yaml", "--out", "out", cwd=tmp_path)
    one_line_error(res, needle, "w.pt")
    assert "weights_only" not in res.err and "this ran while loading" not in res.out + res.err


WORDS = ["good", "great", "love", "nice", "bad", "awful", "hate", "poor", "the", "movie"]


@pytest.fixture(scope="module")
def hf_area(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-init 1-layer BERT with its tokenizer (a Hugging Face folder) and a two-class review CSV."""
    transformers = pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")
    root = tmp_path_factory.mktemp("hf")
    folder = root / "bert"
    vocab = {tok: i for i, tok in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *WORDS])}
    tok = tokenizers.Tokenizer(tokenizers.models.WordPiece(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.BertPreTokenizer()
    transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]").save_pretrained(
        folder
    )
    config = transformers.BertConfig(
        vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=64, pad_token_id=0,
    )  # fmt: skip
    torch.manual_seed(0)
    transformers.BertModel(config).save_pretrained(folder)
    rows = [f"{WORDS[i % 4]} movie,pos" if i % 2 else f"{WORDS[4 + i % 4]} movie,neg" for i in range(40)]
    (root / "reviews.csv").write_text("text,label\n" + "\n".join(rows) + "\n")
    return root


HF_CASES: list[tuple[str, Callable[[Path], None], str]] = [
    ("garbage-weights", _write("model.safetensors", os.urandom(4000)), "cannot load the hugging face model"),
    ("truncated-weights", _truncate("model.safetensors", 200), "cannot load the hugging face model"),
    ("no-weights", lambda f: (f / "model.safetensors").unlink(), "cannot load the hugging face model"),
    ("config-not-json", _write("config.json", b"{nope"), "cannot load the tokenizer"),
    ("tokenizer-garbage", _write("tokenizer.json", b"\x00garbage"), "cannot load the tokenizer"),
]


@pytest.mark.parametrize(("damage", "needle"), [c[1:] for c in HF_CASES], ids=[c[0] for c in HF_CASES])
def test_damaged_hugging_face_folder(
    damage: Callable[[Path], None], needle: str, hf_area: Path, tmp_path: Path, cli, one_line_error
) -> None:
    folder = tmp_path / "bert"
    shutil.copytree(hf_area / "bert", folder)
    damage(folder)
    argv = ["--data", str(hf_area / "reviews.csv"), "--set", "train.epochs=1", "--out", str(tmp_path / "out")]
    one_line_error(cli("stage", "train", "--load", str(folder), *argv, cwd=tmp_path), needle, str(folder))


def test_stage_load_takes_a_hugging_face_folder(hf_area: Path, tmp_path: Path, cli) -> None:
    """``slimtune stage --help`` says --load takes a Hugging Face folder: it does (as model 'hf' with its path)."""
    argv = ["--data", str(hf_area / "reviews.csv"), "--set", "train.epochs=1", "--out", str(tmp_path / "out")]
    res = cli("stage", "train", "--load", str(hf_area / "bert"), *argv, cwd=tmp_path)
    assert res.code == 0, res.err
    recipe = json.loads((tmp_path / "out" / "recipe.json").read_text())
    assert recipe["model"] == {"name": "hf", "options": {"path": str(hf_area / "bert")}}
    assert (tmp_path / "out" / "01-train" / "model" / "spec.json").is_file()


def test_fit_refuses_data_the_model_spec_cannot_take(area: Path) -> None:
    """From the API too: a model built or loaded for 64 features does not train on 32, nor on more classes."""
    from slimtune.data import load
    from slimtune.errors import DataError
    from slimtune.models import load_model
    from slimtune.train import TrainConfig, fit

    model = load_model(area / "saved")
    for name, message in (("d32.npz", r"takes inputs shaped \(64,\), but d32 gives"), ("d64c6.npz", "predicts 4")):
        with pytest.raises(DataError, match=message):
            fit(model, load(str(area / name), seed=0), config=TrainConfig(epochs=1))
