"""Ragged groups: a group size that does not divide a layer's width is an error naming the fix by default; with
``ragged_groups: true`` the last group is shorter, quantized on its own min/max, and MatMulNBits (K padded to a
block multiple) computes exactly with it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from slimtune.errors import ConfigError
from slimtune.export.lm_nbits import pack
from slimtune.quantize.weight_only import AWQConfig, GPTQConfig, HQQConfig, RTNConfig, quantize_lm_
from slimtune.quantize.weight_only.api import quantized_layers
from slimtune.quantize.weight_only.grid import hqq, rtn
from slimtune.testing.tiny_lm import tiny_llama

W = torch.randn(6, 72, generator=torch.Generator().manual_seed(0))  # 72 = 2 × 32 + 8


@pytest.mark.parametrize("symmetric", [True, False])
def test_last_group_is_quantized_on_its_own_range(symmetric: bool) -> None:
    qw = rtn(W, bits=4, group_size=32, symmetric=symmetric)
    assert qw.codes.shape == (6, 72) and qw.scales.shape == (6, 3) and qw.zeros.shape == (6, 3)
    whole = rtn(W[:, :64], bits=4, group_size=32, symmetric=symmetric)
    tail = rtn(W[:, 64:], bits=4, group_size=8, symmetric=symmetric)  # the short group alone
    assert torch.equal(qw.codes[:, :64], whole.codes) and torch.equal(qw.codes[:, 64:], tail.codes)
    assert torch.allclose(qw.scales[:, 2], tail.scales[:, 0]) and torch.equal(qw.zeros[:, 2], tail.zeros[:, 0])
    deq = qw.dequantize()
    assert deq.shape == W.shape and torch.equal(deq[:, 64:], tail.dequantize())
    assert (deq - W).abs().max() <= qw.scales.abs().max() / 2 + 1e-6  # symmetric scales may be negative (ORT)
    h = hqq(W, bits=4, group_size=32)  # HQQ starts from RTN's grid and never ends worse
    plain = rtn(W, bits=4, group_size=32, symmetric=False)
    assert (h.dequantize() - W).abs().mean() <= (plain.dequantize() - W).abs().mean() + 1e-6


@pytest.mark.parametrize("bits, symmetric", [(4, True), (4, False), (8, False)])
def test_matmul_nbits_pads_k_and_matches_exactly(bits: int, symmetric: bool) -> None:
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    qw = rtn(W, bits=bits, group_size=32, symmetric=symmetric)
    p = pack(qw)
    assert p["B"].shape == (6, 3, 32 * p["bits"] // 8) and p["scales"].shape == (6, 3) and p["K"] == 72
    inits = [numpy_helper.from_array(p["B"], "B"), numpy_helper.from_array(p["scales"], "S")]
    inputs = ["A", "B", "S"]
    if p["zero_points"] is not None:
        inits.append(numpy_helper.from_array(p["zero_points"], "Z"))
        inputs.append("Z")
    node = helper.make_node("MatMulNBits", inputs, ["Y"], domain="com.microsoft", K=72, N=6, bits=p["bits"],
                            block_size=32)  # fmt: skip
    graph = helper.make_graph([node], "ragged", [helper.make_tensor_value_info("A", TensorProto.FLOAT, [3, 72])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [3, 6])], inits)  # fmt: skip
    proto = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    )
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    a = np.random.default_rng(0).standard_normal((3, 72)).astype(np.float32)
    (y,) = sess.run(None, {"A": a})
    np.testing.assert_allclose(y, a @ qw.dequantize().numpy().T, atol=1e-4, rtol=1e-5)


def test_default_refuses_with_the_layer_width_and_the_fix() -> None:
    model = tiny_llama(hidden=48)
    with pytest.raises(ConfigError) as err:
        quantize_lm_(model, RTNConfig(group_size=32))
    msg = str(err.value)
    assert msg.startswith("group_size 32 does not divide model.layers.0.self_attn.q_proj's input width 48")
    assert "16" in msg and "ragged_groups: true" in msg and "\n" not in msg and not quantized_layers(model)
    with pytest.raises(ConfigError, match="clip: false or ragged_groups: false"):
        AWQConfig(clip=True, ragged_groups=True)


def test_every_method_runs_ragged() -> None:
    ids = torch.randint(0, 256, (4, 16), generator=torch.Generator().manual_seed(0))
    for cfg in (
        RTNConfig(group_size=32, ragged_groups=True),
        HQQConfig(group_size=32, ragged_groups=True, iters=3),
        GPTQConfig(group_size=32, ragged_groups=True, samples=4),
        GPTQConfig(group_size=32, ragged_groups=True, samples=4, act_order=True),
        AWQConfig(group_size=32, ragged_groups=True, samples=4, grid=3),
    ):
        model = tiny_llama(hidden=48)
        quantize_lm_(model, cfg, calibration=ids)
        layers = quantized_layers(model)
        assert len(layers) == 14
        for layer, qw in layers.values():
            assert qw.scales.shape[1] == -(-qw.shape[1] // 32)  # 48 → 2 groups (32 + 16); 96 → 3
            assert torch.equal(layer.weight, qw.dequantize())


def test_quantizing_only_the_blocks_keeps_a_tied_embedding_tied() -> None:
    model = tiny_llama()
    quantize_lm_(model, RTNConfig(group_size=32))
    assert model.lm_head.weight is model.get_input_embeddings().weight and model.config.tie_word_embeddings
