"""Bad CLI arguments: exit 2 and one line naming the problem."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["run", "no-such-recipe.yaml", "--out", "o"], "not found"),
        (["run"], "recipe"),
        (["no-such-command"], "invalid choice"),
    ],
)
def test_bad_cli_arguments(argv: list[str], needle: str, tmp_path: Path, cli, one_line_error) -> None:
    one_line_error(cli(*argv, cwd=tmp_path), needle)


@pytest.mark.parametrize("k", ["0", "-3"])
def test_predict_top_k_below_one_is_refused(k: str, tmp_path: Path, cli, one_line_error) -> None:
    from slimtune.export.bundle import export_bundle
    from slimtune.testing.tiny import tiny

    model, data = tiny("mlp")
    bundle = export_bundle(model, tmp_path / "b", data=data)
    one_line_error(cli("predict", str(bundle), str(bundle / "examples.npy"), "--top-k", k, cwd=tmp_path), "--top-k")
    good = cli("predict", str(bundle), str(bundle / "examples.npy"), "--top-k", "99", cwd=tmp_path)
    assert good.code == 0  # more than there are labels: all of them
