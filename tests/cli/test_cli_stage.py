"""``slimtune stage NAME``: one recipe stage from the command line, through the same recipe code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from slimtune.cli.main import build_parser, main
from slimtune.cli.stage import parse_sets, stage_recipe
from slimtune.errors import ConfigError
from slimtune.recipe import parse_recipe


def test_sets_nest_and_keep_yaml_types() -> None:
    got = parse_sets(["train.epochs=3", "train.lr=1e-3", "ratio=0.5", "targets=[a, b]", "kd={a: 0.3}"])
    assert got == {"train": {"epochs": 3, "lr": 1e-3}, "ratio": 0.5, "targets": ["a", "b"], "kd": {"a": 0.3}}
    assert isinstance(got["train"]["epochs"], int) and parse_sets(["method=structured"]) == {"method": "structured"}


@pytest.mark.parametrize(
    ("items", "message"),
    [
        (["ratio"], r"--set 'ratio': write key=value"),
        (["=3"], r"write key=value"),
        (["train..epochs=3"], r"write key=value"),
        (["train=3", "train.epochs=2"], r"'train' was already given a value"),
        (["kd={alpha: [}"], r"the value is not valid YAML"),
    ],
)
def test_bad_sets_are_one_line(items: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        parse_sets(items)
    assert "\n" not in str(info.value)


def test_the_recipe_it_builds_is_validated_like_a_file() -> None:
    args = build_parser().parse_args(
        ["stage", "prune", "--model", "mlp", "--option", "hidden=[32]", "--data", "digits", "--train-epochs", "2",
         "--set", "method=structured", "--set", "ratio=0.5", "--out", "o"]
    )  # fmt: skip
    raw = stage_recipe(args)
    assert raw["model"] == {"name": "mlp", "options": {"hidden": [32]}}
    assert [s["stage"] for s in raw["stages"]] == ["train", "prune"] and raw["stages"][1]["ratio"] == 0.5
    assert [s.kind for s in parse_recipe(raw).stages] == ["train", "prune"]
    args.set = ["ratoi=0.5"]
    with pytest.raises(ConfigError, match="unknown key 'ratoi'"):
        parse_recipe(stage_recipe(args))


def test_stage_runs_end_to_end_and_refuses_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    argv = ["stage", "quantize", "--model", "mlp", "--option", "hidden=[32]", "--data", "digits", "--limit", "300",
            "--train-epochs", "3", "--set", "method=ort-dynamic-int8", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    assert "| quantize |" in capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    assert [s["name"] for s in report["stages"]] == ["start", "quantize"]
    assert report["stages"][1]["parity"]["argmax_agreement"] >= 0.99
    assert main(argv) == 2 and "--force" in capsys.readouterr().err  # nothing is overwritten
    assert main(["stage", "prune", "--data", "digits", "--out", str(tmp_path / "o2")]) == 2
    assert "give --model NAME" in capsys.readouterr().err
    assert main([*argv[:-1], str(tmp_path / "o3"), "--set", "stage=prune"]) == 2
    assert "do not --set stage" in capsys.readouterr().err
    assert not (tmp_path / "o3").exists()


def test_load_of_a_hugging_face_folder_is_the_hf_model(tmp_path: Path) -> None:
    """``--load`` takes a Hugging Face folder (config.json, no spec.json), as its help says: model 'hf', its path."""
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text("{}")
    argv = ["stage", "finetune", "--load", str(tmp_path / "bert"), "--data", "reviews.csv", "--out", "o"]
    raw = stage_recipe(build_parser().parse_args([*argv, "--option", "label_names=[a, b]"]))
    assert raw["model"] == {"name": "hf", "options": {"label_names": ["a", "b"], "path": str(tmp_path / "bert")}}
    (tmp_path / "bert" / "spec.json").write_text("{}")  # a saved slimtune model stays a saved model
    assert stage_recipe(build_parser().parse_args(argv))["model"] == {"load": str(tmp_path / "bert")}
    stage_help = build_parser()._subparsers._group_actions[0].choices["stage"].format_help()  # type: ignore[union-attr]
    assert "or a Hugging Face folder (config.json)" in " ".join(stage_help.split())
