"""The retarget stage: post-training int8 when it is faithful enough, quantization-aware fine-tuning when not."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from slimtune.errors import ConfigError
from slimtune.recipe import parse_recipe, run_recipe


def recipe(**retarget: Any) -> dict[str, Any]:
    return {
        "data": {"name": "digits", "seed": 0, "limit": 400},
        "model": {"name": "mlp", "options": {"hidden": [32]}},
        "stages": [
            {"stage": "train", "train": {"epochs": 6, "lr": 0.01, "seed": 0}},
            {"stage": "retarget", "quantize": {"method": "ort-dynamic-int8"}, **retarget},
            {"stage": "bundle"},
        ],
    }


def test_faithful_post_training_int8_is_kept(tmp_path: Path) -> None:
    report = run_recipe(parse_recipe(recipe(max_accuracy_drop=5.0)), tmp_path)
    info = report.rows[1].extra["retarget"]
    assert info["decision"].startswith("post-training int8 kept") and "val_accuracy_qat" not in info
    assert report.rows[1].precision is None or "int8" in str(report.rows[1].precision)
    assert (tmp_path / "02-retarget" / "ptq" / "model.int8.onnx").is_file()
    assert report.rows[2].metrics["accuracy"] == pytest.approx(report.rows[1].metrics["accuracy"])


def test_fine_tune_for_the_target_runs_and_the_better_model_ships(tmp_path: Path) -> None:
    qat = {"train": {"epochs": 2, "lr": 0.001, "seed": 0}}
    report = run_recipe(parse_recipe(recipe(finetune="always", qat=qat)), tmp_path)
    info = report.rows[1].extra["retarget"]
    assert {"val_accuracy_fp32", "val_accuracy_ptq", "val_accuracy_qat"} <= set(info)
    best = max(info["val_accuracy_ptq"], info["val_accuracy_qat"])
    shipped = info["val_accuracy_qat"] if info["decision"].startswith("fine-tuned") else info["val_accuracy_ptq"]
    assert shipped == best
    assert report.rows[1].parity is not None and report.rows[1].parity["argmax_agreement"] >= 0.9


def test_bad_retarget_options_are_one_clear_error() -> None:
    with pytest.raises(ConfigError, match="max_accuracy_drop must be >= 0"):
        parse_recipe(recipe(max_accuracy_drop=-1))
    with pytest.raises(ConfigError, match=r"did you mean .ort-dynamic-int8."):
        parse_recipe(recipe(quantize={"method": "ort-dynamic-int9"}))
