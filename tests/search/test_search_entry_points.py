"""The same search as a recipe stage and as ``slimtune search``; bad input is one clear line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from slimtune.cli.main import main
from slimtune.errors import ConfigError
from slimtune.recipe import parse_recipe, run_recipe
from slimtune.runtime import Predictor

SPACE = {"techniques": ["prune", "int8"], "prune_ratios": [0.5], "int8": ["dynamic"], "full_epochs": 2}


def recipe(**search: Any) -> dict[str, Any]:
    return {
        "data": {"name": "digits", "seed": 0, "limit": 600},
        "model": {"name": "mlp", "options": {"hidden": [32]}},
        "stages": [
            {"stage": "train", "train": {"epochs": 8, "lr": 0.01}},
            {"stage": "search", "max_accuracy_drop": 5.0, "objective": "size", "lr": 0.01, **SPACE, **search},
        ],
    }


def test_search_stage_ships_its_bundle_and_resumes(tmp_path: Path) -> None:
    report = run_recipe(parse_recipe(recipe()), tmp_path)
    row = report.rows[1]
    info = row.extra["search"]
    assert info["candidates"] == 3 and info["chosen"] in info["front"] and info["message"]
    bundle = tmp_path / "02-search" / "best"
    assert row.extra["bundle"] == "02-search/best" and (bundle / "report.json").is_file()  # the run's report added
    assert (tmp_path / "02-search" / "search.json").is_file() and (tmp_path / "02-search" / "search.html").is_file()
    assert row.metrics["accuracy"] > 0.5 and row.artifact.endswith(".onnx")
    assert Predictor(bundle).predict(Predictor(bundle).example_inputs(2))
    again = run_recipe(parse_recipe(recipe()), tmp_path, resume=True)  # restored from the stage folder
    assert again.rows[1].extra["search"]["chosen"] == info["chosen"]


def test_bad_search_stage_options_fail_before_anything_runs() -> None:
    with pytest.raises(ConfigError, match=r"stages\[2\] \(search\)\.objective: 'speed' is not one of"):
        parse_recipe(recipe(objective="speed"))
    with pytest.raises(ConfigError, match="max_accuracy_drop must be >= 0"):
        parse_recipe(recipe(max_accuracy_drop=-1))


def cli(tmp_path: Path, *extra: str) -> list[str]:
    return [
        "search", "--model", "mlp", "--data", "digits", "--limit", "600", "--train-epochs", "5",
        "--max-accuracy-drop", "5", "--objective", "size", "--techniques", "prune", "int8",
        "--full-epochs", "2", "--time-budget", "2m", "--out", str(tmp_path / "out"), *extra,
    ]  # fmt: skip


def test_cli_search_trains_searches_and_resumes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(cli(tmp_path)) == 0
    text = capsys.readouterr().out
    assert "candidates measured" in text and "bundle:" in text and "search.html" in text
    saved = json.loads((tmp_path / "out" / "search.json").read_text())
    assert len(saved["candidates"]) == 15 and saved["config"]["time_budget"] == "2m"
    assert (tmp_path / "out" / "best" / "bundle.json").is_file() and (tmp_path / "out" / "teacher").is_dir()
    assert main(cli(tmp_path)) == 2  # the folder holds a search: --resume or --force
    assert "already exists" in capsys.readouterr().err
    assert main(cli(tmp_path, "--resume")) == 0
    text = capsys.readouterr().out
    assert "teacher: loaded" in text and "candidates measured" not in text  # nothing ran again


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--objective", "speed"], "search.objective: 'speed' is not one of 'latency', 'size', 'macs'"),
        (["--max-accuracy-drop", "-1"], "max_accuracy_drop must be >= 0 points of accuracy, got -1.0"),
        (["--time-budget", "soon"], "time_budget must be a duration like 90s, 30m or 2h"),
        (["--load", "x"], "give --model NAME"),
    ],
)
def test_cli_bad_input_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert main(cli(tmp_path, *args)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("slimtune: error: ") and message in err and "\n" not in err
    assert not (tmp_path / "out").exists()  # nothing was trained or written
