"""Datasets: a registry of built-in sets plus user formats, all returned as seeded ``DataSplits``."""

from slimtune.data.builtin import DATASETS, load, names
from slimtune.data.core import DataSplits, Split, scale_images, split_arrays
from slimtune.data.corpus import CORPORA, Corpus, Document, read_corpus
from slimtune.data.lm_data import load_text
from slimtune.data.text import WordTokenizer
from slimtune.data.user import load_path

__all__ = [
    "CORPORA",
    "DATASETS",
    "Corpus",
    "DataSplits",
    "Document",
    "Split",
    "WordTokenizer",
    "load",
    "load_path",
    "load_text",
    "names",
    "read_corpus",
    "scale_images",
    "split_arrays",
]
