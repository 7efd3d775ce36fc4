"""``transformer-small``: a compact encoder classifier over token ids, with an explicit attention
module (separate q/k/v/o projections) so heads can be counted, measured and later pruned."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from slimtune.errors import ConfigError
from slimtune.models.zoo import MODELS


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, head_dim: int) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        inner = heads * head_dim
        self.q = nn.Linear(dim, inner)
        self.k = nn.Linear(dim, inner)
        self.v = nn.Linear(dim, inner)
        self.o = nn.Linear(inner, dim)

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, s, self.heads, self.head_dim).transpose(1, 2)

        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        scores = q @ k.transpose(-1, -2) / (self.head_dim**0.5)
        scores = scores.masked_fill(pad_mask[:, None, None, :], torch.finfo(scores.dtype).min)
        ctx = torch.softmax(scores, dim=-1) @ v
        return self.o(ctx.transpose(1, 2).reshape(b, s, self.heads * self.head_dim))

    def extra_macs(self, inputs: tuple[Any, ...], output: torch.Tensor) -> int:
        b, s, _ = inputs[0].shape
        return 2 * b * self.heads * s * s * self.head_dim  # QKᵀ and attention·V


class EncoderLayer(nn.Module):
    def __init__(self, dim: int, heads: int, head_dim: int, ffn: int, dropout: float) -> None:
        super().__init__()
        self.attn = SelfAttention(dim, heads, head_dim)
        self.norm1 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn), nn.GELU(), nn.Linear(ffn, dim))
        self.norm2 = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.drop(self.attn(x, pad_mask)))
        return self.norm2(x + self.drop(self.ffn(x)))


class TransformerClassifier(nn.Module):
    """Token ids (B, S) int64, 0 = padding → logits (B, num_classes), read from the first token."""

    def __init__(
        self,
        *,
        vocab_size: int,
        max_length: int,
        num_classes: int,
        dim: int,
        heads: int,
        layers: int,
        ffn: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocab_size, dim, padding_idx=0)
        self.positions = nn.Embedding(max_length, dim)
        self.layers = nn.ModuleList(EncoderLayer(dim, heads, dim // heads, ffn, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        pad_mask = ids == 0
        pos = torch.arange(ids.shape[1], device=ids.device)
        x = self.tokens(ids) + self.positions(pos)[None]
        for layer in self.layers:
            x = layer(x, pad_mask)
        return self.head(self.norm(x[:, 0]))


@MODELS.register("transformer-small", help="small encoder classifier over token ids; options: dim, heads, layers, ffn")
def transformer_small(
    *,
    input_shape: Sequence[int],
    num_classes: int,
    vocab_size: int = 8000,
    dim: int = 64,
    heads: int = 4,
    layers: int = 2,
    ffn: int = 128,
    dropout: float = 0.1,
) -> nn.Module:
    if len(input_shape) != 1:
        raise ConfigError(f"transformer-small needs token-id inputs shaped (sequence,); got {tuple(input_shape)}")
    if dim % heads:
        raise ConfigError(f"transformer-small: dim ({dim}) must be divisible by heads ({heads})")
    return TransformerClassifier(
        vocab_size=vocab_size,
        max_length=int(input_shape[0]),
        num_classes=num_classes,
        dim=dim,
        heads=heads,
        layers=layers,
        ffn=ffn,
        dropout=dropout,
    )
