"""Bad inputs to `slimtune generate` and `slimtune bench` on LM bundles: one line, exit 2."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from slimtune.export.lm_bundle import export_lm_bundle
from slimtune.export.lm_onnx import LMExportConfig
from slimtune.testing.tiny_lm import byte_tokenizer, tiny_gpt2


@pytest.fixture(scope="module")
def lm_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("lm") / "bundle"
    config = LMExportConfig(greedy_tokens=4, prompts=1, windows=1, window_length=8)
    return export_lm_bundle(tiny_gpt2(context=64), byte_tokenizer(), out, config=config)


@pytest.fixture
def classifier_bundle(tmp_path: Path) -> Path:
    folder = tmp_path / "clf"
    folder.mkdir()
    manifest = {"format": "slimtune-bundle", "format_version": 1, "input": {"kind": "image", "shape": [1, 8, 8]},
                "output": {"labels": ["neg", "pos"]}, "files": {"model": "model.onnx"}}  # fmt: skip
    (folder / "bundle.json").write_text(json.dumps(manifest))
    return folder


def test_generate_missing_bundle(cli: Callable, one_line_error: Callable, tmp_path: Path) -> None:
    one_line_error(cli("generate", str(tmp_path / "nope"), "hi"), "bundle not found", "nope")


def test_generate_on_a_classifier_bundle(cli: Callable, one_line_error: Callable, classifier_bundle: Path) -> None:
    one_line_error(cli("generate", str(classifier_bundle), "hi"), "not a language model", "slimtune predict")


def test_generate_prompt_longer_than_context(cli: Callable, one_line_error: Callable, lm_bundle: Path) -> None:
    one_line_error(cli("generate", str(lm_bundle), "x" * 100), "100 tokens", "context of 64", "shorten the prompt")


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--temperature", "-1"], ["temperature must be >= 0"]),
        (["--top-p", "1.5"], ["top_p must be in (0, 1]"]),
        (["--max-new-tokens", "0"], ["max_new_tokens must be >= 1"]),
        (["--chat"], ["no chat template"]),
    ],
)
def test_generate_bad_options(cli: Callable, one_line_error: Callable, lm_bundle: Path, args, needles) -> None:
    one_line_error(cli("generate", str(lm_bundle), "hi", *args), *needles)


def test_bench_lm_bundle_prompt_too_long(cli: Callable, one_line_error: Callable, lm_bundle: Path) -> None:
    one_line_error(cli("bench", str(lm_bundle), "--prompt-tokens", "60", "--new-tokens", "8"), "context of 64")


def test_predict_on_an_lm_bundle(cli: Callable, one_line_error: Callable, lm_bundle: Path) -> None:
    one_line_error(cli("predict", str(lm_bundle), "--text", "hi"), "language model", "slimtune generate")
