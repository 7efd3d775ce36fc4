"""`slimtune generate` and `slimtune bench` on an LM bundle."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest

from slimtune.cli.main import main
from slimtune.export.lm_bundle import export_lm_bundle
from slimtune.export.lm_onnx import LMExportConfig
from slimtune.runtime import LMGenerator
from slimtune.testing.tiny_lm import byte_tokenizer, tiny_llama


@pytest.fixture(scope="module")
def lm_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = tiny_llama()
    model.config.eos_token_id = model.generation_config.eos_token_id = None
    config = LMExportConfig(greedy_tokens=8, prompts=2, windows=2, window_length=16)
    return export_lm_bundle(model, byte_tokenizer(), tmp_path_factory.mktemp("lm") / "b", config=config)


def _run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(list(argv))
    return code, out.getvalue()


def test_generate_prints_the_greedy_continuation(lm_bundle: Path) -> None:
    expected = LMGenerator(lm_bundle).generate("Hello", max_new_tokens=12)
    code, out = _run("generate", str(lm_bundle), "Hello", "--max-new-tokens", "12")
    assert code == 0 and out == expected + "\n"
    code, streamed = _run("generate", str(lm_bundle), "Hello", "--max-new-tokens", "12", "--stream")
    assert code == 0 and streamed == out


def test_generate_sampling_options_reach_the_sampler(lm_bundle: Path) -> None:
    args = ["generate", str(lm_bundle), "Hello", "--max-new-tokens", "12", "--temperature", "1.0"]
    a, b = _run(*args, "--seed", "1")[1], _run(*args, "--seed", "2")[1]
    assert a == _run(*args, "--seed", "1")[1] and a != b
    assert _run(*args, "--seed", "1", "--top-k", "1")[1] == _run("generate", str(lm_bundle), "Hello",
                                                                   "--max-new-tokens", "12")[1]  # fmt: skip


def test_bench_reports_prefill_decode_and_time_to_first_token(lm_bundle: Path) -> None:
    code, out = _run("bench", str(lm_bundle), "--json", "--prompt-tokens", "16", "--new-tokens", "4", "--threads", "1")
    result = json.loads(out)
    assert code == 0 and [r["batch"] for r in result["rows"]] == [1, 8]
    for row in result["rows"]:
        assert row["prefill_tokens_per_s"] > 0 and row["decode_tokens_per_s"] > 0 and row["time_to_first_token_ms"] > 0
    code, table = _run("bench", str(lm_bundle), "--prompt-tokens", "16", "--new-tokens", "4")
    assert code == 0 and "decode (tokens/s)" in table and "first token (ms)" in table
