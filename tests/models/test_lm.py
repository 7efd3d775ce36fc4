"""Causal LMs: tiny registered models, their tokenizer, pickle-free save/load (pruned blocks included),
writing back a plain Hugging Face folder, and one-line errors for paths that hold no usable causal LM."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

from slimtune.errors import ConfigError, DataError, UnsupportedModelError
from slimtune.models import CAUSAL_LMS, is_lm, lm_tokenizer, load_lm, load_model, save_hf_folder, save_model
from slimtune.models.gguf_info import gguf_info
from slimtune.models.lm_layers import decoder_layers, layer_shapes

IDS = torch.tensor([[72, 101, 108, 108, 111, 44, 32, 119, 111, 114, 108, 100, 256, 3, 9]])


def logits(model: torch.nn.Module, ids: torch.Tensor = IDS) -> torch.Tensor:
    with torch.inference_mode():
        return model(input_ids=ids).logits


def test_registry_lists_the_family() -> None:
    assert {"tiny-llama", "tiny-gpt2", "smollm2-135m", "hf-lm"} <= set(CAUSAL_LMS.names())


def test_tiny_llama_is_gqa_with_tied_embeddings_and_a_chat_tokenizer() -> None:
    model = load_lm("tiny-llama")
    assert type(model).__name__ == "LlamaForCausalLM" and is_lm(model)
    attn = decoder_layers(model)[0].self_attn
    assert attn.q_proj.out_features == 4 * 16 and attn.k_proj.out_features == 2 * 16
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    tok = lm_tokenizer(model)
    text = "to be, or not — to be"
    assert tok.decode(tok.encode(text)) == text  # byte-level: lossless, UTF-8 included
    assert tok.chat_template and "<|im_start|>assistant" in tok.render_chat(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True
    )
    assert model.slimtune_spec["source"]["format"] == "random-init"
    assert torch.equal(logits(load_lm("tiny-llama")), logits(model))  # seeded: the same weights every time
    assert not torch.equal(logits(load_lm("tiny-llama", seed=1)), logits(model))


def test_tiny_gpt2_has_no_chat_template() -> None:
    model = load_lm("tiny-gpt2")
    assert type(model).__name__ == "GPT2LMHeadModel"
    assert lm_tokenizer(model).chat_template is None
    with pytest.raises(DataError, match="no chat template"):
        lm_tokenizer(model).render_chat([{"role": "user", "content": "hi"}])


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2"])
def test_save_and_reload_is_exact_and_pickle_free(name: str, tmp_path: Path) -> None:
    model = load_lm(name)
    save_model(model, tmp_path / "m")
    again = load_model(tmp_path / "m")
    assert type(again) is type(model)
    assert again.get_output_embeddings().weight is again.get_input_embeddings().weight  # still tied
    assert torch.equal(logits(again), logits(model))
    assert lm_tokenizer(again).to_preprocess() == lm_tokenizer(model).to_preprocess()
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["model.safetensors", "spec.json"]
    stored = sum(p.numel() for p in model.parameters())  # parameters() lists the tied embedding once
    assert (tmp_path / "m" / "model.safetensors").stat().st_size < 4 * stored + 20_000


def _prune_llama(model: torch.nn.Module) -> None:
    """Layer 0 keeps 2 query heads / 1 KV head and an FFN of 48; the last block is removed."""
    block = decoder_layers(model)[0]
    attn, mlp, hd = block.self_attn, block.mlp, 16
    with torch.no_grad():
        attn.q_proj = torch.nn.Linear(64, 2 * hd, bias=False)
        attn.k_proj = torch.nn.Linear(64, hd, bias=False)
        attn.v_proj = torch.nn.Linear(64, hd, bias=False)
        attn.o_proj = torch.nn.Linear(2 * hd, 64, bias=False)
        attn.num_key_value_groups = 2
        mlp.gate_proj, mlp.up_proj = torch.nn.Linear(64, 48, bias=False), torch.nn.Linear(64, 48, bias=False)
        mlp.down_proj = torch.nn.Linear(48, 64, bias=False)
    del decoder_layers(model)[2]


def test_pruned_llama_with_differing_blocks_reloads_exactly(tmp_path: Path) -> None:
    model = load_lm("tiny-llama", layers=3)
    _prune_llama(model)
    before = logits(model)
    save_model(model, tmp_path / "pruned")
    spec = json.loads((tmp_path / "pruned" / "spec.json").read_text())
    assert [s["heads"] for s in spec["lm_layers"]] == [2, 4]
    assert [s["ffn"] for s in spec["lm_layers"]] == [48, 128]
    assert spec["hf_config"]["num_hidden_layers"] == 2
    again = load_model(tmp_path / "pruned")
    assert layer_shapes(again) == layer_shapes(model)
    assert torch.equal(logits(again), before)
    with pytest.raises(UnsupportedModelError, match="blocks differ"):
        save_hf_folder(model, tmp_path / "hf")


def test_pruned_gpt2_blocks_reload_exactly(tmp_path: Path) -> None:
    from transformers.pytorch_utils import Conv1D

    model = load_lm("tiny-gpt2")
    block = decoder_layers(model)[1]
    block.attn.c_attn, block.attn.c_proj = Conv1D(3 * 32, 64), Conv1D(64, 32)
    block.attn.num_heads, block.attn.split_size = 2, 32
    block.mlp.c_fc, block.mlp.c_proj = Conv1D(100, 64), Conv1D(64, 100)
    before = logits(model)
    save_model(model, tmp_path / "g")
    again = load_model(tmp_path / "g")
    assert layer_shapes(again)[1] == {"heads": 2, "kv_heads": 2, "head_dim": 16, "ffn": 100}
    assert torch.equal(logits(again), before)


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2"])
def test_uniform_model_writes_a_plain_hf_folder_transformers_loads(name: str, tmp_path: Path) -> None:
    import transformers

    model = load_lm(name)
    save_hf_folder(model, tmp_path / "hf")
    plain = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", local_files_only=True)
    assert torch.allclose(logits(plain), logits(model), atol=1e-6)
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf", local_files_only=True)
    assert hf_tok("Hello", add_special_tokens=False)["input_ids"] == lm_tokenizer(model).encode("Hello")
    again = load_lm(str(tmp_path / "hf"))  # and back through slimtune's HF-folder loader
    assert again.slimtune_spec["source"]["format"] == "hf"
    assert lm_tokenizer(again).chat_template == lm_tokenizer(model).chat_template
    assert torch.allclose(logits(again), logits(model), atol=1e-6)


def test_uniformly_pruned_llama_writes_a_matching_config(tmp_path: Path) -> None:
    import transformers

    model = load_lm("tiny-llama", layers=3)
    del decoder_layers(model)[1]
    save_hf_folder(model, tmp_path / "hf")
    plain = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", local_files_only=True)
    assert plain.config.num_hidden_layers == 2
    assert torch.allclose(logits(plain), logits(model), atol=1e-6)


def test_bad_model_paths_give_one_line(tmp_path: Path) -> None:
    import transformers

    with pytest.raises(DataError, match=r"no config\.json"):
        load_lm(str(tmp_path))
    bert = tmp_path / "bert"
    config = transformers.BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37)
    config.save_pretrained(bert)
    with pytest.raises(DataError, match="holds a 'bert' model, which is not a causal LM"):
        load_lm(str(bert))
    config.architectures = ["BertForSequenceClassification"]
    config.save_pretrained(bert)
    with pytest.raises(DataError, match="not a causal LM"):
        load_lm(str(bert))
    with pytest.raises(DataError, match="not found"):
        load_lm(str(tmp_path / "missing" / "model.gguf"))
    with pytest.raises(ConfigError, match=r"unknown causal LM 'tiny-lama'.*did you mean 'tiny-llama'"):
        load_lm("tiny-lama")
    with pytest.raises(ConfigError, match="unexpected keyword"):
        load_lm("tiny-llama", widht=3)


def test_gguf_with_an_unreadable_quantization_type_gives_one_line(tmp_path: Path) -> None:
    gguf = pytest.importorskip("gguf")
    import numpy as np

    path = tmp_path / "odd.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    _, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_K]
    raw = np.zeros((4, 2 * size), dtype=np.uint8)  # 4 rows of 2 Q8_K blocks (512 values each)
    writer.add_tensor("blk.0.attn_q.weight", raw, raw_dtype=gguf.GGMLQuantizationType.Q8_K)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(DataError, match=r"attn_q\.weight' is Q8_K, a quantization type the GGUF loader cannot read"):
        load_lm(str(path))
    good = tmp_path / "good.gguf"
    writer = gguf.GGUFWriter(str(good), "llama")
    writer.add_string("tokenizer.ggml.model", "gpt2")
    writer.add_array("tokenizer.ggml.tokens", ["a", "b", "<s>"])
    weight = np.linspace(-1, 1, 8 * 64, dtype=np.float32).reshape(8, 64)
    writer.add_tensor("blk.0.attn_q.weight", gguf.quants.quantize(weight, gguf.GGMLQuantizationType.Q8_0),
                      raw_dtype=gguf.GGMLQuantizationType.Q8_0)  # fmt: skip
    writer.add_tensor("blk.0.attn_norm.weight", np.ones(64, dtype=np.float32))
    for step in (writer.write_header_to_file, writer.write_kv_data_to_file, writer.write_tensors_to_file, writer.close):
        step()
    info = gguf_info(good)
    assert info == {"architecture": "llama", "precision": "Q8_0", "tensor_types": {"F32": 1, "Q8_0": 1}}
    (tmp_path / "junk.gguf").write_bytes(b"not a gguf file at all")
    with pytest.raises(DataError, match="not a readable GGUF file"):
        load_lm(str(tmp_path / "junk.gguf"))
    (tmp_path / "folder").mkdir()
    (tmp_path / "junk.gguf").rename(tmp_path / "folder" / "junk.gguf")
    with pytest.raises(DataError, match=r"junk\.gguf' is not a readable GGUF file"):
        load_lm(str(tmp_path / "folder"))  # a folder holding one GGUF file loads that file


def test_slimtune_list_shows_causal_lms_and_corpora(capsys: pytest.CaptureFixture[str]) -> None:
    from slimtune.cli.main import main

    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "causal language models:" in out and "text corpora (causal LMs):" in out
    for name in ("tiny-llama", "tiny-gpt2", "smollm2-135m", "hf-lm", "shakespeare"):
        assert f"  {name} " in out


FAMILIES = {  # tiny configs of the decoder families transformers' Auto classes load
    "qwen2": ("Qwen2Config", {}),
    "qwen3": ("Qwen3Config", {"head_dim": 16}),
    "mistral": ("MistralConfig", {}),
    "gemma": ("GemmaConfig", {"head_dim": 16}),
    "phi": ("PhiConfig", {}),
    "phi3": ("Phi3Config", {}),  # fused qkv_proj: saved as configured (no per-block shapes)
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_hf_folders_of_each_family_load_save_and_reload(family: str, tmp_path: Path) -> None:
    import transformers

    from slimtune.models.lm_tokenizer import tiny_tokenizer

    cls, extra = FAMILIES[family]
    tok = tiny_tokenizer(chat=True)
    config = getattr(transformers, cls)(
        vocab_size=tok.vocab_size, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        eos_token_id=tok.eos_id, pad_token_id=tok.pad_id, bos_token_id=tok.eos_id, **extra,
    )  # fmt: skip
    torch.manual_seed(0)
    transformers.AutoModelForCausalLM.from_config(config).to(torch.bfloat16).save_pretrained(tmp_path / "hf")
    transformers.PreTrainedTokenizerFast(tokenizer_object=tok.tokenizer, eos_token="<|endoftext|>").save_pretrained(
        tmp_path / "hf"
    )
    model = load_lm(str(tmp_path / "hf"))
    assert model.config.model_type == family
    assert model.slimtune_spec["source"]["precision"] == "bfloat16"  # recorded; the weights are fp32 now
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    save_model(model, tmp_path / "m")
    assert torch.equal(logits(load_model(tmp_path / "m")), logits(model))


def test_cached_load_makes_once_and_replaces_stale_copies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from slimtune.models.lm_io import cached_load

    monkeypatch.setenv("SLIMTUNE_CACHE", str(tmp_path / "cache"))
    source = tmp_path / "weights.gguf"
    source.write_bytes(b"stand-in for a GGUF file")
    made: list[int] = []

    def make() -> torch.nn.Module:
        made.append(1)
        return load_lm("tiny-llama")

    first = cached_load(source, name="tiny", make=make)
    again = cached_load(source, name="tiny", make=make)
    assert len(made) == 1 and torch.equal(logits(again), logits(first))
    assert again.slimtune_spec["name"] == "tiny-llama" and lm_tokenizer(again).chat_template
    os.utime(source, ns=(10**9, 10**9))  # a reinstalled package: a new entry replaces the old one
    cached_load(source, name="tiny", make=make)
    assert len(made) == 2 and len(list((tmp_path / "cache" / "models").iterdir())) == 1
