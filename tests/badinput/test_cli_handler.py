"""The CLI's top-level handler: every SlimtuneError subclass, raised from any command, ends as exit 2 and ONE
``slimtune: error:`` line (multi-line messages folded), never a traceback."""

from __future__ import annotations

import argparse

import pytest

import slimtune.errors as errors
from slimtune.cli import main as cli_main


def _all_subclasses(cls: type) -> list[type]:
    out = [cls]
    for sub in cls.__subclasses__():
        out += [c for c in _all_subclasses(sub) if c not in out]
    return out


ERRORS = _all_subclasses(errors.SlimtuneError)


def test_every_error_class_of_errors_py_is_covered() -> None:
    declared = {v for v in vars(errors).values() if isinstance(v, type) and issubclass(v, errors.SlimtuneError)}
    assert declared <= set(ERRORS) and len(ERRORS) >= 10


@pytest.mark.parametrize("error", ERRORS, ids=lambda c: c.__name__)
def test_every_slimtune_error_is_exit_2_and_one_line(
    error: type, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def boom(args: argparse.Namespace) -> int:
        raise error("first part of the problem\n  second line; the fix")

    monkeypatch.setattr(cli_main, "_cmd_env", boom)
    code = cli_main.main(["env"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    assert err.strip().splitlines() == ["slimtune: error: first part of the problem second line; the fix"]
