"""Shared fixtures of the bad-input matrix: run the CLI in-process and judge its error output.

Every bad input must end with exit code 2 and ONE line that names the problem (``slimtune: error: ...``),
never a Python traceback. Test files in this folder (one per area: recipes, data, models, bundles, CLI
arguments) parametrise their cases over these fixtures."""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    def error_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if "error:" in line]


def _run(*argv: str, cwd: Path | None = None) -> CliResult:
    from slimtune.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    old = Path.cwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(argv))
            except SystemExit as exc:  # argparse errors
                code = int(exc.code) if isinstance(exc.code, int) else 2
    finally:
        os.chdir(old)
    return CliResult(code, out.getvalue(), err.getvalue())


@pytest.fixture
def cli() -> Callable[..., CliResult]:
    """``cli("run", "x.yaml", cwd=tmp_path)`` → CliResult (exit code, stdout, stderr)."""
    return _run


def _assert_one_line_error(res: CliResult, *needles: str) -> None:
    assert "Traceback" not in res.err, res.err
    assert res.code == 2, (res.code, res.err)
    lines = res.error_lines()
    assert len(lines) == 1, res.err
    assert len(lines[0]) < 600, lines[0]
    for needle in needles:
        assert needle.lower() in lines[0].lower(), (needle, lines[0])


@pytest.fixture
def one_line_error() -> Callable[..., None]:
    """``one_line_error(result, "needle", ...)``: exit 2, exactly one ``error:`` line containing every needle
    (case-insensitive), no traceback."""
    return _assert_one_line_error
