"""Tiny random causal LMs (Llama with grouped-query attention, GPT-2), a byte-level tokenizer and synthetic
token data, built in code for tests (no downloads).

``markov_lm_data`` samples token windows from a fixed random first-order Markov chain whose transition
rows are soft (several likely next tokens), so a model can learn it in a few hundred steps and a trained
teacher has non-trivial soft targets for distillation to transfer.
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import nn

from slimtune.data.core import DataSplits, Split

EOS = "<|endoftext|>"


def byte_tokenizer() -> Any:
    """A byte-level ``tokenizers.Tokenizer``: the 256 byte symbols (ids 0-255) and ``<|endoftext|>`` (256)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([EOS])
    return tok


VOCAB = 257  # byte_tokenizer's size
INIT = 0.15  # larger than HF's 0.02: random models then produce varied text, not one repeated token


def tiny_llama(
    *, vocab: int = VOCAB, hidden: int = 64, layers: int = 2, heads: int = 4, kv_heads: int = 2, seed: int = 0,
    context: int = 256, tied: bool = True, init: float = INIT,
) -> Any:  # fmt: skip
    """A random-init ``LlamaForCausalLM`` (grouped-query attention), fp32, eval mode."""
    import transformers

    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(
        vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        num_key_value_heads=kv_heads, intermediate_size=2 * hidden, tie_word_embeddings=tied,
        max_position_embeddings=context, bos_token_id=None, eos_token_id=vocab - 1, pad_token_id=None,
        initializer_range=init,
    )  # fmt: skip
    return transformers.LlamaForCausalLM(cfg).eval()


def tiny_gpt2(
    *, vocab: int = VOCAB, hidden: int = 64, layers: int = 2, heads: int = 4, seed: int = 0, context: int = 256,
    init: float = INIT,
) -> Any:  # fmt: skip
    """A random-init ``GPT2LMHeadModel`` (tied embeddings, no dropout), fp32, eval mode."""
    import transformers

    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(
        vocab_size=vocab, n_embd=hidden, n_layer=layers, n_head=heads, n_positions=context,
        bos_token_id=vocab - 1, eos_token_id=vocab - 1, initializer_range=init,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )  # fmt: skip
    return transformers.GPT2LMHeadModel(cfg).eval()


def make_layers_differ_(model: Any) -> None:
    """Shrink a tiny Llama the way structured pruning would: layer 0 keeps 2 query heads of 4 (1 KV head of 2),
    layer 1 keeps 80 of 128 FFN channels; weights are the kept slices, so the model stays a working LM."""
    layer0, layer1 = model.model.layers[0], model.model.layers[1]
    attn = layer0.self_attn
    d = attn.head_dim

    def cut(linear: nn.Linear, rows: slice | None = None, cols: slice | None = None) -> nn.Linear:
        w = linear.weight.data[rows or slice(None)][:, cols or slice(None)]
        new = nn.Linear(w.shape[1], w.shape[0], bias=linear.bias is not None)
        new.weight.data.copy_(w)
        if linear.bias is not None:
            new.bias.data.copy_(linear.bias.data[rows or slice(None)])
        return new

    attn.q_proj = cut(attn.q_proj, rows=slice(0, 2 * d))
    attn.k_proj = cut(attn.k_proj, rows=slice(0, d))
    attn.v_proj = cut(attn.v_proj, rows=slice(0, d))
    attn.o_proj = cut(attn.o_proj, cols=slice(0, 2 * d))
    attn.num_key_value_groups = 2
    mlp = layer1.mlp
    mlp.gate_proj = cut(mlp.gate_proj, rows=slice(0, 80))
    mlp.up_proj = cut(mlp.up_proj, rows=slice(0, 80))
    mlp.down_proj = cut(mlp.down_proj, cols=slice(0, 80))


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
