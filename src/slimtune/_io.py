"""Atomic file writes (with the user's umask) and output-folder safety (see ``_outputs``)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from slimtune._outputs import check_out_dir, prepare_out_dir, record_outputs, remove_outputs, undo_on_failure

__all__ = [
    "atomic_path",
    "check_out_dir",
    "path_bytes",
    "prepare_out_dir",
    "record_outputs",
    "remove_outputs",
    "undo_on_failure",
]


def _umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux: /proc)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


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
        # mkstemp makes 0600 (and some writers, e.g. safetensors, replace the file with their own 0600 one):
        # the output gets the mode any new file of the user's gets
        os.chmod(tmp_path, 0o666 & ~_umask())
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


def path_bytes(path: str | os.PathLike[str]) -> int:
    """Bytes on disk of a file, or of every file below a folder."""
    p = Path(path)
    if p.is_file():
        side = p.with_name(f"{p.name}.data")  # an ONNX model's external weights
        return p.stat().st_size + (side.stat().st_size if p.suffix == ".onnx" and side.is_file() else 0)
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
