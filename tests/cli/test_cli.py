from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from slimtune.recipe import builtin_recipe


def slimtune(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "slimtune", *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def test_help_does_not_import_torch() -> None:
    code = "import sys; from slimtune.cli.main import main; main(['--help'])"
    proc = subprocess.run(
        [sys.executable, "-c", code + "\nprint('torch' in sys.modules)"], capture_output=True, text=True
    )
    assert "demo" in proc.stdout and "run" in proc.stdout


def test_help_exits_without_torch_loaded() -> None:
    code = (
        "import sys\nfrom slimtune.cli.main import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\nprint('TORCH', 'torch' in sys.modules)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "TORCH False" in proc.stdout


def test_list_shows_registries() -> None:
    proc = slimtune("list")
    assert proc.returncode == 0
    for name in (
        "digits",
        "tweets-binary",
        "resnet-small",
        "transformer-small",
        "prune",
        "magnitude",
        "ort-dynamic-int8",
    ):
        assert name in proc.stdout


def test_env_reports_int8_capability() -> None:
    proc = slimtune("env", "--no-torch")
    assert proc.returncode == 0
    assert "vnni=" in proc.stdout and "int8 note" in proc.stdout and "onnxruntime" in proc.stdout


def test_typo_in_recipe_is_one_line_and_nonzero(tmp_path: Path) -> None:
    raw = yaml.safe_load(builtin_recipe("demo").read_text())
    raw["stages"][1]["sparsty"] = 0.9
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(yaml.safe_dump(raw))
    proc = slimtune("run", str(recipe), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and "unknown key 'sparsty'" in err[0] and "did you mean 'sparsity'" in err[0]
    assert not (tmp_path / "out").exists()  # nothing started


def test_missing_recipe_file(tmp_path: Path) -> None:
    proc = slimtune("run", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "o"))
    assert proc.returncode == 2 and "recipe not found" in proc.stderr


def test_run_prints_stage_table(tmp_path: Path) -> None:
    raw = yaml.safe_load(builtin_recipe("demo").read_text())
    raw["data"]["limit"] = 200
    raw["stages"] = [raw["stages"][0], raw["stages"][3]]
    raw["stages"][0]["train"]["epochs"] = 2
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(raw))
    proc = slimtune("run", str(recipe), "--out", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    assert "| teacher |" in proc.stdout and "| int8-onnx |" in proc.stdout
    again = slimtune("run", str(recipe), "--out", str(tmp_path / "out"))
    assert again.returncode == 2 and "--force" in again.stderr
