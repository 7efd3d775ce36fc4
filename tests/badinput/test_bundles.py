"""Damaged deploy bundles and unreadable/unwritable folders: exit 2 and one line naming the file and the fix.
Each case damages a fresh copy of a good bundle (an mlp of 64 features and 4 classes), then runs the CLI."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from slimtune.data import load
from slimtune.errors import DataError
from slimtune.export.bundle import export_bundle
from slimtune.models import build, save_model

FEATURES, CLASSES = 64, 4


@pytest.fixture(scope="module")
def area(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bundles")
    rng = np.random.default_rng(0)
    np.savez(root / "d64.npz", x=rng.random((120, FEATURES)).astype(np.float32), y=np.arange(120) % CLASSES)
    np.save(root / "x64.npy", rng.random((3, FEATURES)).astype(np.float32))
    np.save(root / "x32.npy", rng.random((3, 32)).astype(np.float32))
    torch.manual_seed(0)
    model = build("mlp", input_shape=(FEATURES,), num_classes=CLASSES, hidden=[8])
    export_bundle(model, root / "bundle", data=load(str(root / "d64.npz"), seed=0))
    save_model(model, root / "saved")
    return root


def _manifest(edit: Callable[[dict[str, Any]], object]) -> Callable[[Path], None]:
    def damage(folder: Path) -> None:
        raw = json.loads((folder / "bundle.json").read_text())
        edit(raw)
        (folder / "bundle.json").write_text(json.dumps(raw))

    return damage


def _write(name: str, data: bytes) -> Callable[[Path], None]:
    return lambda folder: (folder / name).write_bytes(data)


def _set(section: str, key: str, value: Any) -> Callable[[Path], None]:
    return _manifest(lambda m: m[section].__setitem__(key, value))


def _drop(section: str, key: str) -> Callable[[Path], None]:
    return _manifest(lambda m: m[section].pop(key))


CASES: list[tuple[str, Callable[[Path], None], str, str]] = [
    ("labels-lost", _drop("output", "labels"), "x64", "output.labels must list the class names"),
    ("labels-a-string", _set("output", "labels", "a b c d"), "x64", "output.labels must list"),
    ("three-labels-for-four-classes", _set("output", "labels", ["a", "b", "c"]), "x64", "lists 3 labels but"),
    ("shape-lost", _drop("input", "shape"), "x64", "input.shape must list"),
    ("shape-not-numbers", _set("input", "shape", ["a"]), "x64", "input.shape must list"),
    ("shape-edited", _set("input", "shape", [32]), "x64", "input.shape [32] does not match the ONNX model"),
    ("shape-edited-input-fits-it", _set("input", "shape", [32]), "x32", "does not match the ONNX model"),
    ("shape-edited-to-image", _set("input", "shape", [1, 8, 8]), "x64", "does not match the ONNX model"),
    ("kind-unknown", _set("input", "kind", "audio"), "x64", "input kind must be image, text, tabular or lm"),
    ("kind-text-without-tokenizer", _set("input", "kind", "text"), "x64", "input.tokenizer needs"),
    ("pixel-scale-not-a-number", _set("input", "pixel_scale", "big"), "x64", "pixel_scale must be a positive"),
    ("model-file-lost", _drop("files", "model"), "x64", "files.model"),
    ("model-file-outside", _set("files", "model", "../../etc/passwd"), "x64", "points outside the bundle"),
    ("input-section-lost", _manifest(lambda m: m.pop("input")), "x64", "missing 'input' section"),
    ("version-a-string", _manifest(lambda m: m.update(format_version="1")), "x64", "bad format_version"),
    ("version-from-the-future", _manifest(lambda m: m.update(format_version=99)), "x64", "upgrade slimtune"),
    ("manifest-not-json", _write("bundle.json", b'{"format": '), "x64", "is not valid JSON"),
    ("manifest-a-list", _write("bundle.json", b"[]"), "x64", "not a slimtune bundle manifest"),
    ("manifest-gone", lambda f: (f / "bundle.json").unlink(), "x64", "has no bundle.json"),
    ("onnx-garbage", _write("model.onnx", os.urandom(3000)), "x64", "model.onnx is not a loadable ONNX model"),
    ("onnx-empty", _write("model.onnx", b""), "x64", "is not a loadable ONNX model"),
    ("onnx-truncated", lambda f: _write("model.onnx", (f / "model.onnx").read_bytes()[:200])(f), "x64", "loadable"),
    ("onnx-gone", lambda f: (f / "model.onnx").unlink(), "x64", "is missing 'model.onnx'"),
]


@pytest.mark.parametrize(("damage", "inputs", "needle"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_damaged_bundle_on_predict(
    damage: Callable[[Path], None], inputs: str, needle: str, area: Path, tmp_path: Path, cli, one_line_error
) -> None:
    folder = tmp_path / "bundle"
    shutil.copytree(area / "bundle", folder)
    damage(folder)
    one_line_error(cli("predict", str(folder), str(area / f"{inputs}.npy"), cwd=tmp_path), needle)


@pytest.mark.parametrize(
    ("damage", "needle"),
    [(_write("model.onnx", b"\x08\x01garbage"), "not a loadable ONNX model"), (_drop("input", "shape"), "input.shape")],
)
def test_damaged_bundle_on_bench(damage: Callable[[Path], None], needle: str, area: Path, tmp_path: Path, cli,
                                 one_line_error) -> None:  # fmt: skip
    folder = tmp_path / "bundle"
    shutil.copytree(area / "bundle", folder)
    damage(folder)
    one_line_error(cli("bench", str(folder), "--batch-sizes", "1", "--seconds", "0.01", cwd=tmp_path), needle)


@pytest.mark.parametrize(
    ("target", "needle"),
    [
        ("missing", "bundle not found"),
        ("x64.npy", "is not a folder"),
        ("bundle/model.onnx", "is an ONNX file, not a bundle folder; make one with a 'bundle' stage"),
        ("saved", "is a saved model folder, not a bundle; make one with a 'bundle' stage"),
    ],
)
def test_bundle_path_that_is_not_a_bundle(target: str, needle: str, area: Path, tmp_path: Path, cli, one_line_error):
    one_line_error(cli("predict", str(area / target), str(area / "x64.npy"), cwd=tmp_path), needle)


def test_the_untouched_bundle_predicts(area: Path, tmp_path: Path, cli) -> None:
    """The damage above is what fails, not the bundle: the same command on the good copy works."""
    res = cli("predict", str(area / "bundle"), str(area / "x64.npy"), "--json", cwd=tmp_path)
    assert res.code == 0, res.err
    assert len(json.loads(res.out)) == 3


@pytest.fixture(scope="module")
def text_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A transformer-small bundle carrying slimtune's word tokenizer."""
    from slimtune.models.serialization import get_spec
    from slimtune.testing.tiny import SEQ, tiny

    model, data = tiny("transformer-small")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "good", "bad"]
    get_spec(model)["preprocess"] = {"tokenizer": {"type": "word", "vocab": vocab}, "max_length": SEQ}
    return export_bundle(model, tmp_path_factory.mktemp("text") / "bundle", data=data)


