"""A dependency-free word tokenizer for ``transformer-small``: lowercased regex tokens, a frequency-ranked
vocabulary (ties broken alphabetically) and fixed-length id tensors with ``[CLS]`` first."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from slimtune._io import write_text
from slimtune.errors import ConfigError, DataError
from slimtune.runtime.text import CLS, PAD, SPECIALS, UNK, URL, tokenize, word_ids

__all__ = ["CLS", "PAD", "SPECIALS", "UNK", "URL", "WordTokenizer", "tokenize"]


class WordTokenizer:
    """Maps text to token ids: 0 = ``[PAD]``, 1 = ``[UNK]``, 2 = ``[CLS]``, then words by frequency."""

    def __init__(self, vocab: Sequence[str]) -> None:
        if tuple(vocab[:3]) != SPECIALS:
            raise DataError(f"tokenizer vocabulary must start with {list(SPECIALS)}; got {list(vocab[:3])}")
        if len(set(vocab)) != len(vocab):
            raise DataError("tokenizer vocabulary has duplicate tokens; rebuild it with WordTokenizer.fit")
        self.vocab = list(vocab)
        self.index = {tok: i for i, tok in enumerate(self.vocab)}

    @classmethod
    def fit(cls, texts: Iterable[str], *, vocab_size: int = 8000, min_freq: int = 1) -> WordTokenizer:
        """Keep the ``vocab_size - 3`` most frequent tokens seen at least ``min_freq`` times."""
        if vocab_size <= len(SPECIALS):
            raise ConfigError(f"vocab_size must be greater than {len(SPECIALS)}; got {vocab_size}")
        counts = Counter(tok for text in texts for tok in tokenize(text))
        ranked = sorted((tok for tok, n in counts.items() if n >= min_freq), key=lambda t: (-counts[t], t))
        words = [tok for tok in ranked if tok not in SPECIALS][: vocab_size - len(SPECIALS)]
        return cls([*SPECIALS, *words])

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def __len__(self) -> int:
        return len(self.vocab)

    def encode(self, texts: Sequence[str], *, max_length: int = 64) -> torch.Tensor:
        """Token ids (N, max_length) int64: ``[CLS]``, the first tokens of each text, then ``[PAD]``."""
        if max_length < 1:
            raise ConfigError(f"max_length must be at least 1; got {max_length}")
        return torch.tensor(word_ids(self.index, texts, max_length=max_length), dtype=torch.long).reshape(
            len(texts), max_length
        )

    def decode(self, ids: torch.Tensor | Sequence[int]) -> str:
        """The tokens of one id row joined by spaces, without ``[PAD]`` and ``[CLS]``."""
        values = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        skip = {self.index[PAD], self.index[CLS]}
        return " ".join(self.vocab[i] if 0 <= i < len(self.vocab) else UNK for i in values if i not in skip)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "word", "version": 1, "vocab": list(self.vocab)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WordTokenizer:
        if data.get("type") != "word" or not isinstance(data.get("vocab"), list):
            raise DataError("not a slimtune word tokenizer (need type 'word' and a 'vocab' list); re-save it")
        return cls([str(tok) for tok in data["vocab"]])

    def save(self, path: str | os.PathLike[str]) -> None:
        write_text(path, json.dumps(self.to_dict(), ensure_ascii=False))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> WordTokenizer:
        p = Path(path)
        if not p.is_file():
            raise DataError(f"tokenizer file not found: {p}; save one with WordTokenizer.save")
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError(f"tokenizer file {p} is not valid JSON ({exc}); re-save it") from exc
        if not isinstance(data, dict):
            raise DataError(f"tokenizer file {p} does not hold a JSON object; re-save it")
        return cls.from_dict(data)
