"""What ``Predictor`` / ``slimtune predict`` accept: non-finite rows refused, dynamic-int8 rows isolated from
each other, image files and folders converted per the bundle's input contract, float pixels in raw 0–255
units scaled like integers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from slimtune.cli.main import main
from slimtune.data import load_path, split_arrays
from slimtune.errors import DataError
from slimtune.export.bundle import export_bundle
from slimtune.export.onnx import export_onnx
from slimtune.models import build
from slimtune.quantize.ort_dynamic import OrtDynamicInt8Config, quantize_dynamic_onnx
from slimtune.runtime import Predictor

Image = pytest.importorskip("PIL.Image")


@pytest.fixture(scope="module")
def dynamic_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tabular MLP quantized with ORT dynamic int8 (activation scales computed per batch)."""
    root = tmp_path_factory.mktemp("dyn")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 8, generator=g)
    data = split_arrays("rows", x, (x[:, 0] > 0).long(), label_names=["a", "b"], kind="tabular")
    torch.manual_seed(0)
    model = build("mlp", input_shape=(8,), num_classes=2, hidden=[32]).eval()
    fp32 = export_onnx(model, x[:1], root / "fp32.onnx")
    quantize_dynamic_onnx(fp32, root / "int8.onnx", OrtDynamicInt8Config(reduce_range=True))
    return export_bundle(model, root / "bundle", data=data, onnx=root / "int8.onnx")


def rows() -> np.ndarray:
    return np.random.default_rng(1).normal(size=(16, 8)).astype(np.float32)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_rows_are_refused_with_one_line(dynamic_bundle: Path, bad: float) -> None:
    x = rows()
    x[5, 3] = bad
    x[9, 0] = bad
    with pytest.raises(DataError, match=r"input row 5 \(and 1 more\) has NaN or infinite values") as info:
        Predictor(dynamic_bundle).predict(x)
    assert "\n" not in str(info.value)


def test_an_extreme_row_does_not_change_the_other_rows(dynamic_bundle: Path) -> None:
    predictor = Predictor(dynamic_bundle, threads=1)
    assert predictor.row_by_row and predictor.manifest.raw["precision"] == "int8"
    x = rows()
    clean = predictor.logits(x)
    x[7] = 1e30
    others = [i for i in range(len(x)) if i != 7]
    np.testing.assert_array_equal(predictor.logits(x)[others], clean[others])
    # the reason: run as one batch, the extreme row's activation scale spoils every other row
    batch = predictor.session.run(None, {predictor.input_name: x})[0]
    assert not np.allclose(batch[others], clean[others], atol=1e-3)


# --- images -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def image_bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 3-channel 6x6 image bundle made from a folder of PNGs (pixel_scale 1/255), and that folder."""
    root = tmp_path_factory.mktemp("img")
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (root / "pets" / cls).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8), mode="RGB").save(
                root / "pets" / cls / f"{i}.png"
            )
    data = load_path(root / "pets", seed=0)
    torch.manual_seed(0)
    model = build("mlp", input_shape=data.input_shape, num_classes=2, hidden=[16]).eval()
    return export_bundle(model, root / "bundle", data=data), root / "pets"


def test_image_files_are_read_like_training(image_bundle: tuple[Path, Path]) -> None:
    bundle, folder = image_bundle
    predictor = Predictor(bundle)
    data = load_path(folder, seed=0)
    assert isinstance(data.train.x, torch.Tensor) and isinstance(data.test.x, torch.Tensor)
    trained = np.concatenate([data.train.x.numpy(), data.val.x.numpy(), data.test.x.numpy()])  # type: ignore[union-attr]
    files = sorted(folder.rglob("*.png"))
    x = predictor.preprocess(files)
    assert x.shape == (12, 3, 6, 6) and x.dtype == np.float32
    for row in x:  # every file becomes exactly the array the model was trained on
        assert any(np.array_equal(row, t) for t in trained)
    with Image.open(files[0]) as im:
        pil = im.copy()
    np.testing.assert_array_equal(predictor.logits([pil, files[1]]), predictor.logits([files[0], str(files[1])]))
    np.testing.assert_array_equal(predictor.logits(str(folder / "cat")), predictor.logits(files[:6]))


def test_other_sizes_and_modes_are_converted(image_bundle: tuple[Path, Path], tmp_path: Path) -> None:
    bundle, _ = image_bundle
    big = tmp_path / "big.jpg"
    Image.fromarray(np.full((20, 30), 200, dtype=np.uint8), mode="L").save(big)
    x = Predictor(bundle).preprocess([big])
    assert x.shape == (1, 3, 6, 6) and np.allclose(x, 200 / 255, atol=2 / 255)


def test_float_pixels_in_raw_units_are_scaled_like_integers(image_bundle: tuple[Path, Path]) -> None:
    bundle, _ = image_bundle
    predictor = Predictor(bundle)
    raw = np.random.default_rng(2).integers(0, 256, (4, 3, 6, 6)).astype(np.uint8)
    expected = predictor.logits(raw.astype(np.float32) / 255)
    np.testing.assert_allclose(predictor.logits(raw), expected, rtol=1e-6)
    np.testing.assert_allclose(predictor.logits(raw.astype(np.float64)), expected, rtol=1e-6)
    with pytest.raises(DataError, match=r"input row 1 has pixel values outside this bundle's raw range 0–255"):
        predictor.predict(np.concatenate([raw[:1], np.full((1, 3, 6, 6), 300.0)]).astype(np.float32))
    nan = raw.astype(np.float32)
    nan[2, 0, 0, 0] = np.nan
    with pytest.raises(DataError, match=r"input row 2 has NaN or infinite values"):
        predictor.predict(nan)


def test_cli_predicts_a_folder_and_a_file(image_bundle: tuple[Path, Path], capsys: pytest.CaptureFixture) -> None:
    bundle, folder = image_bundle
    assert main(["predict", str(bundle), str(folder / "cat"), "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["file"] for r in results] == [f"{i}.png" for i in range(6)]
    assert all(r["label"] in ("cat", "dog") and 0 < r["probability"] <= 1 for r in results)
    assert main(["predict", str(bundle), str(folder), "--json"]) == 0  # class subfolders: every image under it
    assert [r["file"] for r in json.loads(capsys.readouterr().out)][5:7] == ["cat/5.png", "dog/0.png"]
    assert main(["predict", str(bundle), str(folder / "dog" / "3.png"), "--top-k", "2"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("3.png\t") and line.count("\t") == 3


def test_image_files_without_pillow_name_the_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from slimtune.errors import MissingDependencyError
    from slimtune.runtime.images import open_images

    monkeypatch.setitem(__import__("sys").modules, "PIL", None)
    with pytest.raises(MissingDependencyError, match=r"needs the package 'pillow'.*slimtune\[data\]"):
        open_images([tmp_path / "a.png"])
