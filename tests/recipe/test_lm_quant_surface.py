"""The LM ``quantize`` surface: ``method: smoothquant`` and ``bits_budget`` in the stage (checked up front, run,
ONNX measured), the report row's per-precision layer count, ``slimtune stage quantize --help`` listing them."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from slimtune.errors import ConfigError, DataError
from slimtune.evaluate.report_lm import lm_precision
from slimtune.evaluate.report_precision import precision_summary
from slimtune.models.lm import tiny_llama
from slimtune.quantize.smoothquant import SmoothQuantConfig
from slimtune.recipe.lm import LMMeasureConfig, measure_lm_stage
from slimtune.recipe.stages import STAGES, Context
from slimtune.testing.tiny_lm import markov_lm_data

EXPORT = {"greedy_tokens": 4, "prompts": 1, "windows": 2, "window_length": 16, "min_fast_top1_agreement": 0.5}
FAST = LMMeasureConfig(windows=2, batch_sizes=(1,), prompt_tokens=4, new_tokens=3, repeats=1)


def _ops(path: Path) -> list[str]:
    return [n.op_type for n in onnx.load(str(path)).graph.node]


def test_smoothquant_stage_writes_int8_onnx_and_a_measured_row(tmp_path: Path) -> None:
    stage = STAGES.get("quantize")
    cfg = stage.parse({"method": "smoothquant", "alpha_grid": [0.4, 0.6], "samples": 8, "search_windows": 2,
                       "export": EXPORT}, where="s")  # fmt: skip
    assert isinstance(cfg.config, SmoothQuantConfig)
    ctx = Context(data=markov_lm_data(vocab=32, length=16, train=16, val=4, test=4), model=tiny_llama(), measure=FAST)
    result = stage.run(ctx, cfg, tmp_path)
    assert "MatMulInteger" in _ops(result.onnx)
    sq = result.extra["quantization"]["smoothquant"]
    assert set(sq["search"]) == {"none", "0.4", "0.6"}
    row = measure_lm_stage("quantize", result, ctx)
    assert row.extra["runtime"] == "onnxruntime" and row.throughput["decode_batch1"] > 0
    assert precision_summary(row.precision) == "int8 ×15"  # 14 block Linears + the output head


def test_bits_budget_stage_keeps_sensitive_layers_at_8_bits(tmp_path: Path) -> None:
    stage = STAGES.get("quantize")
    cfg = stage.parse({"method": "rtn", "bits": 4, "group_size": 32, "bits_budget": 5.3, "sensitivity_windows": 2,
                       "export": {**EXPORT, "accuracy_level": 0}}, where="s")  # fmt: skip
    ctx = Context(data=markov_lm_data(vocab=32, length=16, train=8, val=4, test=4), model=tiny_llama(), measure=FAST)
    result = stage.run(ctx, cfg, tmp_path)
    plan = result.extra["quantization"]["bits_budget"]
    assert 5.0 < plan["average_bits"] <= 5.3 and plan["layers_per_bits"]["int8"] >= 1
    summary = precision_summary(lm_precision(ctx.model))
    assert f"int8 ×{plan['layers_per_bits']['int8']}" in summary and "int4" in summary
    assert result.extra["lm_parity"]["precision"] == "mixed"


@pytest.mark.parametrize(
    ("raw", "error", "message"),
    [
        ({"method": "smoothquant", "alpha": 1.5}, ConfigError, "alpha must be in"),
        ({"method": "smoothquant", "bits_budget": 4.5}, ConfigError, "bits_budget is for weight-only"),
        ({"method": "gptq", "high_bits": 8}, ConfigError, "need bits_budget"),
        ({"method": "gptq", "bits": 8, "bits_budget": 8.5}, ConfigError, "already 8"),
        ({"method": "rtn", "bits": 5}, ConfigError, "bits must be one of 2, 3, 4, 8"),
        ({"method": "smoothquant", "mode": "fast"}, ConfigError, "'fast' is not one of"),
    ],
)
def test_bad_quantize_options_are_one_line(raw: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        STAGES.get("quantize").parse(raw, where="stages[1]")


def test_a_calibration_set_smaller_than_the_samples_is_one_line(tmp_path: Path) -> None:
    stage = STAGES.get("quantize")
    cfg = stage.parse({"method": "smoothquant", "samples": 32, "export": EXPORT}, where="s")
    ctx = Context(data=markov_lm_data(vocab=32, length=16, train=8, val=4, test=4), model=tiny_llama())
    with pytest.raises(DataError, match="has 8 windows but 32 samples were requested"):
        stage.run(ctx, cfg, tmp_path)


def test_stage_quantize_help_lists_the_lm_methods(capsys: pytest.CaptureFixture[str]) -> None:
    from slimtune.cli.main import main

    with pytest.raises(SystemExit):
        main(["stage", "quantize", "--help"])
    out = capsys.readouterr().out
    assert "causal LMs: method = awq | awq-gptq | gptq | hqq | rtn | smoothquant" in out
    for key in ("bits_budget = 4.5", "alpha_grid = []", "mode = dynamic", "sensitivity_windows = 4"):
        assert key in out
    assert "--set method=smoothquant" in out


def test_the_docs_recipe_is_valid() -> None:
    import re

    import yaml

    from slimtune.recipe import parse_recipe

    doc = Path(__file__).resolve().parents[2] / "docs" / "lm-smoothquant-mixed.md"
    block = re.search(r"```yaml\n(.*?)```", doc.read_text(encoding="utf-8"), flags=re.S)
    assert block is not None
    recipe = parse_recipe(yaml.safe_load(block.group(1)))
    assert recipe.stages[0].config.method == "smoothquant"
