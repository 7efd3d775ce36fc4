"""Atomic file writes and output-folder safety."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from slimtune.errors import OutputExistsError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only on success."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def prepare_out_dir(path: str | os.PathLike[str], *, force: bool = False, resume: bool = False) -> Path:
    """Create ``path``; refuse to reuse a non-empty one unless ``force`` or ``resume``."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"output path '{out}' is a file; choose a folder path")
    if out.exists() and any(out.iterdir()) and not (force or resume):
        raise OutputExistsError(
            f"output folder '{out}' already exists and is not empty; pass --force to overwrite "
            "or --resume to continue it"
        )
    if out.exists() and force and not resume:
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def path_bytes(path: str | os.PathLike[str]) -> int:
    """Bytes on disk of a file, or of every file below a folder."""
    p = Path(path)
    if p.is_file():
        side = p.with_name(f"{p.name}.data")  # an ONNX model's external weights
        return p.stat().st_size + (side.stat().st_size if p.suffix == ".onnx" and side.is_file() else 0)
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
