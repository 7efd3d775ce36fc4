"""Bad data files, data options and predict inputs: exit 2 and one line naming the problem (file:line where
there is a line), never a traceback, never a silently trained model."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

Image = pytest.importorskip("PIL.Image")

ROWS = [f"good text {i},pos" if i % 2 else f"bad text {i},neg" for i in range(12)]


def csv_file(*lines: str) -> Callable[[Path], Path]:
    def make(root: Path) -> Path:
        path = root / "r.csv"
        path.write_text("\n".join(lines) + ("\n" if lines else ""), encoding="utf-8")
        return path

    return make


def jsonl_file(*lines: str) -> Callable[[Path], Path]:
    def make(root: Path) -> Path:
        (root / "r.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        return root / "r.jsonl"

    return make


def image_folder(kind: str) -> Callable[[Path], Path]:
    def make(root: Path) -> Path:
        rng = np.random.default_rng(0)
        for cls in ("a", "b"):
            (root / "imgs" / cls).mkdir(parents=True)
            for i in range(3):
                size = (5, 4) if kind == "ragged" and cls == "b" else (4, 4)
                Image.fromarray(rng.integers(0, 256, size[::-1], dtype=np.uint8)).save(root / "imgs" / cls / f"{i}.png")
        if kind == "corrupt":
            (root / "imgs" / "b" / "9.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
        if kind == "empty-class":
            (root / "imgs" / "c").mkdir()
        return root / "imgs"

    return make


def npz_file(**arrays: np.ndarray) -> Callable[[Path], Path]:
    def make(root: Path) -> Path:
        np.savez(root / "d.npz", **arrays)
        return root / "d.npz"

    return make


def garbage(name: str, content: bytes) -> Callable[[Path], Path]:
    def make(root: Path) -> Path:
        (root / name).write_bytes(content)
        return root / name

    return make


H = "text,label"
DATA_CASES: list[tuple[str, Callable[[Path], Path], list[str], list[str]]] = [
    ("quote-never-closed", csv_file(H, *ROWS[:4], '"broken,pos', *ROWS[4:]), [], ["r.csv:6", "never closed"]),
    ("quote-on-last-line", csv_file(H, *ROWS, '"last,pos'), [], ["r.csv:14", "never closed"]),
    ("quote-swallows-rows", csv_file(H, "x,pos", '"open,pos', *ROWS, '"q",neg'), [], ["r.csv:3", "not closed"]),
    ("quote-closes-late", csv_file(H, *ROWS[:2], '"a,pos', ROWS[2], 'b",neg', *ROWS[3:]), [], ["swallows line 5"]),
    ("too-many-fields", csv_file(H, *ROWS[:2], "a,b,pos", *ROWS[2:]), [], ["r.csv:4", "expected 2 fields"]),
    ("empty-text", csv_file(H, *ROWS[:2], "  ,pos", *ROWS[2:]), [], ["r.csv:4", "empty", "drop_empty"]),
    ("empty-label", csv_file(H, *ROWS[:2], "text,", *ROWS[2:]), [], ["r.csv:4", "'label'"]),
    ("rare-label", csv_file(H, *ROWS, "fragment of text,oops"), [], ["'oops' (line 14)", "min_class_rows"]),
    ("unknown-label", csv_file(H, *ROWS, "x,maybe"), ["labels=[neg, pos]"], ["r.csv:14", "'maybe'"]),
    ("no-text-column", csv_file("words,label", *ROWS), [], ["'text' not found", "--data-option text_column"]),
    ("named-column-missing", csv_file(H, *ROWS), ["text_column=body"], ["column 'body' not found"]),
    ("header-only", csv_file(H), [], ["no data rows"]),
    ("empty-file", csv_file(), [], ["is empty"]),
    ("jsonl-bad-json", jsonl_file('{"text": "a", "label": 1}', '{"text": "b", label: 0}'), [], ["r.jsonl:2"]),
    ("jsonl-not-object", jsonl_file('{"text": "a", "label": 1}', "[1, 2]"), [], ["r.jsonl:2", "JSON object"]),
    ("jsonl-text-number", jsonl_file('{"text": 3, "label": 1}'), [], ["r.jsonl:1", "must be a string"]),
    ("jsonl-float-label", jsonl_file('{"text": "a", "label": 1}', '{"text": "b", "label": 0.5}'), [], ["r.jsonl:2"]),
    ("unknown-option", csv_file(H, *ROWS), ["text_colum=text"], ["unknown key 'text_colum'"]),
    ("option-for-other-kind", csv_file(H, *ROWS), ["image_size=8"], ["'image_size' does not apply"]),
    ("bad-option-value", csv_file(H, *ROWS), ["min_class_rows=0"], ["min_class_rows must be >= 1"]),
    ("option-not-key-value", csv_file(H, *ROWS), ["drop_empty"], ["--data-option 'drop_empty'", "key=value"]),
    ("corrupt-image", image_folder("corrupt"), [], ["cannot read image", "9.png"]),
    ("class-without-images", image_folder("empty-class"), [], ["has no images"]),
    ("ragged-images", image_folder("ragged"), [], ["different sizes", "--data-option image_size"]),
    ("npz-garbage", garbage("d.npz", b"not a zip"), [], ["cannot read", "not a numpy file"]),
    ("npz-nan", npz_file(x=np.full((6, 2), np.nan), y=np.arange(6) % 2), [], ["nan or infinite"]),
    ("unsupported-file", garbage("d.xlsx", b"PK"), [], ["unsupported data file"]),
]


@pytest.mark.parametrize(("make", "options", "needles"), [c[1:] for c in DATA_CASES], ids=[c[0] for c in DATA_CASES])
def test_bad_data_is_one_line(make, options, needles, tmp_path: Path, cli, one_line_error) -> None:  # type: ignore[no-untyped-def]
    data = make(tmp_path)
    argv = ["stage", "train", "--model", "transformer-small", "--data", str(data), "--out", str(tmp_path / "o")]
    for option in options:
        argv += ["--data-option", option]
    res = cli(*argv, cwd=tmp_path)
    one_line_error(res, *needles)
    assert "| train |" not in res.out  # nothing was trained


# --- predict ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An image bundle (1x6x6 pixels, pixel_scale 1/255) and a tabular one (4 features)."""
    from slimtune.data import split_arrays
    from slimtune.export.bundle import export_bundle
    from slimtune.models import build

    root = tmp_path_factory.mktemp("bundles")
    g = torch.Generator().manual_seed(0)
    out = {}
    for kind, shape in (("image", (1, 6, 6)), ("tabular", (4,))):
        x = torch.rand(30, *shape, generator=g)
        data = split_arrays(kind, x, torch.arange(30) % 2, label_names=["a", "b"], kind=kind)  # type: ignore[arg-type]
        if kind == "image":
            data.meta["pixel_scale"] = 1 / 255
        torch.manual_seed(0)
        model = build("mlp", input_shape=shape, num_classes=2, hidden=[8]).eval()
        out[kind] = export_bundle(model, root / kind, data=data)
    return out


