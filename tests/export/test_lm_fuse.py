"""The fused-op KV-cache graph (lm_fuse): ONNX Runtime's fused ops are emitted for Llama-family models, the
graph keeps parity with PyTorch (also with layers that differ and Qwen3's per-head norms), padded batches
generate what each row would alone, and the models it cannot serve fall back to the traced graph."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import torch

from slimtune.export.lm_bundle import export_lm
from slimtune.export.lm_fuse import unsupported_reason
from slimtune.export.lm_onnx import LMExportConfig, export_lm_onnx
from slimtune.runtime.decoder import Decoder, ort_decoder_session
from slimtune.testing.tiny_lm import VOCAB, make_layers_differ_, tiny_gpt2, tiny_llama

PROMPTS = [[72, 101, 108, 108, 111], [84, 104, 101, 32, 99, 97, 116], [97], [10, 20, 30, 40, 50, 60, 70, 80, 90]]
CHECK = LMExportConfig(greedy_tokens=16, prompts=2, windows=2, window_length=32)


def _ops(path: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in onnx.load(str(path)).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def test_llama_export_uses_fused_ops_and_one_copy_of_the_tied_embedding(tmp_path: Path) -> None:
    model = tiny_llama()
    path = export_lm_onnx(model, tmp_path / "m.onnx")
    ops = _ops(path)
    assert ops["GroupQueryAttention"] == 2 and ops["SkipSimplifiedLayerNormalization"] == 4
    assert ops["SimplifiedLayerNormalization"] == 1 and "Split" in ops and "RotaryEmbedding" not in ops
    assert "Gemm" not in ops and "Cast" in ops and ops["Cast"] <= 2  # no per-layer casts
    assert "position_ids" not in {i.name for i in onnx.load(str(path)).graph.input}
    assert ops["MatMul"] == 2 * 4 + 1  # qkv, o, gate_up, down per layer + lm_head
    vocab_sized = [i for i in onnx.load(str(path)).graph.initializer if VOCAB in i.dims]
    assert len(vocab_sized) == 1  # the tied table is stored once (transposed), gathered along its 2nd axis


@pytest.mark.parametrize("differ", [False, True], ids=["uniform", "layers-differ"])
def test_fused_graph_parity_and_padded_batches(differ: bool, tmp_path: Path) -> None:
    model = tiny_llama()
    if differ:
        make_layers_differ_(model)
    model.config.eos_token_id = model.generation_config.eos_token_id = None
    report = export_lm(model, tmp_path / "m.onnx", prompts=PROMPTS[:2], config=CHECK)
    assert report["greedy_identical"] and report["max_abs_diff"] < 1e-4
    assert "GroupQueryAttention" in _ops(tmp_path / "m.onnx")
    decoder = Decoder(ort_decoder_session(tmp_path / "m.onnx"))
    assert decoder.right_padded  # GQA's layout: the runtime pads on the right
    batch = decoder.generate(PROMPTS, max_new_tokens=12)
    assert batch == [decoder.generate([p], max_new_tokens=12)[0] for p in PROMPTS]


def test_fused_and_traced_graphs_give_the_same_logits(tmp_path: Path) -> None:
    model = tiny_llama()
    ids = torch.randint(0, VOCAB, (2, 10), generator=torch.Generator().manual_seed(4))
    outs = []
    for fused in (True, False):
        decoder = Decoder(ort_decoder_session(export_lm_onnx(model, tmp_path / f"{fused}.onnx", fused=fused)))
        mask = ids.new_ones(ids.shape).numpy()
        positions = torch.arange(10).repeat(2, 1).numpy()  # (the fused graph takes none)
        outs.append(decoder.step(ids.numpy(), mask, positions, decoder.empty_past(2))[0])
    assert "GroupQueryAttention" not in _ops(tmp_path / "False.onnx")
    assert abs(outs[0] - outs[1]).max() < 1e-4


def test_qwen3_head_norms_and_qwen2_biases_in_the_fused_graph(tmp_path: Path) -> None:
    import transformers

    torch.manual_seed(0)
    common = dict(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  intermediate_size=96, max_position_embeddings=128, initializer_range=0.15)  # fmt: skip
    for i, model in enumerate([transformers.Qwen3ForCausalLM(transformers.Qwen3Config(**common, head_dim=16)),
                               transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**common))]):  # fmt: skip
        assert unsupported_reason(model) is None
        report = export_lm(model.eval(), tmp_path / f"{i}.onnx", prompts=PROMPTS[:2], config=CHECK)
        assert report["greedy_identical"] and report["max_abs_diff"] < 1e-4
        assert "GroupQueryAttention" in _ops(tmp_path / f"{i}.onnx")


def test_models_the_fused_graph_cannot_serve_are_traced(tmp_path: Path) -> None:
    import transformers

    assert unsupported_reason(tiny_gpt2()) == "model type 'gpt2' is not Llama-family"
    cfg = transformers.MistralConfig(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=1, num_attention_heads=4,
                                     num_key_value_heads=2, intermediate_size=96, sliding_window=16)  # fmt: skip
    assert unsupported_reason(transformers.MistralForCausalLM(cfg)) == "sliding-window attention"
    path = export_lm_onnx(tiny_gpt2(), tmp_path / "g.onnx")
    assert "GroupQueryAttention" not in _ops(path)
