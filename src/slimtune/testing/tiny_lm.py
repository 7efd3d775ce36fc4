"""Tiny random causal LMs (Llama with grouped-query attention, GPT-2) and a byte-level tokenizer, built in code
for tests of the KV-cache export and the runtime (no downloads)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

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


def tiny_llama(*, seed: int = 0, layers: int = 2, context: int = 256) -> Any:
    import transformers

    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=64, num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=128, tie_word_embeddings=True, max_position_embeddings=context,
        bos_token_id=None, eos_token_id=VOCAB - 1, pad_token_id=None, initializer_range=INIT,
    )  # fmt: skip
    return transformers.LlamaForCausalLM(cfg).eval()


def tiny_gpt2(*, seed: int = 0, layers: int = 2, context: int = 256) -> Any:
    import transformers

    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(
        vocab_size=VOCAB, n_embd=64, n_layer=layers, n_head=4, n_positions=context,
        bos_token_id=VOCAB - 1, eos_token_id=VOCAB - 1, initializer_range=INIT,
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
