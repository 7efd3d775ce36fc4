"""Output folders that are safe to overwrite: slimtune records what it creates in a folder
(``.slimtune-manifest.json``, written atomically and updated as outputs are added) and ``--force``
removes only what that manifest lists — never a folder that is not a slimtune output, never a file
the user put there, and never one of the run's own inputs (a recipe, data or model inside ``--out``)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from slimtune.errors import OutputError, OutputExistsError

MANIFEST = ".slimtune-manifest.json"
FORMAT = "slimtune-output"


def read_manifest(out: Path) -> dict[str, Any] | None:
    """The folder's manifest, or None when it has none (or one that is not slimtune's)."""
    path = out / MANIFEST
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("outputs"), list):
        return None
    return data


def _write_manifest(out: Path, outputs: list[str]) -> None:
    from slimtune._io import write_text

    write_text(out / MANIFEST, json.dumps({"format": FORMAT, "version": 1, "outputs": outputs}, indent=2))


def record_outputs(out: str | os.PathLike[str], *names: str) -> None:
    """Add top-level entries of ``out`` (files or folders this run creates there) to its manifest."""
    folder = Path(out)
    manifest = read_manifest(folder)
    outputs = list(manifest["outputs"]) if manifest else []
    new = [n for n in dict.fromkeys(names) if _plain_name(n) and n not in outputs]
    if new or manifest is None:
        _write_manifest(folder, outputs + new)


def _plain_name(name: Any) -> bool:
    """A single path component: a manifest entry can never point outside its folder."""
    return isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and os.sep not in name


def _resolved(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    out = []
    for p in paths:
        try:
            out.append(Path(p).expanduser().resolve())
        except (OSError, RuntimeError):
            continue
    return out


def _contains(parent: Path, child: Path) -> bool:
    return child == parent or parent in child.parents


def check_out_dir(path: str | os.PathLike[str], *, force: bool = False, resume: bool = False) -> Path:
    """Check that ``path`` may be used as an output folder, without creating or changing anything."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"output path '{out}' is a file; choose a folder path for --out")
    if not out.exists():
        return out
    entries = [p for p in out.iterdir() if p.name != MANIFEST]
    if not entries:
        return out
    if read_manifest(out) is None:
        raise OutputExistsError(
            f"output folder '{out}' is not empty and is not a slimtune output (it has no {MANIFEST}), so "
            "--force/--resume will not touch it; pick another --out, e.g. a new subfolder"
        )
    if not (force or resume):
        raise OutputExistsError(
            f"output folder '{out}' already exists and is not empty; pass --force to overwrite "
            "or --resume to continue it"
        )
    return out


def check_inputs_clear(out: Path, names: Iterable[str], inputs: Iterable[Any]) -> None:
    """Refuse a run whose outputs (top-level ``names`` of ``out``) would be written over one of its inputs."""
    targets = [(out / n).resolve() for n in names]
    for inp in _resolved(inputs):
        for target in targets:
            if _contains(target, inp):
                raise OutputExistsError(
                    f"input '{inp}' lies where this run writes '{target.name}' in '{out}'; "
                    "move it or pick another --out"
                )


def prepare_out_dir(
    path: str | os.PathLike[str], *, force: bool = False, resume: bool = False, inputs: Iterable[Any] = ()
) -> Path:
    """Create ``path`` and its manifest. A non-empty folder must be a slimtune output (it has a manifest)
    and needs ``force`` (its listed outputs are removed, inputs kept) or ``resume`` (kept as it is)."""
    inputs = list(inputs)
    out = check_out_dir(path, force=force, resume=resume)
    manifest = read_manifest(out) if out.exists() else None
    try:
        if manifest is not None and force and not resume:
            remove_outputs(out, keep=inputs)
        out.mkdir(parents=True, exist_ok=True)
        record_outputs(out)
    except PermissionError as exc:
        raise OutputError(
            f"cannot write to output folder '{out}' ({exc.strerror}); pick a folder you can write to with --out"
        ) from None
    return out


def remove_outputs(out: Path, *, keep: Iterable[Any] = ()) -> list[str]:
    """Remove what ``out``'s manifest lists, except inputs (and the folders that hold them); the manifest
    is left listing only what was kept. Returns the names removed."""
    manifest = read_manifest(out)
    if manifest is None:
        return []
    protected = _resolved(keep)
    removed, kept = [], []
    for name in manifest["outputs"]:
        if not _plain_name(name):
            continue
        target = out / name
        if not (target.exists() or target.is_symlink()):
            continue
        if _remove(target, protected):
            removed.append(name)
        else:
            kept.append(name)
    _write_manifest(out, kept)
    return removed


def _remove(target: Path, protected: list[Path]) -> bool:
    """Remove ``target`` unless it is, holds or lies inside a protected path; True when all of it went."""
    if target.is_symlink():
        target.unlink()
        return True
    real = target.resolve()
    if any(_contains(p, real) for p in protected):  # an input, or inside one
        return False
    holds = [p for p in protected if real in p.parents]
    if not holds:
        shutil.rmtree(target) if target.is_dir() else target.unlink()
        return True
    for child in list(target.iterdir()):  # a folder that holds an input: keep the input, remove the rest
        _remove(child, protected)
    return False
