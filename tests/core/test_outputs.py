"""Output folders: ``--force`` removes only what slimtune wrote (its manifest), never the user's files or the
run's inputs; nothing is created before validation passes; files get the user's umask."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from slimtune._io import prepare_out_dir, record_outputs, remove_outputs, write_text
from slimtune._outputs import MANIFEST, record_files
from slimtune.cli.main import main
from slimtune.errors import OutputExistsError

TINY = ["--limit", "120"]


def _user_files(folder: Path) -> dict[str, str]:
    (folder / "notes.docx").write_text("my thesis")
    (folder / "photos").mkdir()
    (folder / "photos" / "cat.jpg").write_bytes(b"\xff\xd8 cat")
    (folder / "report.md").write_text("my own report")  # a name slimtune also writes
    return _snapshot(folder)


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): p.read_bytes().hex() for p in sorted(folder.rglob("*")) if p.is_file()}


def _recipe(folder: Path, data: str = "digits") -> Path:
    path = folder / "recipe.yaml"
    path.write_text(
        f"name: tiny\ndata: {{name: {data}, limit: 120}}\nmodel: {{name: mlp, options: {{hidden: [8]}}}}\n"
        "stages:\n  - {stage: train, train: {epochs: 1}}\n"
    )
    return path


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "recipe.yaml"],
        ["stage", "train", "--model", "mlp", "--data", "digits", *TINY],
        ["search", "--model", "mlp", "--data", "digits", *TINY],
        ["demo"],
    ],
    ids=["run", "stage", "search", "demo"],
)
@pytest.mark.parametrize("force", [False, True], ids=["plain", "force"])
def test_out_dot_in_a_folder_of_unrelated_files_keeps_every_file(
    argv: list[str], force: bool, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = _recipe(tmp_path)
    before = _user_files(tmp_path)
    before["recipe.yaml"] = recipe.read_bytes().hex()
    cwd = Path.cwd()
    os.chdir(tmp_path)
    try:
        code = main([*argv, "--out", ".", *(["--force"] if force else [])])
    finally:
        os.chdir(cwd)
    err = capsys.readouterr().err
    assert code == 2 and "not a slimtune output" in err and "pick another --out" in err
    assert _snapshot(tmp_path) == before  # not one file touched, nothing added
    assert not (tmp_path / MANIFEST).exists()


def test_force_replaces_a_prior_output_and_keeps_inputs_inside_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    out.mkdir()
    rng = np.random.default_rng(0)
    np.savez(out / "rows.npz", x=rng.normal(size=(120, 6)).astype(np.float32), y=np.arange(120) % 3)
    recipe = _recipe(out, data=str(out / "rows.npz"))
    assert main(["run", str(recipe), "--out", str(out)]) == 2  # the inputs make it a folder slimtune did not make
    assert "not a slimtune output" in capsys.readouterr().err
    prepare_out_dir(out / "sub")  # an empty output folder is fine: run there, then move the inputs in
    assert main(["run", str(recipe), "--out", str(out / "sub")]) == 0
    sub = out / "sub"
    for name in ("recipe.yaml", "rows.npz"):
        (out / name).rename(sub / name)
    recipe = _recipe(sub, data=str(sub / "rows.npz"))
    inputs = {n: (sub / n).read_bytes() for n in ("recipe.yaml", "rows.npz")}
    (sub / "01-train" / "notes.txt").write_text("mine")  # the user's file inside slimtune's stage folder
    (sub / "02-old" / "model").mkdir(parents=True)  # a stage of an earlier, longer recipe
    (sub / "02-old" / "model" / "w.bin").write_bytes(b"old")
    record_files(sub, "02-old")
    assert main(["run", str(recipe), "--out", str(sub), "--force"]) == 0, capsys.readouterr().err
    assert {n: (sub / n).read_bytes() for n in inputs} == inputs  # the run's own inputs survive --force
    assert not (sub / "02-old").exists() and (sub / "report.json").is_file()  # the prior output was replaced
    assert (sub / "01-train" / "notes.txt").read_text() == "mine"
    listed = json.loads((sub / MANIFEST).read_text())["outputs"]
    assert "01-train" in listed and "recipe.yaml" not in listed and "rows.npz" not in listed


def test_force_keeps_a_loaded_model_inside_the_folder_it_replaces(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    base = ["--model", "mlp", "--option", "hidden=[8]", "--data", "digits", *TINY, "--set", "train.epochs=1"]
    old = os.umask(0o022)
    try:
        assert main(["stage", "train", *base, "--out", str(out)]) == 0
    finally:
        os.umask(old)
    modes = {str(p.relative_to(out)): stat.S_IMODE(p.stat().st_mode) for p in out.rglob("*")}
    assert modes and all(m == (0o755 if (out / p).is_dir() else 0o644) for p, m in modes.items()), modes
    model = out / "01-train" / "model"
    weights = {p.name: p.read_bytes() for p in model.iterdir()}
    argv = ["stage", "train", "--load", str(model), "--data", "digits", *TINY, "--set", "train.epochs=1"]
    assert main([*argv, "--out", str(out), "--force"]) == 2  # its 01-train would be written over the input
    assert "lies where this run writes '01-train'" in capsys.readouterr().err
    argv[1] = "finetune"
    assert main([*argv, "--out", str(out), "--force"]) == 0, capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in model.iterdir()} == weights  # the --load input was kept
    assert not (out / "01-train" / "stage.json").exists()  # the rest of the old stage folder went
    assert (out / "01-finetune" / "stage.json").is_file()


def test_a_typo_in_data_leaves_no_folder_behind(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = _recipe(tmp_path, data="digitz")
    assert main(["run", str(recipe), "--out", str(tmp_path / "out")]) == 2
    assert "digitz" in capsys.readouterr().err and not (tmp_path / "out").exists()
    missing = _recipe(tmp_path, data=str(tmp_path / "nope.csv"))
    assert main(["run", str(missing), "--out", str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists()
    argv = ["search", "--model", "mlp", "--data", "digitz", "--out", str(tmp_path / "s")]
    assert main(argv) == 2 and not (tmp_path / "s").exists()


def test_a_tampered_manifest_never_reaches_outside_its_folder(tmp_path: Path) -> None:
    out = prepare_out_dir(tmp_path / "out")
    (tmp_path / "outside.txt").write_text("keep")
    (out / "mine").mkdir()
    (out / "link").symlink_to(tmp_path / "outside.txt")
    write_text(
        out / MANIFEST,
        json.dumps({"format": "slimtune-output", "version": 1,
                    "outputs": ["../outside.txt", str(tmp_path / "outside.txt"), "..", ".", "mine", "link"]}),
    )  # fmt: skip
    assert sorted(remove_outputs(out)) == ["link", "mine"]
    assert (tmp_path / "outside.txt").read_text() == "keep"  # a symlink is unlinked, never followed


def test_record_outputs_updates_the_manifest_and_force_needs_one(tmp_path: Path) -> None:
    out = prepare_out_dir(tmp_path / "out")
    record_outputs(out, "a.txt", "a.txt", "b")
    assert json.loads((out / MANIFEST).read_text())["outputs"] == ["a.txt", "b"]
    (out / "a.txt").write_text("x")
    (out / "user.txt").write_text("y")
    prepare_out_dir(out, force=True)
    assert not (out / "a.txt").exists() and (out / "user.txt").read_text() == "y"
    (out / MANIFEST).unlink()
    with pytest.raises(OutputExistsError, match="not a slimtune output"):
        prepare_out_dir(out, force=True)
    with pytest.raises(OutputExistsError, match="is a file"):
        prepare_out_dir(out / "user.txt")


def test_files_are_written_with_the_users_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        write_text(tmp_path / "a.json", "{}")
        out = prepare_out_dir(tmp_path / "out")
        os.umask(0o077)
        write_text(tmp_path / "b.json", "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((out / MANIFEST).stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "b.json").stat().st_mode) == 0o600


def test_an_unwritable_output_folder_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from slimtune import _outputs
    from slimtune.errors import OutputError

    def denied(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(_outputs, "record_outputs", denied)  # as root, chmod cannot make a folder unwritable
    with pytest.raises(OutputError, match=r"cannot write to output folder .*\(Permission denied\); pick a folder"):
        prepare_out_dir(tmp_path / "out")


def test_search_refuses_a_load_input_where_it_writes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = prepare_out_dir(tmp_path / "out")  # an earlier search's folder, whose work/ holds a model
    record_outputs(out, "work")
    (out / "work" / "m").mkdir(parents=True)
    argv = ["search", "--load", str(out / "work" / "m"), "--data", "digits", "--out", str(out)]
    assert main([*argv, "--force"]) == 2
    assert "lies where this run writes 'work'" in capsys.readouterr().err
    assert (tmp_path / "out" / "work" / "m").is_dir()


def test_search_api_with_force_never_removes_a_users_folder_of_the_same_name(tmp_path: Path, digits) -> None:
    from slimtune.models import build
    from slimtune.search import search

    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "thesis.tex").write_text("mine")
    model = build("mlp", input_shape=digits.input_shape, num_classes=digits.num_classes, hidden=[8])
    with pytest.raises(OutputExistsError, match="was not written by slimtune"):
        search(model, digits, out=tmp_path, force=True)
    assert (tmp_path / "work" / "thesis.tex").read_text() == "mine"


def test_a_finished_folder_loses_only_its_recorded_files_a_crashed_one_goes_whole(tmp_path: Path) -> None:
    out = prepare_out_dir(tmp_path / "out")
    record_outputs(out, "01-done", "02-crashed")
    (out / "01-done" / "model").mkdir(parents=True)
    (out / "01-done" / "model" / "w.bin").write_bytes(b"w")
    (out / "01-done" / "stage.json").write_text("{}")
    record_files(out, "01-done")  # the stage finished
    (out / "01-done" / "model" / "mine.txt").write_text("added later by the user")
    (out / "02-crashed" / "checkpoints").mkdir(parents=True)
    (out / "02-crashed" / "checkpoints" / "last.pt").write_bytes(b"half")
    prepare_out_dir(out, force=True)
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == [
        MANIFEST,
        "01-done",
        "01-done/model",
        "01-done/model/mine.txt",
    ]
    listed = json.loads((out / MANIFEST).read_text())
    assert listed["outputs"] == ["01-done"] and listed["files"] == {"01-done": []}
    prepare_out_dir(out, force=True)  # again: the user's file still stays
    assert (out / "01-done" / "model" / "mine.txt").is_file()