def npy(array: np.ndarray, *, pickle: bool = False) -> Callable[[Path], Path]:
    def make(root: Path) -> Path:
        np.save(root / "x.npy", array, allow_pickle=pickle)
        return root / "x.npy"

    return make


def nan_pixels() -> np.ndarray:
    x = np.zeros((3, 1, 6, 6), dtype=np.float32)
    x[1, 0, 2, 2] = np.nan
    return x


def empty_folder(root: Path) -> Path:
    (root / "empty").mkdir()
    (root / "empty" / "notes.txt").write_text("no images here")
    return root / "empty"


def empty_npz(root: Path) -> Path:
    np.savez(root / "x.npz")
    return root / "x.npz"


PREDICT_CASES: list[tuple[str, str, Callable[[Path], Path], list[str]]] = [
    ("nan-pixels", "image", npy(nan_pixels()), ["input row 1", "nan or infinite"]),
    ("inf-rows", "tabular", npy(np.array([[1, 2, 3, 4], [0, np.inf, 0, 0]], dtype=np.float32)), ["input row 1"]),
    ("pixels-out-of-range", "image", npy(np.full((2, 1, 6, 6), 1e30, dtype=np.float32)), ["raw range 0–255"]),
    ("negative-raw-pixels", "image", npy(np.full((1, 6, 6), -5, dtype=np.int16)), ["raw range 0–255"]),
    ("wrong-shape", "image", npy(np.zeros((2, 1, 5, 5), dtype=np.float32)), ["shape (1, 6, 6)"]),
    ("object-array", "tabular", npy(np.array([{"a": 1}], dtype=object), pickle=True), ["x.npy", "pickled"]),
    ("corrupt-png", "image", garbage("x.png", b"\x89PNG broken"), ["cannot read image", "x.png"]),
    ("folder-without-images", "image", empty_folder, ["has no image files"]),
    ("text-for-images", "image", garbage("t.txt", b"a cat\na dog\n"), ["not text"]),
    ("image-for-tabular", "tabular", image_folder("ok"), ["not images"]),
    ("non-utf8-text", "image", garbage("t.txt", b"fine\nbad \xff byte\n"), ["t.txt:2", "not utf-8"]),
    ("empty-text-file", "image", garbage("t.txt", b"\n  \n"), ["no text lines"]),
    ("unsupported-input", "tabular", garbage("x.csv", b"1,2,3,4\n"), ["unsupported input file"]),
    ("npz-garbage", "tabular", garbage("x.npz", b"garbage"), ["x.npz", "not a numpy file"]),
    ("npz-no-arrays", "tabular", empty_npz, ["holds no arrays"]),
]


@pytest.mark.parametrize(("kind", "make", "needles"), [c[1:] for c in PREDICT_CASES], ids=[c[0] for c in PREDICT_CASES])
def test_bad_predict_input_is_one_line(kind, make, needles, bundles, tmp_path: Path, cli, one_line_error) -> None:  # type: ignore[no-untyped-def]
    target = make(tmp_path)
    if target.is_dir() and (target / "a").is_dir():
        target = target / "a" / "0.png"
    one_line_error(cli("predict", str(bundles[kind]), str(target), cwd=tmp_path), *needles)


def test_good_predict_inputs_still_work(bundles, tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    raw = np.random.default_rng(0).integers(0, 256, (3, 6, 6)).astype(np.float32)  # raw 0–255 floats
    np.save(tmp_path / "raw.npy", raw)
    np.save(tmp_path / "ints.npy", raw.astype(np.uint8))
    outs = [cli("predict", str(bundles["image"]), str(tmp_path / f), "--json") for f in ("raw.npy", "ints.npy")]
    assert [r.code for r in outs] == [0, 0]
    assert json.loads(outs[0].out) == json.loads(outs[1].out)
