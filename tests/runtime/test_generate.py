"""LM bundles and torch-free generation: greedy text equals PyTorch's, streaming, batches, sampling, stop
strings, chat template, the context limit, and no torch import."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from slimtune.errors import ConfigError, DataError
from slimtune.export.lm_bundle import export_lm_bundle
from slimtune.runtime import LMGenerator, Predictor
from slimtune.runtime.sampling import Sampling, filtered_probs, next_tokens
from slimtune.testing.tiny_lm import byte_tokenizer, tiny_llama

CHAT = (
    "{% for m in messages %}<{{ m.role }}>{{ m.content }}\n{% endfor %}{% if add_generation_prompt %}<bot>{% endif %}"
)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = tiny_llama()
    model.config.eos_token_id = model.generation_config.eos_token_id = None  # runs are never cut short by EOS
    out = tmp_path_factory.mktemp("lm") / "bundle"
    return export_lm_bundle(model, byte_tokenizer(), out, prompts=["Hello", "The cat"], chat_template=CHAT,
                            generation={"max_new_tokens": 24}, config=None)  # fmt: skip


def test_bundle_manifest(bundle: Path) -> None:
    manifest = json.loads((bundle / "bundle.json").read_text())
    assert manifest["input"]["kind"] == "lm" and manifest["input"]["context_length"] == 256
    assert manifest["parity"]["greedy_identical"] and manifest["generation"]["max_new_tokens"] == 24
    assert manifest["chat_template"] == CHAT and (bundle / "tokenizer.json").is_file()
    assert manifest["input"]["layers"] == [{"heads": 4, "kv_heads": 2, "head_dim": 16}] * 2


def test_greedy_text_equals_pytorch_generate(bundle: Path) -> None:
    from transformers import GenerationConfig

    model, tok = tiny_llama(), byte_tokenizer()
    ids = torch.tensor([tok.encode("Hello").ids])
    gen = GenerationConfig(do_sample=False, max_new_tokens=24, pad_token_id=0, eos_token_id=None)
    with torch.no_grad():
        ref = model.generate(ids, attention_mask=torch.ones_like(ids), generation_config=gen)[0, ids.shape[1] :]
    assert LMGenerator(bundle).generate("Hello") == tok.decode(ref.tolist())  # bundle default: 24 tokens


def test_stream_joins_to_generate_and_batch_equals_single(bundle: Path) -> None:
    gen = LMGenerator(bundle, threads=1)
    prompts = ["Hello", "The cat sat on the", "x"]
    alone = [gen.generate(p, max_new_tokens=16) for p in prompts]
    pieces = list(gen.stream(prompts[1], max_new_tokens=16))
    assert len(pieces) > 1 and "".join(pieces) == alone[1]
    seen: dict[int, str] = {0: "", 1: "", 2: ""}
    batch = gen.generate(
        prompts, max_new_tokens=16, on_text=lambda row, piece: seen.__setitem__(row, seen[row] + piece)
    )
    assert batch == alone and [seen[i] for i in range(3)] == alone


def test_sampling_is_seeded(bundle: Path) -> None:
    gen = LMGenerator(bundle)
    a = gen.generate("Hello", temperature=1.0, seed=1, max_new_tokens=16)
    assert a == gen.generate("Hello", temperature=1.0, seed=1, max_new_tokens=16)
    assert a != gen.generate("Hello", temperature=1.0, seed=2, max_new_tokens=16)
    greedy = gen.generate("Hello", max_new_tokens=16)
    assert a != greedy and gen.generate("Hello", temperature=1.0, top_k=1, seed=3, max_new_tokens=16) == greedy


def test_top_k_and_top_p_cut_the_distribution() -> None:
    logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05]]))
    assert np.count_nonzero(filtered_probs(logits, Sampling(temperature=1.0, top_k=2))) == 2
    p = filtered_probs(logits, Sampling(temperature=1.0, top_p=0.7))  # 0.5 + 0.3 reach 0.7: two tokens
    np.testing.assert_allclose(p, [[0.625, 0.375, 0, 0]])
    draws = [next_tokens(logits, Sampling(temperature=1.0, top_p=0.7), np.random.default_rng(s))[0] for s in range(50)]
    assert set(draws) == {0, 1}
    with pytest.raises(ConfigError, match="top_p"):
        Sampling(top_p=0)


def test_stop_string_ends_the_text_before_it(bundle: Path) -> None:
    gen = LMGenerator(bundle)
    full = gen.generate("Hello", max_new_tokens=24)
    stop = full[6:8]
    cut = full[: full.index(stop)]
    assert gen.generate("Hello", max_new_tokens=24, stop=stop) == cut
    assert "".join(gen.stream("Hello", max_new_tokens=24, stop=[stop])) == cut


def test_eos_stops_a_row(bundle: Path) -> None:
    gen = LMGenerator(bundle)
    ids = gen.encode("Hello")
    tokens = gen.decoder.generate([ids], max_new_tokens=12)[0]
    stopped = gen.decoder.generate([ids], max_new_tokens=12, eos_ids=[tokens[4]])[0]
    assert stopped == tokens[: tokens.index(tokens[4]) + 1]


def test_chat_template_renders_the_prompt(bundle: Path) -> None:
    gen = LMGenerator(bundle)
    assert gen.render_chat("hi") == "<user>hi\n<bot>"
    assert gen.generate("hi", chat=True, max_new_tokens=8) == gen.generate("<user>hi\n<bot>", max_new_tokens=8)


def test_prompt_longer_than_context_is_one_line(bundle: Path) -> None:
    with pytest.raises(DataError, match="prompt #0 is 300 tokens, longer than the model's context of 256"):
        LMGenerator(bundle).generate("a" * 300)


def test_generation_stops_at_the_context(bundle: Path) -> None:
    gen = LMGenerator(bundle)
    gen.generate("a" * 250, max_new_tokens=50)
    assert gen.last_token_counts == [6]  # 250 + 6 = the context of 256


def test_bundle_kinds_are_not_mixed(bundle: Path, tmp_path: Path) -> None:
    classifier = tmp_path / "clf"
    classifier.mkdir()
    (classifier / "bundle.json").write_text(json.dumps({
        "format": "slimtune-bundle", "format_version": 1, "input": {"kind": "image", "shape": [1, 8, 8]},
        "output": {"labels": ["a"]}, "files": {"model": "model.onnx"},
    }))  # fmt: skip
    with pytest.raises(DataError, match="holds a image classifier, not a language model"):
        LMGenerator(classifier)
    with pytest.raises(DataError, match="holds a language model: use `slimtune generate`"):
        Predictor(bundle)


def test_generation_never_imports_torch(bundle: Path) -> None:
    code = (
        "import sys; sys.modules['torch'] = None\n"  # any 'import torch' now raises ImportError
        "from slimtune.runtime import LMGenerator\n"
        f"g = LMGenerator({str(bundle)!r})\n"
        "out = g.generate(['Hello', 'The cat'], max_new_tokens=8)\n"
        "s = ''.join(g.stream('Hello', max_new_tokens=8, temperature=0.7, top_p=0.9, seed=0))\n"
        "from slimtune.cli.main import main\n"
        f"assert main(['generate', {str(bundle)!r}, 'Hi', '--max-new-tokens', '4', '--stream']) == 0\n"
        f"assert main(['bench', {str(bundle)!r}, '--new-tokens', '4', '--prompt-tokens', '8']) == 0\n"
        "loaded = [m for m, v in sys.modules.items() if v is not None]\n"
        "assert 'torch' not in loaded and 'transformers' not in loaded, loaded\n"
        "print('OK', len(out[0]) > 0)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "OK True" in res.stdout
