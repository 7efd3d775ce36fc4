"""Every example recipe in recipes/ is valid and runs end to end on a tiny slice of its data."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from slimtune.errors import DataError, MissingDependencyError
from slimtune.recipe import load_recipe, parse_recipe, run_recipe
from slimtune.testing import shrink_recipe

RECIPES = sorted((Path(__file__).resolve().parents[2] / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_example_recipe_runs_on_a_slice(path: Path, tmp_path: Path) -> None:
    load_recipe(path)  # the full recipe validates as written
    raw = shrink_recipe(yaml.safe_load(path.read_text()), limit=400, max_epochs=2)
    try:
        report = run_recipe(parse_recipe(raw, source=str(path)), tmp_path / "out")
    except (DataError, MissingDependencyError) as exc:
        if "install" in str(exc):
            pytest.skip(f"dataset not installed here: {exc}")
        raise
    names = [s["label"] if "label" in s else s["stage"] for s in raw["stages"]]
    assert [r.name for r in report.rows] == names
    assert all(r.bytes_on_disk > 0 and r.macs > 0 for r in report.rows)
    assert (tmp_path / "out" / "report.html").exists()
