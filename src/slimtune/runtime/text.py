"""Text to token ids without torch: slimtune's word tokenizer core, shared by training and the runtime."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

PAD, UNK, CLS = "[PAD]", "[UNK]", "[CLS]"
SPECIALS = (PAD, UNK, CLS)
URL = "<url>"
# URLs, @mentions / #hashtags / words (with an inner apostrophe: "don't"), then single punctuation marks.
TOKEN_RE = re.compile(r"(https?://\S+|www\.\S+)|([@#]?\w+(?:'\w+)*|[^\w\s])")


def tokenize(text: str) -> list[str]:
    """Lowercase ``text`` and split it into word, @mention, #hashtag and punctuation tokens."""
    return [URL if url else tok for url, tok in TOKEN_RE.findall(text.lower())]


def word_ids(index: Mapping[str, int], texts: Sequence[str], *, max_length: int) -> list[list[int]]:
    """Rows of ``max_length`` ids: ``[CLS]``, the first tokens of each text (unknown → ``[UNK]``), ``[PAD]``s."""
    unk, cls_id, pad = index[UNK], index[CLS], index[PAD]
    rows = []
    for text in texts:
        ids = [cls_id, *(index.get(tok, unk) for tok in tokenize(text))][:max_length]
        rows.append(ids + [pad] * (max_length - len(ids)))
    return rows
