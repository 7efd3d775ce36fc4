"""User-file data options without Python: a recipe's ``data:`` keys and ``--data-option key=value`` on
``slimtune stage`` / ``slimtune search``; and every hint names a real function or the real option."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from slimtune.cli.main import build_parser, main
from slimtune.cli.stage import stage_recipe
from slimtune.data import load, split_arrays
from slimtune.errors import ConfigError, DataError
from slimtune.models.inputs import load_data
from slimtune.recipe import parse_recipe
from slimtune.recipe.schema import DataRef
from slimtune.train import TrainConfig, fit

SRC = Path(__file__).resolve().parents[2] / "src" / "slimtune"


@pytest.fixture
def reviews(tmp_path: Path) -> Path:
    rows = [f'{i},"{"great fun" if i % 2 else "dull film"} {i}",{"yes" if i % 2 else "no"}' for i in range(30)]
    path = tmp_path / "reviews.csv"
    path.write_text("\n".join(["id,body,verdict", *rows, "30,,yes"]) + "\n")
    return path


def test_recipe_data_keys_name_the_columns(reviews: Path) -> None:
    raw = {
        "data": {"name": str(reviews), "text_column": "body", "label_column": "verdict", "drop_empty": True,
                 "label_map": {"no": "negative", "yes": "positive"}, "limit": 20},
        "model": {"name": "transformer-small", "options": {"dim": 16}},
        "stages": [{"stage": "train"}],
    }  # fmt: skip
    recipe = parse_recipe(raw)
    data, pre = load_data(recipe.data, recipe.model)
    assert data.label_names == ["negative", "positive"] and data.input_shape == (64,)
    assert len(data.train) + len(data.val) + len(data.test) == 20 and "tokenizer" in pre
    raw["data"] = {"name": str(reviews), "text_colum": "body"}
    with pytest.raises(ConfigError, match=r"data: unknown key 'text_colum'.*did you mean 'text_column'"):
        parse_recipe(raw)


def test_data_option_flags_build_the_same_data_mapping(reviews: Path) -> None:
    argv = ["stage", "train", "--model", "transformer-small", "--data", str(reviews), "--out", "o",
            "--data-option", "text_column=body", "--data-option", "label_column=verdict",
            "--data-option", "labels=[bad, good]", "--data-option", "drop_empty=true",
            "--data-option", "label_map={0: bad}", "--data-option", "image_size=[8, 8]"]  # fmt: skip
    raw = stage_recipe(build_parser().parse_args(argv))
    assert raw["data"] == {"name": str(reviews), "text_column": "body", "label_column": "verdict",
                           "labels": ["bad", "good"], "drop_empty": True, "label_map": {0: "bad"},
                           "image_size": [8, 8]}  # fmt: skip
    ref = parse_recipe(raw).data
    assert ref.file_options()["labels"] == ["bad", "good"] and ref.image_size == [8, 8]
    for bad, message in [("name=x", "use --data instead"), ("limit=5", "use --limit instead"), ("oops", "key=value")]:
        with pytest.raises(ConfigError, match=message):
            stage_recipe(build_parser().parse_args([*argv[:8], "--data-option", bad]))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"image_size": [0, 8]}, r"data.image_size must be a positive int or \[height, width\]"),
        ({"image_size": "big"}, r"data.image_size"),
        ({"min_class_rows": 0}, r"data.min_class_rows must be >= 1"),
        ({"label_map": {"a": [1]}}, r"data.label_map: map raw labels to class names"),
        ({"drop_empty": "yes"}, r"data.drop_empty: expected true or false"),
        ({"limit": 0}, r"data.limit must be >= 10, got 0"),
    ],
)
def test_bad_data_options_are_config_errors(options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        DataRef.from_dict({"name": "x.csv", **options}, where="data")


def test_cli_limit_zero_is_refused_not_ignored(reviews: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "o"
    with pytest.raises(SystemExit) as exc:  # argparse refuses it before anything runs
        main(["stage", "train", "--model", "mlp", "--data", "digits", "--limit", "0", "--out", str(out)])
    assert exc.value.code == 2 and "must be a positive count, got 0" in capsys.readouterr().err and not out.exists()


def test_search_takes_data_options_and_checks_them_first(reviews: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "s"
    argv = ["search", "--model", "transformer-small", "--data", str(reviews), "--out", str(out)]
    assert main([*argv, "--data-option", "text_colum=body"]) == 2
    assert "unknown key 'text_colum'" in capsys.readouterr().err and not out.exists()
    assert main([*argv, "--data-option", "label_column=verdict"]) == 2  # the text column is still unnamed
    err = capsys.readouterr().err
    assert "data: {text_column: <name>}" in err and "--data-option text_column=<name>" in err


def test_missing_column_hint_names_the_recipe_key_and_the_flag(reviews: Path) -> None:
    with pytest.raises(DataError) as info:
        load(reviews)
    message = str(info.value)
    assert "available: id, body, verdict" in message and "pass text_column" not in message
    assert "data: {text_column: <name>}" in message and "--data-option text_column=<name>" in message


def test_text_hints_name_a_function_that_exists() -> None:
    stale = [str(p) for p in SRC.rglob("*.py") if re.search(r"prepare_inputs|pass (text|label)_column", p.read_text())]
    assert stale == []
    texts = split_arrays("t", [f"w{i}" for i in range(12)], torch.arange(12) % 2, label_names=["a", "b"], kind="text")
    with pytest.raises(DataError) as info:
        fit(torch.nn.Linear(1, 2), texts, config=TrainConfig(epochs=1))
    dotted = re.search(r"slimtune\.[\w.]+", str(info.value))
    assert dotted is not None
    module, _, name = dotted.group(0).rpartition(".")
    assert callable(getattr(__import__(module, fromlist=[name]), name))


def test_file_options_on_a_builtin_dataset_fail_at_validation() -> None:
    raw = {"data": {"name": "digits", "image_size": 8}, "model": {"name": "mlp"}, "stages": [{"stage": "train"}]}
    with pytest.raises(ConfigError, match=r"data: image_size only apply to your own data files, not to dataset 'digit"):
        parse_recipe(raw)
