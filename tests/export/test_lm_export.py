"""KV-cache ONNX export of causal LMs: graph contract, parity (logits through the cache, greedy tokens), layers
that differ, external data, and the errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from slimtune.errors import ParityError, UnsupportedModelError
from slimtune.export.lm_bundle import export_lm
from slimtune.export.lm_onnx import LMExportConfig, export_lm_onnx
from slimtune.export.lm_parity import check_lm_parity, lm_parity
from slimtune.runtime.decoder import Decoder, ort_decoder_session
from slimtune.testing.tiny_lm import VOCAB, make_layers_differ_, tiny_gpt2, tiny_llama

PROMPTS = [[72, 101, 108, 108, 111], [84, 104, 101, 32, 99, 97, 116], [97], [10, 20, 30, 40, 50, 60, 70, 80, 90]]


def _torch_greedy(model, prompt: list[int], n: int) -> list[int]:
    from transformers import GenerationConfig

    ids = torch.tensor([prompt])
    gen = GenerationConfig(do_sample=False, max_new_tokens=n, pad_token_id=0)
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), generation_config=gen)
    return out[0, len(prompt) :].tolist()


def _without_eos(model):
    model.config.eos_token_id = model.generation_config.eos_token_id = None  # so all 32 tokens are compared
    return model


@pytest.mark.parametrize("make", [tiny_llama, tiny_gpt2], ids=["llama", "gpt2"])
def test_onnx_greedy_tokens_equal_pytorch_for_32_tokens_and_4_prompts(make, tmp_path: Path) -> None:
    model = _without_eos(make())
    report = export_lm(model, tmp_path / "m.onnx", prompts=PROMPTS)
    assert report["greedy_identical"] and report["greedy_prompts"] == 4 and report["greedy_compared"] == 4 * 32
    assert report["max_abs_diff"] < 1e-4 and report["top1_agreement"] == 1.0
    decoder = Decoder(ort_decoder_session(tmp_path / "m.onnx"))  # independently of the parity code
    for prompt in PROMPTS:
        ref = _torch_greedy(model, prompt, 32)
        got = decoder.generate([prompt], max_new_tokens=32)[0]
        assert got == ref and len(ref) == 32 and len(set(ref)) > 3  # varied text, not one repeated token


def test_graph_names_and_dynamic_axes(tmp_path: Path) -> None:
    path = export_lm_onnx(tiny_llama(), tmp_path / "m.onnx", fused=False)  # the traced graph takes position_ids
    fused = [i.name for i in ort_decoder_session(export_lm_onnx(tiny_llama(), tmp_path / "f.onnx")).get_inputs()]
    assert fused[:3] == ["input_ids", "attention_mask", "past_key_values.0.key"]  # lm_fuse: GQA's layout
    session = ort_decoder_session(path)
    inputs = {i.name: i.shape for i in session.get_inputs()}
    outputs = {o.name: o.shape for o in session.get_outputs()}
    assert list(inputs)[:3] == ["input_ids", "attention_mask", "position_ids"]
    assert inputs["input_ids"] == ["batch", "sequence"] and inputs["attention_mask"] == ["batch", "total_sequence"]
    assert inputs["past_key_values.1.value"] == ["batch", 2, "past_sequence", 16]
    assert outputs["logits"] == ["batch", "sequence", VOCAB]
    assert outputs["present.0.key"] == ["batch", 2, "total_sequence", 16]
    assert len(inputs) == 3 + 2 * 2 and len(outputs) == 1 + 2 * 2


def test_padded_batch_generates_what_each_prompt_generates_alone(tmp_path: Path) -> None:
    decoder = Decoder(ort_decoder_session(export_lm_onnx(tiny_llama(), tmp_path / "m.onnx")))
    batch = decoder.generate(PROMPTS, max_new_tokens=16)
    alone = [decoder.generate([p], max_new_tokens=16)[0] for p in PROMPTS]
    assert batch == alone


def test_layers_that_differ_export_and_pass_parity(tmp_path: Path) -> None:
    model = tiny_llama()
    make_layers_differ_(model)
    report = export_lm(model, tmp_path / "m.onnx", prompts=PROMPTS)
    assert report["greedy_identical"] and report["max_abs_diff"] < 1e-4
    shapes = {i.name: i.shape for i in ort_decoder_session(tmp_path / "m.onnx").get_inputs()}
    assert shapes["past_key_values.0.key"][1] == 1 and shapes["past_key_values.1.key"][1] == 2


def test_fewer_layers_gpt2_exports(tmp_path: Path) -> None:
    model = tiny_gpt2(layers=3)
    del model.transformer.h[1]  # depth pruning
    report = export_lm(model, tmp_path / "m.onnx", prompts=PROMPTS[:2])
    assert report["greedy_identical"]
    assert len([i for i in ort_decoder_session(tmp_path / "m.onnx").get_inputs() if "past" in i.name]) == 4


@pytest.mark.parametrize("kind", ["qwen2", "qwen3", "mistral"])
def test_other_llama_family_models_export(kind: str, tmp_path: Path) -> None:
    import transformers

    torch.manual_seed(0)
    common = dict(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  intermediate_size=96, max_position_embeddings=128, initializer_range=0.15)  # fmt: skip
    if kind == "qwen2":
        model = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**common))  # q/k/v biases
    elif kind == "qwen3":
        model = transformers.Qwen3ForCausalLM(transformers.Qwen3Config(**common, head_dim=16))  # q/k norms
    else:
        model = transformers.MistralForCausalLM(transformers.MistralConfig(**common, sliding_window=16))
    report = export_lm(model.eval(), tmp_path / "m.onnx", prompts=PROMPTS[:2], config=LMExportConfig(greedy_tokens=24))
    assert report["greedy_identical"] and report["max_abs_diff"] < 1e-4  # windows of 64 > the sliding window


def test_external_data_layout(tmp_path: Path) -> None:
    model = tiny_llama()
    report = export_lm(model, tmp_path / "m.onnx", config=LMExportConfig(external_data=True, greedy_tokens=8))
    assert (tmp_path / "m.onnx.data").is_file() and report["greedy_identical"]
    assert (tmp_path / "m.onnx").stat().st_size < (tmp_path / "m.onnx.data").stat().st_size / 5


def test_parity_catches_a_graph_of_other_weights(tmp_path: Path) -> None:
    path = export_lm_onnx(tiny_llama(seed=0), tmp_path / "m.onnx")
    other = tiny_llama(seed=1)
    report = lm_parity(other, path, prompts=PROMPTS[:1])
    with pytest.raises(ParityError, match="logits differ"):
        check_lm_parity(report, LMExportConfig())
    lenient = LMExportConfig(max_abs_diff=1e9, min_top1_agreement=0.0)
    with pytest.raises(ParityError, match=r"greedy generation differs.*prompt 0: greedy token 0"):
        check_lm_parity(report, lenient)


def test_failed_parity_removes_the_file(tmp_path: Path) -> None:
    with pytest.raises(ParityError, match="tolerance 1e-12"):
        export_lm(tiny_llama(), tmp_path / "m.onnx", config=LMExportConfig(max_abs_diff=1e-12, greedy_tokens=4))
    assert not (tmp_path / "m.onnx").exists()


def test_unsupported_models_are_named(tmp_path: Path) -> None:
    import transformers

    cfg = transformers.BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=2)
    bert = transformers.BertForMaskedLM(cfg)
    with pytest.raises(UnsupportedModelError, match=r"supports causal LMs of type llama.*got 'bert'"):
        export_lm_onnx(bert, tmp_path / "m.onnx")
    with pytest.raises(UnsupportedModelError, match="fp32"):
        export_lm_onnx(tiny_llama().to(torch.bfloat16), tmp_path / "m.onnx")


def test_decode_logits_match_full_forward_at_every_position(tmp_path: Path) -> None:
    model = tiny_gpt2()
    path = export_lm_onnx(model, tmp_path / "m.onnx")
    windows = torch.randint(0, VOCAB, (2, 20), generator=torch.Generator().manual_seed(3))
    report = lm_parity(model, path, windows=windows, prompts=PROMPTS[:1], config=LMExportConfig(greedy_tokens=4))
    assert report["window_length"] == 20 and report["max_abs_diff"] < 1e-4
    assert np.isclose(report["top1_agreement"], 1.0)
