"""From a recipe's data and model references to tensor-ready splits and the starting model.

Text is tokenized here: the built-in ``transformer-small`` gets a word tokenizer fitted on the
training split (saved inside the model spec, so the artefact is self-contained); Hugging Face
models use their own tokenizer.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from slimtune.data.core import DataSplits, Split
from slimtune.errors import ConfigError

if TYPE_CHECKING:
    from slimtune.recipe.schema import DataRef, ModelRef


def load_data(data_ref: DataRef, model_ref: ModelRef) -> tuple[DataSplits, dict[str, Any]]:
    from slimtune.data import load

    data = load(data_ref.name, seed=data_ref.seed, limit=data_ref.limit)
    if data.kind != "text":
        return data, {}
    return tokenize_splits(data, max_length=data_ref.max_length)


def tokenize_splits(data: DataSplits, *, max_length: int, vocab_size: int = 8000) -> tuple[DataSplits, dict[str, Any]]:
    from slimtune.data.text import WordTokenizer

    assert isinstance(data.train.x, list)
    tok = WordTokenizer.fit(data.train.x, vocab_size=vocab_size)

    def enc(split: Split) -> Split:
        assert isinstance(split.x, list)
        return Split(tok.encode(split.x, max_length=max_length), split.y)

    encoded = replace(data, train=enc(data.train), val=enc(data.val), test=enc(data.test), input_shape=(max_length,))
    return encoded, {"tokenizer": tok.to_dict(), "max_length": max_length, "vocab_size": len(tok)}


def load_start_model(model_ref: ModelRef, data: DataSplits, preprocess: dict[str, Any]) -> nn.Module:
    from slimtune.models import build, load_model, load_torch_checkpoint

    if model_ref.load is not None:
        model = load_model(model_ref.load)
    else:
        assert model_ref.name is not None
        options = dict(model_ref.options)
        if data.kind == "text":
            if model_ref.name != "transformer-small":
                raise ConfigError(
                    f"model '{model_ref.name}' takes no token ids; "
                    "use transformer-small or a Hugging Face model for text"
                )
            options.setdefault("vocab_size", preprocess["vocab_size"])
        torch.manual_seed(0)
        model = build(model_ref.name, input_shape=data.input_shape, num_classes=data.num_classes, **options)
        if model_ref.checkpoint:
            load_torch_checkpoint(model, model_ref.checkpoint)
    if preprocess:
        spec: dict[str, Any] = model.slimtune_spec  # type: ignore[assignment]
        spec["preprocess"] = {k: v for k, v in preprocess.items() if k != "vocab_size"}
    return model
