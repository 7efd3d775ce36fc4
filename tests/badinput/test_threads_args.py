"""``--threads`` on every command that trains or measures: anything but a whole number >= 1 (or auto) is one line."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "r.yaml", "--out", "o", "--threads", "-1"],
        ["run", "r.yaml", "--out", "o", "--threads", "0"],
        ["demo", "--out", "o", "--threads", "two"],
        ["stage", "train", "--model", "mlp", "--data", "digits", "--out", "o", "--threads", "-1"],
        ["search", "--model", "mlp", "--data", "digits", "--out", "o", "--threads", "1.5"],
        ["predict", "bundle", "x.npy", "--threads", "0"],
        ["bench", "bundle", "--threads", "2", "-1"],
    ],
)
def test_bad_threads_is_one_line(argv: list[str], tmp_path: Path, cli, one_line_error) -> None:
    res = cli(*argv, cwd=tmp_path)
    one_line_error(res, "--threads must be a whole number >= 1")
    assert not (tmp_path / "o").exists()  # refused before anything ran
