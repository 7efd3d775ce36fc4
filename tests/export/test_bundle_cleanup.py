"""A failed bundle export removes only what it wrote: never a file that was in the folder before."""

from __future__ import annotations

from pathlib import Path

import pytest

from slimtune.errors import DataError
from slimtune.export.bundle import export_bundle
from slimtune.testing.tiny import tiny


def test_failed_export_keeps_users_files_in_a_forced_slimtune_folder(tmp_path: Path) -> None:
    model, data = tiny("mlp")
    out = export_bundle(model, tmp_path / "bundle", data=data)  # a slimtune output folder (it has a manifest)
    (out / "notes.txt").write_text("mine")  # the user adds a file of their own
    (out / "graphs").mkdir()
    (out / "graphs" / "keep.onnx").write_bytes(b"user graph")
    with pytest.raises(DataError, match="ONNX file not found"):
        export_bundle(model, out, data=data, onnx=tmp_path / "missing.onnx", force=True)
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "graphs" / "keep.onnx").read_bytes() == b"user graph"
    # the earlier bundle's files were replaced by force: no stale half of a bundle is left to be served
    assert not (out / "bundle.json").exists() and not (out / "model.onnx").exists()


def test_failed_export_into_a_new_folder_leaves_nothing_behind(tmp_path: Path) -> None:
    model, data = tiny("mlp")
    (tmp_path / "bad.onnx").write_bytes(b"not an onnx graph")
    with pytest.raises(DataError):
        export_bundle(model, tmp_path / "new", data=data, onnx=tmp_path / "bad.onnx")
    assert not (tmp_path / "new").exists()


def test_a_graph_already_in_the_bundle_folder_is_shipped_in_place(tmp_path: Path) -> None:
    model, data = tiny("mlp")
    first = export_bundle(model, tmp_path / "b", data=data)
    graph = (first / "model.onnx").read_bytes()
    again = export_bundle(model, first, data=data, onnx=first / "model.onnx", force=True)
    assert (again / "model.onnx").read_bytes() == graph and (again / "bundle.json").is_file()
