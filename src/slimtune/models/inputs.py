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
from slimtune.errors import ConfigError, DataError
from slimtune.models import hf

if TYPE_CHECKING:
    from tokenizers import Tokenizer

    from slimtune.data.text import WordTokenizer
    from slimtune.recipe.schema import DataRef, ModelRef


def load_data(data_ref: DataRef, model_ref: ModelRef) -> tuple[DataSplits, dict[str, Any]]:
    from slimtune.data import load

    data = load(data_ref.name, seed=data_ref.seed, limit=data_ref.limit, **data_ref.file_options())
    if data.kind != "text":
        return data, {}
    tokenizer = _hf_tokenizer(model_ref, max_length=data_ref.max_length)
    if tokenizer is not None:
        return hf_tokenize_splits(data, tokenizer)
    if model_ref.load is not None:  # a saved transformer-small carries its word tokenizer
        from slimtune.data.text import WordTokenizer
        from slimtune.models.serialization import read_spec

        pre = read_spec(model_ref.load).get("preprocess", {})
        if "tokenizer" in pre:
            saved = WordTokenizer.from_dict(pre["tokenizer"])
            return tokenize_splits(data, max_length=pre["max_length"], tokenizer=saved)
    return tokenize_splits(data, max_length=data_ref.max_length)


def _hf_tokenizer(model_ref: ModelRef, *, max_length: int) -> Tokenizer | None:
    """The Hugging Face tokenizer of the model: from its folder, or the one a saved model carries."""
    if model_ref.name in hf.HF_NAMES:
        return hf.load_tokenizer(hf.resolve_folder(model_ref.name, model_ref.options), max_length=max_length)
    if model_ref.load is not None:
        from slimtune.models.serialization import read_spec

        spec = read_spec(model_ref.load)
        if "hf_tokenizer" in spec.get("preprocess", {}):
            return hf.tokenizer_from_spec(spec)
    return None


def hf_tokenize_splits(data: DataSplits, tokenizer: Tokenizer) -> tuple[DataSplits, dict[str, Any]]:
    """Token ids from a Hugging Face tokenizer (it pads to a fixed length) and the preprocess entry."""

    def enc(split: Split) -> Split:
        assert isinstance(split.x, list)
        return Split(hf.encode(tokenizer, split.x), split.y)

    train = enc(data.train)
    assert isinstance(train.x, torch.Tensor)
    length = int(train.x.shape[1])
    encoded = replace(data, train=train, val=enc(data.val), test=enc(data.test), input_shape=(length,))
    return encoded, hf.tokenizer_preprocess(tokenizer, max_length=length)


def tokenize_splits(
    data: DataSplits, *, max_length: int, vocab_size: int = 8000, tokenizer: WordTokenizer | None = None
) -> tuple[DataSplits, dict[str, Any]]:
    """Token ids from slimtune's word tokenizer: ``tokenizer`` if given, else one fitted on the train split."""
    from slimtune.data.text import WordTokenizer

    assert isinstance(data.train.x, list)
    tok = tokenizer or WordTokenizer.fit(data.train.x, vocab_size=vocab_size)

    def enc(split: Split) -> Split:
        assert isinstance(split.x, list)
        return Split(tok.encode(split.x, max_length=max_length), split.y)

    encoded = replace(data, train=enc(data.train), val=enc(data.val), test=enc(data.test), input_shape=(max_length,))
    return encoded, {"tokenizer": tok.to_dict(), "max_length": max_length, "vocab_size": len(tok)}


def load_start_model(model_ref: ModelRef, data: DataSplits, preprocess: dict[str, Any]) -> nn.Module:
    from slimtune.models import build, load_model, load_torch_checkpoint
    from slimtune.models.serialization import read_spec

    if model_ref.load is not None:
        check_spec_fits_data(read_spec(model_ref.load), data, source=model_ref.load)  # before any weights load
        model = load_model(model_ref.load)
    else:
        assert model_ref.name is not None
        options = dict(model_ref.options)
        if model_ref.name in hf.HF_NAMES:
            options.setdefault("label_names", data.label_names)
        elif data.kind == "text":
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


def check_spec_fits_data(spec: dict[str, Any], data: DataSplits, *, source: str | None = None) -> None:
    """A model only trains on, and is measured with, inputs of the shape its spec declares (else it would fail
    deep in torch, or train and be saved with a spec that no longer describes it)."""
    from slimtune.models.serialization import spec_input_shape

    if spec.get("arch") == "causal-lm":  # a causal LM reads windows of any length up to its context
        context, window = spec.get("context_length"), int(data.input_shape[0]) if data.input_shape else 0
        if isinstance(context, int) and window > context:
            raise DataError(f"the model reads at most {context} tokens, but {data.name} gives windows of {window}; "
                            "lower data.window")  # fmt: skip
        return
    declared = spec_input_shape(spec)
    given = tuple(int(s) for s in data.input_shape)
    if declared is not None and given and declared != given:
        who = f"the saved model '{source}'" if source else "the model"
        what = "token ids of length" if data.kind == "text" else f"{data.kind} inputs shaped"
        raise DataError(
            f"{who} takes inputs shaped {declared}, but {data.name} gives {what} {given}; use data of the shape "
            "it was trained on, or train a new model on this data (model: {name: ...})"
        )


def check_model_fits(model: nn.Module, data: DataSplits) -> None:
    """``check_spec_fits_data`` for a model in hand, plus: the data has no class past the model's head."""
    spec = getattr(model, "slimtune_spec", None)
    if not isinstance(spec, dict):
        return  # your own module: nothing declared to check
    check_spec_fits_data(spec, data)
    classes = spec.get("num_classes")
    if isinstance(classes, int) and data.num_classes > classes:
        raise DataError(
            f"the model predicts {classes} classes but {data.name} has {data.num_classes}; fine-tune it for "
            "these classes (a finetune stage gives it a new head) or use data of the classes it knows"
        )
