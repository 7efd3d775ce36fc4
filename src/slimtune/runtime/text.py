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


def length_buckets(
    ids: Sequence[Sequence[int]], pad_id: int, batch_size: int
) -> list[tuple[list[int], list[list[int]]]]:
    """Batches of at most ``batch_size`` rows of similar length, each cut to its own longest row: the rows
    sorted by their used length (stable), chunked, and each chunk's trailing all-padding columns dropped.
    Returns (row indices, trimmed rows) per batch; running them and putting the results back at those
    indices gives what the fixed-length padding gives, for a model that masks its padding."""
    lengths = []
    for row in ids:
        used = [i for i, t in enumerate(row) if t != pad_id]
        lengths.append(used[-1] + 1 if used else 1)
    order = sorted(range(len(ids)), key=lambda i: lengths[i])
    out = []
    for start in range(0, len(order), max(1, batch_size)):
        chunk = order[start : start + max(1, batch_size)]
        keep = max(lengths[i] for i in chunk)
        out.append((chunk, [list(ids[i][:keep]) for i in chunk]))
    return out
