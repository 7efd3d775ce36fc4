"""A tiny variant of every built-in architecture (plus a tiny random BERT) with matching random data,
so contract tests can run every registered method on every architecture in seconds."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from slimtune.data.core import DataSplits, split_arrays

SEQ, VOCAB = 12, 60


def _image_data(n: int = 96) -> DataSplits:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, 8, 8, generator=g)
    y = (x.mean(dim=(1, 2, 3)) > 0.5).long() + 2 * (x[:, 0, :4].mean(dim=(1, 2)) > 0.5).long()
    return split_arrays("tiny-images", x, y, label_names=["a", "b", "c", "d"], kind="image")


def _text_data(n: int = 96) -> DataSplits:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(1, VOCAB, (n, SEQ), generator=g)
    x[n // 2 :, SEQ - 4 :] = 0  # some padding
    y = (x[:, 1] > VOCAB // 2).long()
    data = split_arrays("tiny-text", x, y, label_names=["neg", "pos"], kind="text")
    data.input_shape = (SEQ,)
    return data


def _builtin(name: str, **options: object) -> Callable[[DataSplits], nn.Module]:
    def make(data: DataSplits) -> nn.Module:
        from slimtune.models import build

        return build(name, input_shape=data.input_shape, num_classes=data.num_classes, **options)

    return make


def _tiny_bert(data: DataSplits) -> nn.Module:
    from transformers import BertConfig

    from slimtune.models.hf import from_spec

    options: dict[str, Any] = {"num_labels": data.num_classes, "pad_token_id": 0}
    config = BertConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=32, **options,
    )  # fmt: skip
    return from_spec({"hf_config": config.to_dict(), "input_shape": [SEQ], "options": {"pad_id": 0}})


TINY: dict[str, tuple[Callable[[DataSplits], nn.Module], Callable[[], DataSplits]]] = {
    "mlp": (_builtin("mlp", hidden=[32, 16]), _image_data),
    "lenet-300-100": (_builtin("lenet-300-100"), _image_data),
    "lenet5": (_builtin("lenet5"), _image_data),
    "resnet-small": (_builtin("resnet-small", widths=[8, 16], blocks=1), _image_data),
    "transformer-small": (
        _builtin("transformer-small", vocab_size=VOCAB, dim=32, heads=4, layers=2, ffn=64),
        _text_data,
    ),
    "tiny-bert": (_tiny_bert, _text_data),
}


def tiny(name: str, *, seed: int = 0) -> tuple[nn.Module, DataSplits]:
    """A freshly initialised tiny model and its matching random data split."""
    make_model, make_data = TINY[name]
    data = make_data()
    torch.manual_seed(seed)
    return make_model(data), data
