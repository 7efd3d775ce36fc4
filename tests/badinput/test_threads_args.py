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


@pytest.mark.parametrize("command", ["predict", "bench"])
def test_threads_auto_works_on_predict_and_bench(command: str, tmp_path: Path, cli) -> None:
    """``--threads auto`` is offered by every command, the ONNX Runtime ones included (was a ValueError traceback)."""
    from slimtune.export.bundle import export_bundle
    from slimtune.testing.tiny import tiny

    model, data = tiny("mlp")
    bundle = export_bundle(model, tmp_path / "b", data=data)
    extra = [str(bundle / "examples.npy")] if command == "predict" else ["--batch-sizes", "1", "--seconds", "0.05"]
    res = cli(command, str(bundle), *extra, "--threads", "auto", cwd=tmp_path)
    assert res.code == 0 and "Traceback" not in res.err, res.err
