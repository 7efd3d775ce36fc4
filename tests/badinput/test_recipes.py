"""Bad recipes: exit 2, one line naming the problem (and where: the path in the recipe, the YAML line), and
no output folder left behind."""

from __future__ import annotations

from pathlib import Path

import pytest

HEAD = "data: {name: digits, limit: 100}\nmodel: {name: mlp, options: {hidden: [8]}}\n"
TRAIN = "  - stage: train\n    train: {epochs: 1}\n"


def stages(*lines: str) -> str:
    return HEAD + "stages:\n" + TRAIN + "".join(lines)


BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [{', '.join([f'*{p}'] * 10)}]\n" for p, c in zip("abcdef", "bcdefg", strict=True)
)

CASES: list[tuple[str, str | bytes, tuple[str, ...]]] = [
    # YAML itself
    ("duplicate-top-key", HEAD + "data: {name: digits}\nstages: [{stage: train}]\n", ("duplicate key 'data'", ":3:")),
    ("duplicate-nested-key", stages("  - stage: prune\n    sparsity: 0.5\n    sparsity: 0.9\n"),
     ("duplicate key 'sparsity'", "first given on line 7", ":8:5")),
    ("syntax-error-keeps-line", HEAD + "stages:\n  - {stage: train\n", ("not valid YAML", "r.yaml:")),
    ("bad-indentation", HEAD + "stages:\n  - stage: train\n   train: {epochs: 1}\n", ("not valid YAML", ":5:")),
    ("alias-bomb", BOMB + HEAD + "stages: [{stage: train}]\n", ("aliases",)),
    ("non-utf8", b"name: caf\xe9\n" + HEAD.encode() + b"stages: [{stage: train}]\n", ("not UTF-8", ":1")),
    ("empty-file", "", ("must be a mapping",)),
    ("top-level-list", "- stage: train\n", ("must be a mapping",)),
    ("unhashable-key", HEAD + "stages: [{stage: train, {a: 1}: 2}]\n", ("mapping key",)),
    # wrong container types
    ("data-as-string", "data: digits\nmodel: {name: mlp}\nstages: [{stage: train}]\n", ("data: expected a mapping",)),
    ("data-as-list", "data: [digits]\nmodel: {name: mlp}\nstages: [{stage: train}]\n", ("data: expected a mapping",)),
    ("model-as-string", "data: {name: digits}\nmodel: mlp\nstages: [{stage: train}]\n",
     ("model: expected a mapping", "{name: mlp}")),
    ("model-as-list", "data: {name: digits}\nmodel: [mlp]\nstages: [{stage: train}]\n", ("model: expected a mapping",)),
    ("model-options-as-list", "data: {name: digits}\nmodel: {name: mlp, options: [8]}\nstages: [{stage: train}]\n",
     ("model.options", "mapping")),
    ("recovery-as-string", stages("  - stage: prune\n    recovery: one epoch\n"), ("stages[2] (prune).recovery",)),
    ("recovery-as-list", stages("  - stage: prune\n    recovery: [1]\n"), ("stages[2] (prune).recovery", "mapping")),
    ("train-as-number", stages("  - stage: train\n    label: again\n    train: 3\n"), ("stages[2] (train).train",)),
    ("kd-as-string", stages("  - stage: distill\n    student: {name: mlp}\n    kd: soft\n"), ("stages[2]", "kd")),
    ("hints-as-mapping", stages("  - stage: distill\n    student: {name: mlp}\n    hints: {method: feature}\n"),
     ("hints", "list")),
    ("stages-as-mapping", HEAD + "stages: {stage: train}\n", ("'stages' must be a non-empty list",)),
    ("stages-empty", HEAD + "stages: []\n", ("'stages' must be a non-empty list",)),
    ("stage-entry-as-string", HEAD + "stages:\n  - train\n", ("stages[1]", "'stage' key")),
    ("stage-name-as-list", HEAD + "stages:\n  - stage: [train]\n", ("stages[1].stage", "got list")),
    ("stage-name-as-mapping", HEAD + "stages:\n  - stage: {train: 1}\n", ("stages[1].stage", "got dict")),
    ("method-as-list", stages("  - stage: prune\n    method: [magnitude]\n"), ("stages[2] (prune)", "method name")),
    ("method-as-mapping", stages("  - stage: prune\n    method: {structured: 1}\n"), ("stages[2] (prune)", "got dict")),
    ("lowbit-kind-as-list", stages("  - stage: lowbit\n    kind: [binary]\n"), ("stages[2] (lowbit).kind",)),
    ("name-as-list", "name: [a]\n" + HEAD + "stages: [{stage: train}]\n", ("name:", "string")),
    # non-finite and wrongly typed numbers
    ("lr-inf", HEAD + "stages:\n  - stage: train\n    train: {lr: .inf}\n",
     ("stages[1] (train).train.lr", "finite", "line 5")),
    ("lr-nan", HEAD + "stages:\n  - stage: train\n    train: {lr: .nan}\n", ("train.lr", "finite")),
    ("lr-minus-inf", HEAD + "stages:\n  - stage: train\n    train: {lr: -.inf}\n", ("train.lr", "finite")),
    ("lr-inf-as-word", HEAD + "stages:\n  - stage: train\n    train: {lr: inf}\n", ("train.lr", "finite")),
    ("lr-overflow", HEAD + "stages:\n  - stage: train\n    train: {lr: 1e400}\n", ("train.lr", "finite")),
    ("temperature-inf", stages("  - stage: distill\n    student: {name: mlp}\n    kd: {temperature: .inf}\n"),
     ("stages[2] (distill).kd.temperature", "finite")),
    ("grad-norm-nan", HEAD + "stages:\n  - stage: train\n    train: {max_grad_norm: .nan}\n", ("max_grad_norm",)),
    ("epochs-as-quoted-string", HEAD + "stages:\n  - stage: train\n    train: {epochs: '3'}\n",
     ("train.epochs", "expected an integer")),
    ("epochs-fraction", HEAD + "stages:\n  - stage: train\n    train: {epochs: 2.5}\n", ("train.epochs", "integer")),
    ("epochs-bool", HEAD + "stages:\n  - stage: train\n    train: {epochs: true}\n", ("train.epochs", "integer")),
    ("optimizer-typo", HEAD + "stages:\n  - stage: train\n    train: {optimizer: adam}\n",
     ("train.optimizer", "did you mean 'adamw'")),
    # ranges name their stage
    ("sparsity-above-one", stages("  - stage: prune\n    sparsity: 1.5\n"), ("stages[2] (prune)", "sparsity", "1.5")),
    ("negative-epochs", HEAD + "stages:\n  - stage: train\n    train: {epochs: -1}\n", ("stages[1] (train)", "epochs")),
    ("data-limit-too-small", "data: {name: digits, limit: 5}\nmodel: {name: mlp}\nstages: [{stage: train}]\n",
     ("data.limit", "line 1")),
    # unknown keys, names and options
    ("recovery-typo", stages("  - stage: prune\n    recovry: {epochs: 1}\n"),
     ("did you mean 'recovery'", "line 7, column 5")),
    ("kd-key-listed", stages("  - stage: prune\n    k: {temperature: 2}\n"), ("allowed keys", "recovery", "kd")),
    ("quantize-export-typo", stages("  - stage: quantize\n    exprt: {opset: 17}\n"), ("did you mean 'export'",)),
    ("unknown-top-key", HEAD + "stagse: [{stage: train}]\nstages: [{stage: train}]\n", ("did you mean 'stages'",)),
    ("unknown-stage", HEAD + "stages: [{stage: prnue}]\n", ("unknown stage 'prnue'", "did you mean 'prune'")),
    ("model-option-typo", "data: {name: digits}\nmodel: {name: mlp, options: {hiden: [8]}}\nstages: [{stage: train}]\n",
     ("model.options", "'hiden'", "did you mean 'hidden'")),
    ("student-option-typo", stages("  - stage: distill\n    student: {name: mlp, options: {widht: 3}}\n"),
     ("stages[2] (distill).student.options", "'widht'")),
    ("load-with-options", "data: {name: digits}\nmodel: {load: m, options: {hidden: [8]}}\nstages: [{stage: train}]\n",
     ("model.options", "load")),
    ("load-with-checkpoint", "data: {name: digits}\nmodel: {load: m, checkpoint: w.pt}\nstages: [{stage: train}]\n",
     ("model.checkpoint", "'name'")),
    ("model-option-inf", "data: {name: digits}\nmodel: {name: mlp, options: {dropout: .inf}}\nstages: [{stage: x}]\n",
     ("model.options.dropout", "finite")),
    ("student-model-typo", stages("  - stage: distill\n    student: {name: mpl}\n"), ("unknown model 'mpl'",)),
    ("label-not-a-folder-name", HEAD + "stages: [{stage: train, label: ../up}]\n", ("label", "cannot name a folder")),
    ("duplicate-labels", HEAD + "stages: [{stage: train}, {stage: train}]\n", ("labels must be unique",)),
    # data that is not there: found when loading, still before any folder is made
    ("data-name-typo", "data: {name: digitz}\nmodel: {name: mlp}\nstages: [{stage: train}]\n", ("digitz",)),
    ("data-file-missing", "data: {name: nowhere/rows.csv}\nmodel: {name: mlp}\nstages: [{stage: train}]\n",
     ("not found",)),
]  # fmt: skip