TEXT_CASES: list[tuple[str, Callable[[Path], None], str]] = [
    ("tokenizer-garbage", _write("tokenizer.json", b"\x00\x01garbage"), "is not slimtune's word vocabulary"),
    ("tokenizer-without-vocab", _write("tokenizer.json", b'{"words": []}'), "is not slimtune's word vocabulary"),
    ("tokenizer-gone", lambda f: (f / "tokenizer.json").unlink(), "is missing 'tokenizer.json'"),
    ("tokenizer-type-edited", _manifest(lambda m: m["input"]["tokenizer"].update(type="hf")), "readable tokenizer"),
    ("max-length-lost", _manifest(lambda m: m["input"]["tokenizer"].pop("max_length")), "input.tokenizer needs"),
    ("kind-edited-to-tabular", _set("input", "kind", "tabular"), "input.shape must list"),
]


@pytest.mark.parametrize(("damage", "needle"), [c[1:] for c in TEXT_CASES], ids=[c[0] for c in TEXT_CASES])
def test_damaged_text_bundle_on_predict(
    damage: Callable[[Path], None], needle: str, text_bundle: Path, tmp_path: Path, cli, one_line_error
) -> None:
    folder = tmp_path / "bundle"
    shutil.copytree(text_bundle, folder)
    damage(folder)
    one_line_error(cli("predict", str(folder), "--text", "good film", cwd=tmp_path), needle)


