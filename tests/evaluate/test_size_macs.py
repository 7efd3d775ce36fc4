from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from slimtune.errors import UnsupportedModelError
from slimtune.evaluate import (
    count_macs,
    count_macs_by_layer,
    count_nonzero,
    count_params,
    layer_sparsity,
    sparsity,
)


def _small_mlp() -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    with torch.no_grad():
        model[0].weight.view(-1)[:6] = 0.0
        model[0].bias[0] = 0.0
    return model


def test_param_counts_and_sparsity() -> None:
    model = _small_mlp()
    assert count_params(model) == 4 * 3 + 3 + 3 * 2 + 2 == 23
    assert count_nonzero(model) == 23 - 7
    assert sparsity(model) == pytest.approx(6 / 18)
    assert sparsity(model, matrices_only=False) == pytest.approx(7 / 23)
    assert layer_sparsity(model) == {"0.weight": pytest.approx(0.5), "2.weight": 0.0}


def test_shared_parameters_count_once() -> None:
    lin = nn.Linear(5, 5)
    model = nn.Sequential(lin, lin)
    assert count_params(model) == 30


def test_dynamic_quantized_model_keeps_param_count() -> None:
    model = _small_mlp()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            quantized = torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
        except (AttributeError, RuntimeError) as exc:  # removed in some torch builds
            pytest.skip(f"dynamic quantization unavailable: {exc}")
        assert count_params(quantized) == 23
        assert count_nonzero(quantized) == 16
        assert count_macs(quantized, torch.randn(1, 4)) == 4 * 3 + 3 * 2


def test_linear_macs_include_batch_and_sequence_dims() -> None:
    model = nn.Linear(8, 4)
    assert count_macs(model, torch.randn(2, 5, 8)) == 2 * 5 * 8 * 4


def test_conv_macs() -> None:
    conv = nn.Conv2d(3, 6, kernel_size=3, padding=1)
    assert count_macs(conv, torch.randn(1, 3, 10, 10)) == (6 * 10 * 10) * 3 * 9
    grouped = nn.Conv2d(4, 8, kernel_size=3, groups=2)
    assert count_macs(grouped, (torch.randn(1, 4, 6, 6),)) == (8 * 4 * 4) * 2 * 9
    conv1d = nn.Conv1d(2, 3, kernel_size=5)
    assert count_macs(conv1d, torch.randn(1, 2, 20)) == (3 * 16) * 2 * 5


def test_macs_by_layer_and_dense_counting() -> None:
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 4 * 4, 3), nn.ReLU(), nn.Linear(3, 2)
    )
    with torch.no_grad():
        model[3].weight.zero_()  # zeros still count as MACs
    by_layer = count_macs_by_layer(model, torch.randn(1, 1, 6, 6))
    assert by_layer == {"0": 32 * 1 * 9, "3": 32 * 3, "5": 3 * 2}
    assert count_macs(model, torch.randn(1, 1, 6, 6)) == sum(by_layer.values())


def test_multihead_attention_macs() -> None:
    mha = nn.MultiheadAttention(16, 4, batch_first=True)
    x = torch.randn(2, 5, 16)
    tokens = 2 * 5
    expected = 4 * tokens * 16 * 16 + 2 * (2 * 5 * 5 * 16)  # q,k,v,out projections + QK^T + AV
    assert count_macs(mha, (x, x, x)) == expected

    class Wrapper(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = nn.MultiheadAttention(16, 4)  # sequence-first

        def forward(self, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
            return self.attn(q, kv, kv, need_weights=False)[0]

    q, kv = torch.randn(5, 2, 16), torch.randn(7, 2, 16)  # cross attention, Lq=5, Lk=7, B=2
    expected = 10 * 16 * 16 + 2 * 14 * 16 * 16 + 2 * (2 * 5 * 7 * 16) + 10 * 16 * 16
    assert count_macs(Wrapper(), (q, kv)) == expected


def test_extra_macs_protocol() -> None:
    seen: list[tuple] = []

    class Custom(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Linear(6, 6)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.proj(x) @ x.transpose(-1, -2)

        def extra_macs(self, inputs: tuple, output: torch.Tensor) -> int:
            seen.append((inputs, output))
            (x,) = inputs
            return x.shape[0] * x.shape[1] * x.shape[1] * x.shape[2]

    x = torch.randn(1, 3, 6)
    by_layer = count_macs_by_layer(Custom(), x)
    assert by_layer == {"": 3 * 3 * 6, "proj": 3 * 6 * 6}
    assert len(seen) == 1 and seen[0][0][0] is x and seen[0][1].shape == (1, 3, 3)


def test_dict_inputs_and_mode_restored() -> None:
    class KwModel(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 2)
            self.drop = nn.Dropout(0.5)

        def forward(self, *, features: torch.Tensor) -> torch.Tensor:
            return self.drop(self.fc(features))

    model = KwModel().train()
    assert count_macs(model, {"features": torch.randn(4, 3)}) == 4 * 3 * 2
    assert model.training and model.drop.training


def test_rejects_non_module() -> None:
    with pytest.raises(UnsupportedModelError):
        count_macs(lambda x: x, torch.randn(1))  # type: ignore[arg-type]


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_bert_macs_include_attention_matmuls(attn_implementation: str) -> None:
    transformers = pytest.importorskip("transformers")
    hidden, layers, heads, inter, seq = 16, 2, 4, 32, 7
    config = transformers.BertConfig(
        vocab_size=50,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=inter,
        max_position_embeddings=32,
    )
    config._attn_implementation = attn_implementation
    torch.manual_seed(0)
    model = transformers.BertModel(config)
    inputs = {
        "input_ids": torch.randint(0, 50, (1, seq)),
        "attention_mask": torch.ones(1, seq, dtype=torch.long),
    }

    head_dim = hidden // heads
    attention_matmuls = 2 * 1 * heads * seq * seq * head_dim
    linears = 4 * seq * hidden * hidden + 2 * seq * hidden * inter  # q,k,v,o + feed-forward
    pooler = 1 * hidden * hidden  # dense layer on the [CLS] token
    by_layer = count_macs_by_layer(model, inputs)
    assert by_layer["encoder.layer.0.attention.self"] == attention_matmuls
    assert count_macs(model, inputs) == layers * (linears + attention_matmuls) + pooler
