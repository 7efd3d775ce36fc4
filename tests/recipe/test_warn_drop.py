"""Accuracy-drop warnings: a stage that loses more than ``warn_drop`` points against the stage before it says
so in the log, on the CLI, and in report.json/.md/.html."""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path

import pytest
import yaml

from slimtune.errors import ConfigError
from slimtune.evaluate import Report, StageRow
from slimtune.evaluate.report_warnings import accuracy_drop_warning, check_accuracy_drop
from slimtune.recipe import parse_recipe

STAGES = [
    {"stage": "train", "label": "teacher", "train": {"epochs": 8, "lr": 0.003, "seed": 0}},
    # a 4-unit student trained for one epoch at a tiny learning rate: far below its teacher, on purpose
    {"stage": "distill", "label": "student", "student": {"name": "mlp", "options": {"hidden": [4]}},
     "train": {"epochs": 1, "lr": 1e-5, "seed": 0}},
]  # fmt: skip
RECIPE = {"data": {"name": "digits", "limit": 300}, "model": {"name": "mlp", "options": {"hidden": [64]}}}


def _row(name: str, acc: float) -> StageRow:
    return StageRow(name=name, artifact=None, metrics={"accuracy": acc}, params=1, nonzero_params=1,
                    bytes_on_disk=1, macs=1, latency_ms={})  # fmt: skip


def test_drop_beyond_the_limit_warns_and_within_it_does_not() -> None:
    teacher, student = _row("teacher", 0.9722), _row("student", 0.6072)
    message = accuracy_drop_warning(student, teacher, limit=2.0)
    assert message is not None and "lost 36.50 points" in message and "'teacher'" in message
    assert accuracy_drop_warning(_row("int8", 0.962), teacher, limit=2.0) is None  # 1.02 pt: fine
    assert accuracy_drop_warning(student, teacher, limit=None) is None  # switched off
    assert accuracy_drop_warning(student, None, limit=2.0) is None  # the first stage has nothing to lose
    assert accuracy_drop_warning(_row("better", 0.99), teacher, limit=0.0) is None


def test_report_shows_warnings_in_every_format(tmp_path: Path) -> None:
    report = Report(rows=[_row("teacher", 0.97)])
    student = _row("student", 0.6)
    check_accuracy_drop(student, report.rows[-1], limit=2.0)
    report.add(student)
    report.write(tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "⚠ WARNING:** stage 'student' lost 37.00 points" in md
    assert md.index("WARNING") < md.index("| Stage |")  # above the table, not buried under it
    assert '<p class="warning">' in (tmp_path / "report.html").read_text()
    again = Report.load(tmp_path)
    assert again.warnings() == report.warnings() and len(report.warnings()) == 1


def test_warn_drop_is_configurable_top_level_and_per_stage() -> None:
    assert parse_recipe({**RECIPE, "stages": STAGES}).warn_drop == 2.0  # the default
    recipe = parse_recipe({**RECIPE, "warn_drop": 5, "stages": [STAGES[0], {**STAGES[1], "warn_drop": 40}]})
    assert recipe.warn_drop == 5.0 and recipe.stages[1].warn_drop == 40.0 and recipe.stages[0].warn_drop is None
    assert parse_recipe({**RECIPE, "warn_drop": None, "stages": STAGES}).warn_drop is None
    off = parse_recipe({**RECIPE, "stages": [STAGES[0], {**STAGES[1], "warn_drop": None}]})
    assert off.stages[1].warn_drop == math.inf
    for bad in (-1, "lots", float("nan"), True):
        with pytest.raises(ConfigError, match="warn_drop must be a number of points >= 0"):
            parse_recipe({**RECIPE, "warn_drop": bad, "stages": STAGES})
    with pytest.raises(ConfigError, match=r"stages\[2\] \(distill\): warn_drop"):
        parse_recipe({**RECIPE, "stages": [STAGES[0], {**STAGES[1], "warn_drop": -3}]})


def test_a_collapsing_student_warns_in_the_log_and_the_report(tmp_path: Path) -> None:
    from slimtune.cli.main import main

    (tmp_path / "r.yaml").write_text(yaml.safe_dump({**RECIPE, "stages": STAGES}))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["run", str(tmp_path / "r.yaml"), "--out", str(tmp_path / "o"), "--threads", "1"])
    assert code == 0
    log = out.getvalue()
    assert "WARNING: stage 'student' lost" in log and "vs 'teacher'" in log
    assert "slimtune: 1 torch thread(s), --threads" in log
    saved = json.loads((tmp_path / "o" / "report.json").read_text())
    rows = {r["name"]: r for r in saved["stages"]}
    assert any("lost" in w for w in rows["student"]["extra"]["warnings"])
    assert saved["warnings"][0].startswith("stage 'student' lost")  # the top-level list: accuracy drops first
    assert not any("lost" in w for w in rows["teacher"]["extra"].get("warnings", []))  # timing ones may be there
    assert saved["env"]["threads"]["threads"] == 1 and saved["env"]["threads"]["requested"] == "--threads"
    assert "⚠ WARNING" in (tmp_path / "o" / "report.md").read_text()
    assert "- **threads**:" in (tmp_path / "o" / "report.md").read_text()
