"""Tiny causal LMs and synthetic token data for fast, deterministic LM training tests (no download).

``markov_lm_data`` samples token windows from a fixed random first-order Markov chain whose transition
rows are soft (several likely next tokens), so a model can learn it in a few hundred steps and a trained
teacher has non-trivial soft targets for distillation to transfer.
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import nn

from slimtune.data.core import DataSplits, Split


def tiny_llama(
    *, vocab: int = 32, hidden: int = 64, layers: int = 2, heads: int = 4, kv_heads: int = 2, seed: int = 0
) -> nn.Module:
    """A random-init ``LlamaForCausalLM`` (grouped-query attention), fp32, eval mode."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        num_key_value_heads=kv_heads, intermediate_size=2 * hidden, max_position_embeddings=256,
        tie_word_embeddings=False,
    )  # fmt: skip
    return LlamaForCausalLM(config).eval()


def tiny_gpt2(*, vocab: int = 32, hidden: int = 32, layers: int = 2, heads: int = 2, seed: int = 0) -> nn.Module:
    """A random-init ``GPT2LMHeadModel`` (tied embeddings, no dropout), fp32, eval mode."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=vocab, n_embd=hidden, n_layer=layers, n_head=heads, n_positions=256,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )  # fmt: skip
    return GPT2LMHeadModel(config).eval()


def markov_chain(vocab: int, *, sharpness: float = 2.0, seed: int = 0) -> torch.Tensor:
    """A (vocab, vocab) row-stochastic matrix: row ``a`` is the next-token distribution after ``a``."""
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(sharpness * torch.randn(vocab, vocab, generator=g), dim=-1)


def sample_windows(chain: torch.Tensor, n: int, length: int, *, seed: int) -> torch.Tensor:
    """``n`` int64 windows of ``length`` tokens sampled from ``chain``."""
    g = torch.Generator().manual_seed(seed)
    out = torch.empty(n, length, dtype=torch.long)
    out[:, 0] = torch.randint(len(chain), (n,), generator=g)
    for t in range(1, length):
        out[:, t] = torch.multinomial(chain[out[:, t - 1]], 1, generator=g).squeeze(1)
    return out


def markov_lm_data(
    *, vocab: int = 32, length: int = 16, train: int = 256, val: int = 64, test: int = 64, seed: int = 0,
    sharpness: float = 2.0,
) -> DataSplits:  # fmt: skip
    """LM splits (``kind == "lm"``: x = token ids, y = the same ids as labels, -100 nowhere); a larger
    ``sharpness`` makes the next token more predictable."""
    chain = markov_chain(vocab, sharpness=sharpness, seed=seed)
    splits = [sample_windows(chain, n, length, seed=seed * 10 + i + 1) for i, n in enumerate((train, val, test))]
    tr, va, te = (Split(x, x.clone()) for x in splits)
    return DataSplits(
        name="markov", train=tr, val=va, test=te, num_classes=vocab, label_names=[str(i) for i in range(vocab)],
        kind=cast(Any, "lm"), input_shape=(length,), meta={"chain": chain},
    )  # fmt: skip
