"""Tokenize a text corpus with a causal LM's tokenizer and pack it into fixed windows.

``load_text(corpus, model, window=512)`` returns the ``DataSplits`` every stage consumes, with
``kind="lm"`` and, per split, ``x`` = int64 [N, window] token ids and ``y`` = int64 [N, window] labels
in the Hugging Face convention: ``y[:, t]`` is the token at position t (so the loss compares
``logits[:, t - 1]`` with ``y[:, t]``) or -100 where nothing is learned (padding, chat prompts).

Document boundaries: each document is ``[BOS] tokens EOS`` (BOS only for models whose tokenizer adds
one). Without ``packing`` (the default) every window holds one document only: a document is cut into
consecutive windows and its last, shorter window is padded (``pad_id``, label -100); windows with nothing
to predict are dropped. With ``packing=True`` all documents of a split are concatenated (EOS between
them) and cut into windows regardless of boundaries — fewer padded tokens, windows may span documents.
Chat documents are rendered with the model's chat template; only the assistant turns (and the
template's end-of-turn tokens after them) are learned, every prompt token is masked to -100.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from slimtune.data.core import DataSplits, Split
from slimtune.data.corpus import SPLITS, Corpus, Document, read_corpus, split_documents
from slimtune.errors import ConfigError, DataError
from slimtune.models.lm_tokenizer import LMTokenizer

IGNORE = -100
Encoded = tuple[list[int], list[int]]  # token ids, labels (IGNORE where masked)


def as_tokenizer(model_or_tokenizer: nn.Module | LMTokenizer) -> LMTokenizer:
    if isinstance(model_or_tokenizer, LMTokenizer):
        return model_or_tokenizer
    from slimtune.models.lm import lm_tokenizer

    return lm_tokenizer(model_or_tokenizer)


def encode_chat(tok: LMTokenizer, messages: Sequence[dict[str, str]], *, where: str) -> Encoded:
    """A conversation → ids and labels; only assistant turns (with the template's closing tokens) are learned."""
    if not any(m["role"] == "assistant" for m in messages):
        raise DataError(f"{where} has no assistant message, so there is nothing to learn; add the reply")
    if messages[0]["role"] == "assistant":
        raise DataError(f"{where} starts with the assistant; start with a user or system message")
    pieces: list[tuple[str, bool]] = []  # (text, learned)
    done = ""
    for i, msg in enumerate(messages):
        if msg["role"] != "assistant":
            continue
        prompt = tok.render_chat(messages[:i], add_generation_prompt=True)
        full = tok.render_chat(messages[: i + 1])
        if not (prompt.startswith(done) and full.startswith(prompt)):
            raise DataError(
                f"{where}: the chat template does not render the conversation turn by turn, "
                "so prompt tokens cannot be masked; use a template whose turns only append text"
            )
        pieces += [(prompt[len(done) :], False), (full[len(prompt) :], True)]
        done = full
    rest = tok.render_chat(messages)
    if rest.startswith(done) and len(rest) > len(done):
        pieces.append((rest[len(done) :], False))
    ids: list[int] = [tok.bos_id] if tok.add_bos and tok.bos_id is not None else []
    labels: list[int] = list(ids)
    for text, learned in pieces:
        part = tok.encode(text) if text else []
        ids += part
        labels += part if learned else [IGNORE] * len(part)
    return ids, labels


def encode_documents(tok: LMTokenizer, docs: Sequence[Document], *, batch: int = 8) -> Iterator[Encoded]:
    """Each document's (ids, labels), encoded lazily a few documents at a time (in parallel)."""
    for i in range(0, len(docs), batch):
        group = docs[i : i + batch]
        texts = [d.text for d in group if d.messages is None]
        encoded = iter(tok.encode_batch(texts)) if texts else iter(())
        for doc in group:
            if doc.messages is not None:
                yield encode_chat(tok, doc.messages, where=doc.name)
            else:
                ids = tok.document(next(encoded))
                yield ids, ids


def _cut(ids: Sequence[int], labels: Sequence[int], window: int, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Consecutive windows of one token stream, the last padded; windows with nothing to predict dropped."""
    rows = -(-len(ids) // window)
    pad = rows * window - len(ids)
    x = F.pad(torch.tensor(ids, dtype=torch.long), (0, pad), value=pad_id).view(rows, window)
    y = F.pad(torch.tensor(labels, dtype=torch.long), (0, pad), value=IGNORE).view(rows, window)
    keep = (y[:, 1:] != IGNORE).any(dim=1)
    return x[keep], y[keep]


def pack(
    encoded: Iterable[Encoded], *, window: int, pad_id: int, packing: bool = False, limit: int | None = None
) -> Split:
    """Encoded documents → a Split of windows (see the module docstring for boundaries); with ``limit``,
    documents stop being read once ``limit`` windows are full."""
    if window < 2:
        raise ConfigError(f"window must be at least 2 tokens; got {window}")
    xs: list[torch.Tensor] = []
    ys: list[torch.Tensor] = []
    stream: tuple[list[int], list[int]] = ([], [])
    count = 0
    for ids, labels in encoded:
        if packing:
            stream[0].extend(ids)
            stream[1].extend(labels)
            count = len(stream[0]) // window
        else:
            x, y = _cut(ids, labels, window, pad_id)
            xs.append(x)
            ys.append(y)
            count += len(x)
        if limit is not None and count >= limit:
            break
    if packing and stream[0]:
        x, y = _cut(*stream, window, pad_id)
        xs, ys = [x], [y]
    if not xs:
        return Split(torch.zeros(0, window, dtype=torch.long), torch.zeros(0, window, dtype=torch.long))
    split = Split(torch.cat(xs), torch.cat(ys))
    return split if limit is None else split.take(limit)


def _split_windows(split: Split) -> dict[str, Split]:
    """Few documents: cut the windows in reading order, 80% train, then 10% val, 10% test (≥ 1 each)."""
    n = len(split)
    if n < 3:
        raise DataError(
            f"the text gives only {n} window(s); need at least 3 (train/val/test): add text or lower window"
        )
    n_held = max(1, round(0.1 * n))
    cut = n - 2 * n_held
    assert isinstance(split.x, torch.Tensor)
    return {
        "train": Split(split.x[:cut], split.y[:cut]),
        "val": Split(split.x[cut : cut + n_held], split.y[cut : cut + n_held]),
        "test": Split(split.x[cut + n_held :], split.y[cut + n_held :]),
    }


def load_text(
    name_or_path: str | os.PathLike[str] | Corpus,
    model_or_tokenizer: nn.Module | LMTokenizer,
    *,
    window: int = 512,
    packing: bool = False,
    text_field: str = "text",
    format: str = "auto",
    seed: int = 0,
    limit: int | None = None,
) -> DataSplits:
    """A corpus (registered name, text path, or ``Corpus``) as LM windows; ``limit`` caps windows per split."""
    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be at least 1 window; got {limit}")
    tok = as_tokenizer(model_or_tokenizer)
    corpus = (
        name_or_path
        if isinstance(name_or_path, Corpus)
        else read_corpus(name_or_path, text_field=text_field, fmt=format)
    )
    if corpus.is_chat and not tok.chat_template:
        raise DataError(
            f"'{corpus.name}' is chat data but the model has no chat template; "
            "use a chat model (e.g. smollm2-135m, tiny-llama) or plain text data"
        )
    by_split = split_documents(corpus, seed=seed)
    splits: dict[str, Split]
    if by_split is None:
        docs = {s: [d.name for d in corpus.documents] for s in SPLITS}
        cap = None if limit is None else 10 * limit  # the window split keeps 80% for train
        stream = pack(
            encode_documents(tok, corpus.documents), window=window, pad_id=tok.pad_id, packing=packing, limit=cap
        )
        splits = _split_windows(stream)
    else:
        docs = {s: [d.name for d in by_split[s]] for s in SPLITS}
        splits = {
            s: pack(encode_documents(tok, by_split[s]), window=window, pad_id=tok.pad_id, packing=packing, limit=limit)
            for s in SPLITS
        }
    for s, split in splits.items():
        if len(split) == 0:
            raise DataError(f"'{corpus.name}' gives no {s} windows; add text or lower window")
    if limit is not None:
        splits = {s: split.take(limit) for s, split in splits.items()}
    meta: dict[str, Any] = {
        **corpus.meta,
        "window": window,
        "packing": packing,
        "chat": corpus.is_chat,
        "pad_id": tok.pad_id,
        "eos_id": tok.eos_id,
        "documents": docs,
        "tokens": {s: int((split.y != IGNORE).sum()) for s, split in splits.items()},
    }
    return DataSplits(
        name=corpus.name,
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        num_classes=tok.vocab_size,
        label_names=[],
        kind="lm",
        input_shape=(window,),
        meta=meta,
    )