@pytest.mark.parametrize(("text", "needles"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_recipe_is_one_line_and_leaves_no_folder(
    text: str | bytes, needles: tuple[str, ...], tmp_path: Path, cli, one_line_error
) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_bytes(text if isinstance(text, bytes) else text.encode())
    one_line_error(cli("run", "r.yaml", "--out", "out", cwd=tmp_path), *needles)
    assert not (tmp_path / "out").exists()


def test_a_folder_as_recipe(tmp_path: Path, cli, one_line_error) -> None:
    (tmp_path / "recipes").mkdir()
    one_line_error(cli("run", "recipes", "--out", "out", cwd=tmp_path), "is a folder", ".yaml")
    assert not (tmp_path / "out").exists()


def test_training_that_diverges_names_its_stage_and_epoch(tmp_path: Path, cli, one_line_error) -> None:
    (tmp_path / "r.yaml").write_text(
        "data: {name: digits, limit: 120}\nmodel: {name: mlp, options: {hidden: [8]}}\n"
        "stages: [{stage: train, label: teacher, train: {epochs: 2, lr: 1.0e+30, optimizer: sgd}}]\n"
    )
    res = cli("run", "r.yaml", "--out", "out", cwd=tmp_path)
    one_line_error(res, "stage 'teacher' (train)", "loss became nan in epoch", "lower the learning rate")


def test_the_matrix_is_big_enough() -> None:
    assert len(CASES) >= 35 and len({c[0] for c in CASES}) == len(CASES)
