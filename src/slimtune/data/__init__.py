"""Datasets: a registry of built-in sets plus user formats, all returned as seeded ``DataSplits``."""

from slimtune.data.builtin import DATASETS, load, names
from slimtune.data.core import DataSplits, Split, scale_images, split_arrays
from slimtune.data.text import WordTokenizer
from slimtune.data.user import load_path

__all__ = [
    "DATASETS",
    "DataSplits",
    "Split",
    "WordTokenizer",
    "load",
    "load_path",
    "names",
    "scale_images",
    "split_arrays",
]