def test_the_untouched_text_bundle_predicts(text_bundle: Path, tmp_path: Path, cli) -> None:
    res = cli("predict", str(text_bundle), "--text", "good film", "--json", cwd=tmp_path)
    assert res.code == 0, res.err


def _deny(path: Path, monkeypatch: pytest.MonkeyPatch, *, write: bool = False) -> None:
    """Make ``path`` unreadable (or, with ``write``, its folder unwritable) for this user. Root passes every
    permission check, so as root the same PermissionError the kernel would give is raised where slimtune meets it."""
    if os.geteuid() != 0:
        path.chmod(0o500 if write else 0o000)
        return

    def refuse(p: Path) -> bool:
        return p == path or path in p.parents

    def read_text(self: Path, *args: Any, **kwargs: Any) -> str:
        if refuse(self):
            raise PermissionError(13, "Permission denied", str(self))
        return real_read_text(self, *args, **kwargs)

    def mkdir(self: Path, *args: Any, **kwargs: Any) -> None:
        if refuse(self) and self != path:
            raise PermissionError(13, "Permission denied", str(self))
        real_mkdir(self, *args, **kwargs)

    real_read_text, real_mkdir = Path.read_text, Path.mkdir
    monkeypatch.setattr(Path, "mkdir" if write else "read_text", mkdir if write else read_text)


def test_bundle_readable_only_by_another_user(
    area: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli, one_line_error
) -> None:
    folder = tmp_path / "bundle"
    shutil.copytree(area / "bundle", folder)
    _deny(folder / "bundle.json", monkeypatch)
    one_line_error(cli("predict", str(folder), str(area / "x64.npy"), cwd=tmp_path), "permission denied", "bundle.json")


def test_output_folder_writable_only_by_another_user(
    area: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli, one_line_error
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    _deny(shared, monkeypatch, write=True)
    argv = ["--model", "mlp", "--data", str(area / "d64.npz"), "--out", str(shared / "run")]
    one_line_error(cli("stage", "train", *argv, cwd=tmp_path), "permission denied", "shared")


def test_export_bundle_refuses_labels_that_do_not_fit_the_model(area: Path, tmp_path: Path) -> None:
    """A 4-class model with data of 3 classes would make a bundle listing 3 labels for 4 outputs."""
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "d3.npz", x=rng.random((90, FEATURES)).astype(np.float32), y=np.arange(90) % 3)
    model = build("mlp", input_shape=(FEATURES,), num_classes=CLASSES, hidden=[8])
    with pytest.raises(DataError, match=r"lists 3 labels but the ONNX model predicts 4 classes.*fine-tune"):
        export_bundle(model, tmp_path / "b", data=load(str(tmp_path / "d3.npz"), seed=0))
    assert not (tmp_path / "b").exists()  # no half-written bundle


def test_export_bundle_refuses_a_garbage_onnx_file(area: Path, tmp_path: Path) -> None:
    (tmp_path / "m.onnx").write_bytes(os.urandom(2000))
    model = build("mlp", input_shape=(FEATURES,), num_classes=CLASSES, hidden=[8])
    with pytest.raises(DataError, match=r"m.onnx is not a loadable ONNX model") as info:
        export_bundle(model, tmp_path / "b", onnx=tmp_path / "m.onnx")
    assert "\n" not in str(info.value)
