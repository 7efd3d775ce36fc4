"""The dependency-free word tokenizer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from slimtune.data import WordTokenizer
from slimtune.data.text import tokenize
from slimtune.errors import ConfigError, DataError

TEXTS = ["I love #driverless cars!", "@united lost my bag, again.", "cars cars love", "Don't go"]


def test_tokenize_words_mentions_hashtags_punctuation() -> None:
    assert tokenize("Hi @United: #Fail, don't!") == ["hi", "@united", ":", "#fail", ",", "don't", "!"]
    assert tokenize("see http://t.co/x1 now") == ["see", "<url>", "now"]


def test_fit_orders_by_frequency_then_alphabet() -> None:
    tok = WordTokenizer.fit(TEXTS)
    assert tok.vocab[:3] == ["[PAD]", "[UNK]", "[CLS]"]
    assert tok.vocab[3:5] == ["cars", "love"]  # 3 and 2 uses
    assert tok.vocab[5:8] == ["!", "#driverless", ","]  # single uses, alphabetical
    assert WordTokenizer.fit(list(reversed(TEXTS))).vocab == tok.vocab


def test_vocab_size_and_min_freq() -> None:
    assert WordTokenizer.fit(TEXTS, vocab_size=5).vocab == ["[PAD]", "[UNK]", "[CLS]", "cars", "love"]
    assert WordTokenizer.fit(TEXTS, min_freq=2).vocab[3:] == ["cars", "love"]
    with pytest.raises(ConfigError, match="vocab_size"):
        WordTokenizer.fit(TEXTS, vocab_size=3)


def test_encode_decode() -> None:
    tok = WordTokenizer.fit(TEXTS, min_freq=2)
    ids = tok.encode(["Love cars, zebra", ""], max_length=6)
    assert ids.dtype == torch.long and ids.shape == (2, 6)
    assert ids.tolist() == [[2, 4, 3, 1, 1, 0], [2, 0, 0, 0, 0, 0]]
    assert tok.decode(ids[0]) == "love cars [UNK] [UNK]"
    assert tok.encode(["cars " * 10], max_length=4).tolist() == [[2, 3, 3, 3]]
    assert torch.equal(tok.encode(TEXTS), tok.encode(TEXTS))


def test_save_load_round_trip(tmp_path: Path) -> None:
    tok = WordTokenizer.fit(TEXTS)
    path = tmp_path / "tok.json"
    tok.save(path)
    again = WordTokenizer.load(path)
    assert again.vocab == tok.vocab and len(again) == tok.vocab_size
    assert torch.equal(again.encode(TEXTS), tok.encode(TEXTS))
    assert WordTokenizer.from_dict(tok.to_dict()).vocab == tok.vocab


def test_load_bad_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="tokenizer file not found"):
        WordTokenizer.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        WordTokenizer.load(bad)
    with pytest.raises(DataError, match="not a slimtune word tokenizer"):
        WordTokenizer.from_dict({"vocab": ["a"]})
