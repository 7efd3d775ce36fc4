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
