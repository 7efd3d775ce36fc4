"""The recipe ``quantize`` stage with an LM method (rtn|hqq|gptq|awq): options validated up front, the model
quantized in place from the train windows, and a checked MatMulNBits KV-cache ONNX written."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from slimtune.errors import ConfigError
from slimtune.models.lm import tiny_gpt2, tiny_llama
from slimtune.quantize.weight_only import GPTQConfig, quantized_layers
from slimtune.recipe.stages import STAGES, Context
from slimtune.testing.tiny_lm import markov_lm_data

EXPORT = {"greedy_tokens": 8, "prompts": 2, "windows": 2, "window_length": 16}


def test_quantize_stage_runs_gptq_on_an_lm(tmp_path: Path) -> None:
    stage = STAGES.get("quantize")
    cfg = stage.parse({"method": "gptq", "bits": 4, "group_size": 32, "samples": 8, "export": EXPORT}, where="s")
    assert isinstance(cfg.config, GPTQConfig) and cfg.config.samples == 8
    ctx = Context(data=markov_lm_data(vocab=32, length=16, train=16, val=4, test=4), model=tiny_llama())
    result = stage.run(ctx, cfg, tmp_path)
    assert len(quantized_layers(ctx.model)) == 14
    graph = onnx.load(str(result.artifact)).graph
    assert sum(n.op_type == "MatMulNBits" for n in graph.node) == 8  # 14 Linears; q|k|v and gate|up fused
    assert result.extra["quantization"]["method"] == "gptq"
    assert result.extra["lm_parity"]["greedy_identical"] and result.extra["lm_parity"]["precision"] == "int4"
    assert (tmp_path / "model").exists()


def test_quantize_stage_rtn_on_gpt2(tmp_path: Path) -> None:
    stage = STAGES.get("quantize")
    cfg = stage.parse({"method": "rtn", "bits": 8, "group_size": -1, "export": EXPORT}, where="s")
    ctx = Context(data=markov_lm_data(vocab=32, length=16, train=4, val=4, test=4), model=tiny_gpt2())
    result = stage.run(ctx, cfg, tmp_path)
    assert result.extra["lm_parity"]["precision"] == "int8"


def test_lm_quantize_options_are_checked_before_anything_runs(digits) -> None:  # type: ignore[no-untyped-def]
    stage = STAGES.get("quantize")
    with pytest.raises(ConfigError, match="bits must be one of 2, 3, 4, 8"):
        stage.parse({"method": "awq", "bits": 5}, where="stages[1]")
    with pytest.raises(ConfigError, match="unknown key 'group'"):
        stage.parse({"method": "hqq", "group": 32}, where="stages[1]")
    with pytest.raises(ConfigError, match=r"accuracy_level must be 0\.\.4"):
        stage.parse({"method": "rtn", "export": {"accuracy_level": 7}}, where="stages[1]")
    cfg = stage.parse({"method": "rtn"}, where="s")
    with pytest.raises(ConfigError, match="is for causal LMs"):
        stage.run(Context(data=digits, model=tiny_llama()), cfg, Path("unused"))


def test_padded_windows_are_left_out_of_calibration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import slimtune.quantize.weight_only as wo

    data = markov_lm_data(vocab=32, length=16, train=16, val=4, test=4)
    data.train.y[:8, -3:] = -100  # the first 8 windows end in padding
    seen = {}
    real = wo.quantize_lm_

    def spy(model, config, *, calibration=None):  # type: ignore[no-untyped-def]
        seen["ids"] = calibration
        real(model, config, calibration=calibration)

    monkeypatch.setattr(wo, "quantize_lm_", spy)
    stage = STAGES.get("quantize")
    cfg = stage.parse({"method": "awq", "group_size": 32, "samples": 8, "grid": 2, "export": EXPORT}, where="s")
    stage.run(Context(data=data, model=tiny_llama()), cfg, tmp_path)
    assert seen["ids"].equal(data.train.x[8:16])
