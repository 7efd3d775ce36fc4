"""User data formats: image folders, CSV/TSV/JSONL tables, npz arrays, and their error messages."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from slimtune.data import load, load_path
from slimtune.errors import DataError

Image = pytest.importorskip("PIL.Image")


def write_images(root: Path, sizes: dict[str, list[tuple[int, int]]], mode: str = "L") -> None:
    rng = np.random.default_rng(0)
    for cls, shapes in sizes.items():
        (root / cls).mkdir(parents=True)
        for i, (w, h) in enumerate(shapes):
            shape = (h, w) if mode == "L" else (h, w, 3)
            pixels = rng.integers(0, 256, size=shape, dtype=np.uint8)
            Image.fromarray(pixels, mode=mode).save(root / cls / f"{i}.png")


def write_csv(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


# --- image folders ---------------------------------------------------------------------------------


def test_image_folder_grayscale(tmp_path: Path) -> None:
    write_images(tmp_path / "pets", {"cat": [(6, 4)] * 6, "dog": [(6, 4)] * 4})
    d = load(tmp_path / "pets")
    assert d.name == "pets" and d.kind == "image" and d.label_names == ["cat", "dog"]
    assert d.input_shape == (1, 4, 6)
    assert isinstance(d.train.x, torch.Tensor) and d.train.x.dtype == torch.float32
    assert float(d.train.x.min()) >= 0.0 and float(d.train.x.max()) <= 1.0
    assert sorted(torch.cat([d.train.y, d.val.y, d.test.y]).tolist()) == [0] * 6 + [1] * 4


def test_image_folder_rgb_and_resize(tmp_path: Path) -> None:
    write_images(tmp_path / "a", {"x": [(5, 5)] * 3, "y": [(7, 3)] * 3})
    write_images(tmp_path / "b", {"z": [(5, 5)] * 3}, mode="RGB")
    for cls in ("x", "y"):
        (tmp_path / "a" / cls).rename(tmp_path / "b" / cls)
    d = load_path(tmp_path / "b", image_size=(8, 10))
    assert d.input_shape == (3, 8, 10) and d.label_names == ["x", "y", "z"]
    assert load_path(tmp_path / "b", image_size=4).input_shape == (3, 4, 4)


def test_image_folder_ragged_sizes(tmp_path: Path) -> None:
    write_images(tmp_path, {"a": [(4, 4), (4, 4)], "b": [(5, 4), (4, 4)]})
    with pytest.raises(
        DataError,
        match=r"different sizes \('a/0.png' is 4x4, 'b/0.png' is 5x4\).*--data-option image_size=",
    ):
        load_path(tmp_path)


def test_image_folder_bad_layouts(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no class subfolders"):
        load_path(tmp_path)
    write_images(tmp_path, {"a": [(4, 4)] * 3})
    (tmp_path / "b").mkdir()
    with pytest.raises(DataError, match="has no images"):
        load_path(tmp_path)
    (tmp_path / "b" / "0.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="cannot read image"):
        load_path(tmp_path)


def test_image_folder_one_class(tmp_path: Path) -> None:
    write_images(tmp_path, {"only": [(4, 4)] * 5})
    with pytest.raises(DataError, match=r"only one class \(only\)"):
        load_path(tmp_path)


# --- CSV / TSV / JSONL ---------------------------------------------------------------------------------


def test_csv_string_labels_round_trip(tmp_path: Path) -> None:
    rows = [f'"text, number {i}",{"pos" if i % 3 else "neg"}' for i in range(30)]
    d = load_path(write_csv(tmp_path / "reviews.csv", "text,label", rows), seed=2)
    assert d.kind == "text" and d.label_names == ["neg", "pos"] and d.num_classes == 2
    texts = [*d.train.x, *d.val.x, *d.test.x]
    assert sorted(texts) == sorted(f"text, number {i}" for i in range(30))
    assert (len(d.train), len(d.val), len(d.test)) == (21, 3, 6)
    assert load_path(tmp_path / "reviews.csv", seed=2).train.x == d.train.x


def test_csv_int_labels_and_aliases(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "a.csv", "id,Sentence,target", [f"{i},s{i},{i % 2 * 5}" for i in range(10)])
    d = load_path(path)
    assert d.label_names == ["0", "5"] and set(d.train.y.tolist()) <= {0, 1}
    assert all(t.startswith("s") for t in d.train.x)


def test_tsv_and_explicit_columns(tmp_path: Path) -> None:
    path = tmp_path / "t.tsv"
    path.write_text("body\tcat\n" + "".join(f"b{i}\t{'xy'[i % 2]}\n" for i in range(10)))
    d = load_path(path, text_column="body", label_column="cat")
    assert d.label_names == ["x", "y"]


def test_jsonl_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    lines = [json.dumps({"text": f"hello {i}", "label": i % 3}) for i in range(12)]
    path.write_text("\n".join(lines) + "\n\n")
    d = load(str(path))
    assert d.label_names == ["0", "1", "2"] and len(d.train) + len(d.val) + len(d.test) == 12


def test_table_missing_column_lists_available(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "a.csv", "words,label", ["a,1", "b,0"])
    with pytest.raises(
        DataError,
        match=r"'text' not found .*available: words, label; .*data: \{text_column: .*--data-option text_column=",
    ):
        load_path(path)
    with pytest.raises(DataError, match=r"column 'tag' not found .*name one of them as label_column"):
        load_path(path, text_column="words", label_column="tag")


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (["a,0.5", "b,1.5"], r"a.csv:2: labels must be integers or class names, got '0.5'"),
        (["a,1", "b,"], r"a.csv:3: empty or missing 'label' value; .*drop_empty"),
        (["a,x", "b,x", "c,x"], r"only one class \(x\)"),
        (["a,x", "b,x", "c,x", "d,y"], r"a.csv: 1 of 2 labels occur in fewer than 3 rows: 'y' \(line 5\)"),
    ],
)
def test_csv_bad_labels(tmp_path: Path, rows: list[str], message: str) -> None:
    with pytest.raises(DataError, match=message):
        load_path(write_csv(tmp_path / "a.csv", "text,label", rows))


def test_jsonl_bad_inputs(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_text('{"text": "a", "label": 1.0}\n{"text": "b", "label": 2}\n')
    with pytest.raises(DataError, match=r"got 1\.0"):
        load_path(path)
    path.write_text('{"text": "a", "label": 1}\n[1, 2]\n')
    with pytest.raises(DataError, match=r"a.jsonl:2: expected a JSON object, got list"):
        load_path(path)
    path.write_text('{"text": "a", "label": 1}\n{oops\n')
    with pytest.raises(DataError, match=r"a.jsonl:2: not valid JSON"):
        load_path(path)


def test_empty_files(tmp_path: Path) -> None:
    (tmp_path / "e.csv").write_text("")
    with pytest.raises(DataError, match="is empty"):
        load_path(tmp_path / "e.csv")
    with pytest.raises(DataError, match="has no data rows"):
        load_path(write_csv(tmp_path / "h.csv", "text,label", []))


def test_unsupported_suffix(tmp_path: Path) -> None:
    (tmp_path / "a.xlsx").write_bytes(b"x")
    with pytest.raises(DataError, match=r"unsupported data file 'a.xlsx'"):
        load(tmp_path / "a.xlsx")


# --- npz -------------------------------------------------------------------------------------------


def test_npz_tabular_round_trip(tmp_path: Path) -> None:
    x = np.arange(40, dtype=np.float64).reshape(20, 2)
    np.savez(tmp_path / "tab.npz", x=x, y=np.array(["b", "a"] * 10))
    d = load_path(tmp_path / "tab.npz")
    assert d.kind == "tabular" and d.input_shape == (2,) and d.label_names == ["a", "b"]
    assert isinstance(d.train.x, torch.Tensor) and d.train.x.dtype == torch.float32
    rows = torch.cat([d.train.x, d.val.x, d.test.x]) if isinstance(d.val.x, torch.Tensor) else None
    assert rows is not None and sorted(rows[:, 0].tolist()) == x[:, 0].tolist()


def test_npz_images(tmp_path: Path) -> None:
    np.savez(tmp_path / "g.npz", x=np.full((10, 5, 6), 255, dtype=np.uint8), y=np.arange(10) % 2)
    d = load_path(tmp_path / "g.npz")
    assert d.kind == "image" and d.input_shape == (1, 5, 6)
    assert isinstance(d.train.x, torch.Tensor) and float(d.train.x.max()) == 1.0
    np.savez(tmp_path / "c.npz", x=np.zeros((10, 5, 6, 3), dtype=np.float32), y=np.arange(10) % 2)
    assert load_path(tmp_path / "c.npz").input_shape == (3, 5, 6)


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x": np.zeros((4, 2))}, r"needs arrays 'x' and 'y'; it has: x"),
        ({"x": np.zeros((4, 2)), "y": np.arange(3)}, r"one label per row of x; got x \(4, 2\), y \(3,\)"),
        ({"x": np.zeros((4, 2)), "y": np.array([0.5, 1, 0, 1])}, "labels must be integers or class names"),
        ({"x": np.array(["a", "b"]), "y": np.arange(2)}, "x must be a numeric array"),
        ({"x": np.full((4, 2), np.nan), "y": np.arange(4) % 2}, "NaN or infinite"),
    ],
)
def test_npz_bad_arrays(tmp_path: Path, arrays: dict[str, np.ndarray], message: str) -> None:
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match=message):
        load_path(tmp_path / "bad.npz")


def test_npz_not_an_archive(tmp_path: Path) -> None:
    (tmp_path / "x.npz").write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"cannot read .* as \.npz"):
        load_path(tmp_path / "x.npz")
