"""Output folders that are safe to overwrite: slimtune records what it creates in a folder
(``.slimtune-manifest.json``, written atomically and updated as outputs are added) and ``--force``
removes only what that manifest lists — never a folder that is not a slimtune output, never a file
the user put there, and never one of the run's own inputs (a recipe, data or model inside ``--out``).

The manifest lists top-level ``outputs`` (files and folders slimtune created) and, for each folder whose
work finished (a stage, a search), the ``files`` it holds then. A finished folder loses only those files
(a file the user added later stays, with the folders that hold it); a folder whose work never finished
(a crash) holds only what that run was writing, and goes whole."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from slimtune.errors import ConfigError, OutputError, OutputExistsError

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


def _write_manifest(out: Path, outputs: list[str], files: dict[str, list[str]] | None = None) -> None:
    from slimtune._io import write_text

    data = {"format": FORMAT, "version": 1, "outputs": outputs, "files": files or {}}
    write_text(out / MANIFEST, json.dumps(data, indent=1))


def _files(manifest: dict[str, Any] | None) -> dict[str, list[str]]:
    files = (manifest or {}).get("files")
    if not isinstance(files, dict):
        return {}
    return {k: [f for f in v if isinstance(f, str)] for k, v in files.items() if isinstance(v, list)}


def record_outputs(out: str | os.PathLike[str], *names: str) -> None:
    """Add top-level entries of ``out`` (files or folders this run creates there) to its manifest."""
    folder = Path(out)
    manifest = read_manifest(folder)
    outputs = list(manifest["outputs"]) if manifest else []
    new = [n for n in dict.fromkeys(names) if _plain_name(n) and n not in outputs]
    if new or manifest is None:
        _write_manifest(folder, outputs + new, _files(manifest))


def record_files(out: str | os.PathLike[str], *names: str) -> None:
    """The work in the top-level folders ``names`` of ``out`` has finished: record every file they hold, so a
    later ``--force`` removes exactly those (see the module docstring)."""
    folder = Path(out)
    manifest = read_manifest(folder)
    outputs = list(manifest["outputs"]) if manifest else []
    files = _files(manifest)
    for name in dict.fromkeys(names):
        root = folder / name
        if not _plain_name(name) or root.is_symlink() or not root.is_dir():
            continue
        if name not in outputs:
            outputs.append(name)
        found = {p.relative_to(folder).as_posix() for p in root.rglob("*") if p.is_symlink() or not p.is_dir()}
        files[name] = sorted(found.union(files.get(name, [])))
    _write_manifest(folder, outputs, files)


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
    if force and resume:
        raise ConfigError("--force (start over) and --resume (continue) contradict each other; pass only one")
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"output path '{out}' is a file; choose a folder path for --out")
    if not out.exists():
        blocker = next((p for p in out.parents if p.exists() or p.is_symlink()), None)
        if blocker is not None and not blocker.is_dir():
            raise OutputError(
                f"cannot create output folder '{out}': '{blocker}' is a file; choose a folder path for --out"
            )
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
    except OSError as exc:  # permission, read-only or missing file system, a path that cannot be a folder
        raise OutputError(
            f"cannot write to output folder '{out}' ({exc.strerror}); pick a folder you can write to with --out"
        ) from None
    return out


def remove_outputs(out: Path, *, keep: Iterable[Any] = (), only: Iterable[str] | None = None) -> list[str]:
    """Remove what ``out``'s manifest lists (``only``: just these top-level names), except inputs and the
    folders that hold them; the manifest is left listing what stayed. Returns the names removed whole."""
    manifest = read_manifest(out)
    if manifest is None:
        return []
    protected = _resolved(keep)
    files = _files(manifest)
    names = set(manifest["outputs"] if only is None else only)
    removed, kept = [], []
    for name in manifest["outputs"]:
        target = out / name
        if not _plain_name(name) or not (target.exists() or target.is_symlink()):
            continue
        if name not in names:
            kept.append(name)
        elif target.is_symlink():  # a link is removed, never followed
            target.unlink()
            removed.append(name)
        elif name in files and target.is_dir():  # finished: only its recorded files go
            _remove_listed(out, target, files[name], protected)
            files[name] = [f for f in files[name] if (out / f).is_file() or (out / f).is_symlink()]
            (kept if target.exists() else removed).append(name)
        elif _remove(target, protected):
            removed.append(name)
        else:
            kept.append(name)
    for name in removed:
        files.pop(name, None)
    _write_manifest(out, kept, {k: v for k, v in files.items() if k in kept})
    return removed


def _remove_listed(out: Path, root: Path, listed: list[str], protected: list[Path]) -> None:
    """Remove the recorded files below ``root`` (never a protected one, never outside ``out``), then the
    folders left empty."""
    base = out.resolve()
    for rel in listed:
        parts = rel.split("/")
        if not rel or rel.startswith("/") or any(p in ("", ".", "..") for p in parts):
            continue
        path = out / rel
        try:
            parent = path.parent.resolve()
        except (OSError, RuntimeError):
            continue
        if not _contains(base, parent) or not (path.is_symlink() or path.is_file()):
            continue
        if path.is_symlink() or not any(_contains(p, path.resolve()) for p in protected):
            path.unlink()
    for folder, _, _ in sorted(os.walk(root), key=lambda t: -len(t[0])):  # deepest first
        with contextlib.suppress(OSError):
            if not Path(folder).is_symlink():
                Path(folder).rmdir()  # only when empty


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


@contextlib.contextmanager
def undo_on_failure(folder: Path, *, existed: bool) -> Iterator[None]:
    """Run a block that writes into ``folder`` (already prepared); if it fails, remove only the entries it
    added — never a file that was there before (a user's file, the run's own input) — and the folder itself
    when this run created it and nothing else is left in it."""
    before = {p.name for p in folder.iterdir()}
    try:
        yield
    except BaseException:
        for entry in folder.iterdir():
            if entry.name in before:
                continue
            with contextlib.suppress(OSError):
                shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
        if not existed and {p.name for p in folder.iterdir()} <= {MANIFEST}:
            with contextlib.suppress(OSError):
                (folder / MANIFEST).unlink(missing_ok=True)
                folder.rmdir()
        raise
