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
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

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


def encode_documents(tok: LMTokenizer, docs: Sequence[Document]) -> list[Encoded]:
    out: list[Encoded] = []
    texts = [d for d in docs if d.messages is None]
    encoded = iter(tok.encode_batch([d.text for d in texts])) if texts else iter(())
    for doc in docs:
        if doc.messages is not None:
            out.append(encode_chat(tok, doc.messages, where=doc.name))
        else:
            ids = tok.document(next(encoded))
            out.append((ids, list(ids)))
    return out


def _cut(ids: list[int], labels: list[int], window: int, pad_id: int) -> list[Encoded]:
    rows = []
    for start in range(0, len(ids), window):
        x, y = ids[start : start + window], labels[start : start + window]
        if sum(1 for v in y[1:] if v != IGNORE) == 0:
            continue  # nothing to predict in this window
        pad = window - len(x)
        rows.append((x + [pad_id] * pad, y + [IGNORE] * pad))
    return rows


def pack(encoded: Sequence[Encoded], *, window: int, pad_id: int, packing: bool = False) -> Split:
    """Encoded documents → a Split of windows (see the module docstring for boundaries)."""
    if window < 2:
        raise ConfigError(f"window must be at least 2 tokens; got {window}")
    rows: list[Encoded] = []
    if packing:
        ids = [t for doc in encoded for t in doc[0]]
        labels = [t for doc in encoded for t in doc[1]]
        rows = _cut(ids, labels, window, pad_id)
    else:
        for ids, labels in encoded:
            rows += _cut(ids, labels, window, pad_id)
    if not rows:
        return Split(torch.zeros(0, window, dtype=torch.long), torch.zeros(0, window, dtype=torch.long))
    return Split(torch.tensor([r[0] for r in rows]), torch.tensor([r[1] for r in rows]))


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
        splits = _split_windows(
            pack(encode_documents(tok, corpus.documents), window=window, pad_id=tok.pad_id, packing=packing)
        )
    else:
        docs = {s: [d.name for d in by_split[s]] for s in SPLITS}
        splits = {
            s: pack(encode_documents(tok, by_split[s]), window=window, pad_id=tok.pad_id, packing=packing)
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
