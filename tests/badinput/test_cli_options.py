"""Bad options of ``stage``/``search``/``run``: exit 2, one line naming the problem, no folder left behind;
and a closed output pipe (``slimtune ... --json | head``) ends quietly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

STAGE = ["stage", "train", "--model", "mlp", "--option", "hidden=[8]", "--data", "digits"]
SEARCH = ["search", "--model", "mlp", "--data", "digits"]

CASES: list[tuple[str, list[str], tuple[str, ...]]] = [
    ("stage-limit-zero", [*STAGE, "--limit", "0"], ("--limit", "positive")),
    ("stage-limit-negative", [*STAGE, "--limit", "-5"], ("--limit", "positive")),
    ("stage-limit-word", [*STAGE, "--limit", "all"], ("--limit", "whole number")),
    ("search-limit-zero", [*SEARCH, "--limit", "0"], ("--limit", "positive")),
    ("stage-lr-inf", [*STAGE, "--set", "train.lr=inf"], ("train.lr", "finite")),
    ("stage-lr-nan", [*STAGE, "--set", "train.lr=.nan"], ("train.lr", "finite")),
    ("stage-epochs-string", [*STAGE, "--set", "train.epochs='3'"], ("train.epochs", "integer")),
    ("stage-train-as-number", [*STAGE, "--set", "train=3"], ("stages[1] (train).train", "mapping")),
    ("stage-start-lr-nan", [*STAGE, "--train-epochs", "1", "--lr", "nan"], ("lr", "finite")),
    ("stage-recovery-typo", ["stage", "prune", *STAGE[2:], "--set", "recovry={epochs: 1}"],
     ("did you mean 'recovery'",)),
    ("stage-model-option-typo", ["stage", "train", "--model", "mlp", "--option", "hiden=[8]", "--data", "digits"],
     ("model.options", "did you mean 'hidden'")),
    ("stage-method-as-list", ["stage", "prune", *STAGE[2:], "--set", "method=[magnitude]"], ("method name",)),
    ("stage-set-duplicate-key", ["stage", "distill", *STAGE[2:], "--set", "kd={alpha: 0.1, alpha: 0.9}"],
     ("--set", "duplicate key 'alpha'")),
    ("search-lr-nan", [*SEARCH, "--lr", "nan"], ("lr", "finite")),
    ("search-lr-inf", [*SEARCH, "--lr", "inf"], ("lr", "finite")),
    ("search-negative-train-epochs", [*SEARCH, "--train-epochs", "-1"], ("epochs must be >= 0",)),
    ("search-drop-nan", [*SEARCH, "--max-accuracy-drop", "nan"], ("max_accuracy_drop", "finite")),
]  # fmt: skip


@pytest.mark.parametrize(("argv", "needles"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_option_is_one_line_and_leaves_no_folder(
    argv: list[str], needles: tuple[str, ...], tmp_path: Path, cli, one_line_error
) -> None:
    one_line_error(cli(*argv, "--out", "out", cwd=tmp_path), *needles)
    assert not (tmp_path / "out").exists()


def test_out_that_is_a_file(tmp_path: Path, cli, one_line_error) -> None:
    (tmp_path / "out").write_text("mine")
    one_line_error(cli(*STAGE, "--out", "out", cwd=tmp_path), "is a file")
    assert (tmp_path / "out").read_text() == "mine"


@pytest.mark.parametrize("command", [STAGE, SEARCH], ids=["stage", "search"])
def test_force_and_resume_together_are_refused(command: list[str], tmp_path: Path, cli, one_line_error) -> None:
    one_line_error(cli(*command, "--out", "out", "--force", "--resume", cwd=tmp_path), "--force", "--resume")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("out", ["afile/sub", "afile/sub/deeper"])
def test_out_below_a_file_is_one_line_and_keeps_the_file(out: str, tmp_path: Path, cli, one_line_error) -> None:
    (tmp_path / "afile").write_text("mine")
    one_line_error(cli(*STAGE, "--out", out, cwd=tmp_path), "'afile' is a file")
    recipe = tmp_path / "r.yaml"
    recipe.write_text("data: {name: digits}\nmodel: {name: mlp}\nstages: [{stage: train}]\n")
    one_line_error(cli("run", str(recipe), "--out", out, cwd=tmp_path), "cannot create output folder")
    assert (tmp_path / "afile").read_text() == "mine"


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_an_output_folder_that_cannot_be_created_is_one_line(tmp_path: Path) -> None:
    from slimtune._io import prepare_out_dir
    from slimtune.errors import OutputError

    with pytest.raises(OutputError, match="cannot write to output folder '/proc/slimtune-out'"):
        prepare_out_dir("/proc/slimtune-out")  # a file system where no folder can be made


@pytest.mark.parametrize("argv", [["env", "--json", "--no-torch"], ["list"]], ids=["env-json", "list"])
def test_a_closed_pipe_ends_quietly(argv: list[str]) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "slimtune", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )  # the reader is gone before slimtune writes a byte, as with `| head` on long output
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert proc.returncode == 141
