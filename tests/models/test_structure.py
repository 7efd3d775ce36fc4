"""A model whose layers were physically shrunk or removed saves and reloads to the same outputs."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from slimtune.models import build, load_model, save_model


def shrink_linear_pair(first: nn.Linear, second: nn.Linear, keep: torch.Tensor) -> tuple[nn.Linear, nn.Linear]:
    a = nn.Linear(first.in_features, len(keep))
    a.weight.data, a.bias.data = first.weight.data[keep].clone(), first.bias.data[keep].clone()
    b = nn.Linear(len(keep), second.out_features)
    b.weight.data, b.bias.data = second.weight.data[:, keep].clone(), second.bias.data.clone()
    return a, b


def roundtrip(model: nn.Module, x: torch.Tensor, tmp_path: Path) -> None:
    model.eval()
    expected = model(x)
    save_model(model, tmp_path / "m")
    again = load_model(tmp_path / "m").eval()
    assert sum(p.numel() for p in again.parameters()) == sum(p.numel() for p in model.parameters())
    torch.testing.assert_close(again(x), expected)


def test_mlp_with_removed_neurons(tmp_path: Path) -> None:
    model = build("mlp", input_shape=(1, 8, 8), num_classes=10, hidden=[64, 32])
    net = model.net  # type: ignore[union-attr]
    net[1], net[3] = shrink_linear_pair(net[1], net[3], torch.arange(0, 64, 2))
    roundtrip(model, torch.rand(3, 1, 8, 8), tmp_path)


def test_resnet_with_fewer_channels(tmp_path: Path) -> None:
    model = build("resnet-small", input_shape=(1, 8, 8), num_classes=10)
    block = model.layers[0]  # type: ignore[index]
    keep = torch.arange(8)  # conv1 → bn1 → conv2 inner channels 16 → 8
    conv1 = nn.Conv2d(16, 8, 3, 1, 1, bias=False)
    conv1.weight.data = block.conv1.weight.data[keep].clone()
    bn1 = nn.BatchNorm2d(8)
    conv2 = nn.Conv2d(8, 16, 3, 1, 1, bias=False)
    conv2.weight.data = block.conv2.weight.data[:, keep].clone()
    block.conv1, block.bn1, block.conv2 = conv1, bn1, conv2
    roundtrip(model, torch.rand(3, 1, 8, 8), tmp_path)


def test_transformer_with_removed_heads_and_layers(tmp_path: Path) -> None:
    model = build("transformer-small", input_shape=(10,), num_classes=2, vocab_size=40, dim=32, heads=4, layers=3)
    del model.layers[2]  # type: ignore[union-attr]
    attn = model.layers[0].attn  # type: ignore[index]
    keep = torch.arange(16)  # heads 0 and 1 of 4 (head_dim 8)
    for proj in ("q", "k", "v"):
        old = getattr(attn, proj)
        new = nn.Linear(32, 16)
        new.weight.data, new.bias.data = old.weight.data[keep].clone(), old.bias.data[keep].clone()
        setattr(attn, proj, new)
    o = nn.Linear(16, 32)
    o.weight.data, o.bias.data = attn.o.weight.data[:, keep].clone(), attn.o.bias.data.clone()
    attn.o, attn.heads = o, 2
    roundtrip(model, torch.randint(1, 40, (3, 10)), tmp_path)
