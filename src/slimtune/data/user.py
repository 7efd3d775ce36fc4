"""User data formats: a folder of images (one subfolder per class), CSV/TSV/JSONL text tables and
``.npz`` arrays. Each becomes seeded ``DataSplits``; bad data raises one ``DataError`` line."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from slimtune.data.core import DataSplits, Kind, scale_images, split_arrays
from slimtune.data.tables import MIN_CLASS_ROWS, check_class_counts, data_option, map_labels, read_table
from slimtune.errors import ConfigError, DataError, missing_dependency
from slimtune.runtime.arrays import numpy_problem
from slimtune.runtime.images import IMAGE_SUFFIXES

TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".ndjson")
GRAY_MODES = {"1", "L", "LA", "I", "I;16", "F"}
TABLE_OPTIONS = ("text_column", "label_column", "labels", "label_map", "drop_empty", "min_class_rows")
FOLDER_OPTIONS = ("image_size",)
INT_RE = re.compile(r"[+-]?\d+")


def load_path(
    path: str | Path,
    *,
    seed: int = 0,
    limit: int | None = None,
    text_column: str | None = None,
    label_column: str | None = None,
    image_size: int | Sequence[int] | None = None,
    labels: Sequence[str] | None = None,
    label_map: Mapping[Any, Any] | None = None,
    drop_empty: bool = False,
    min_class_rows: int = MIN_CLASS_ROWS,
) -> DataSplits:
    """Load a user dataset: a folder of class subfolders, ``.csv``/``.tsv``/``.jsonl`` or ``.npz``.

    Tables: ``text_column``/``label_column`` name the columns (default ``text``/``label`` or a common alias),
    ``label_map`` renames raw labels (``{0: negative, 1: positive}``), ``labels`` lists the expected class
    names in id order (any other label is an error), ``drop_empty`` drops rows with an empty text or label
    (else they are an error) and a class seen in fewer than ``min_class_rows`` rows is an error.
    Image folders: ``image_size`` (an int or ``[height, width]``) resizes every image. In a recipe, each of
    these is a key of ``data:``; on the command line, ``--data-option key=value``.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"file not found: {p}; check the path")
    kind = "folder" if p.is_dir() else p.suffix.lower()
    given = {
        "text_column": text_column, "label_column": label_column, "image_size": image_size, "labels": labels,
        "label_map": label_map, "drop_empty": drop_empty or None,
        "min_class_rows": None if min_class_rows == MIN_CLASS_ROWS else min_class_rows,
    }  # fmt: skip
    allowed = FOLDER_OPTIONS if kind == "folder" else TABLE_OPTIONS if kind in TABLE_SUFFIXES else ()
    wrong = [k for k, v in given.items() if v is not None and k not in allowed]
    if wrong:
        what = "an image folder" if kind == "folder" else f"a {kind or 'suffix-less'} file"
        raise ConfigError(
            f"data option '{wrong[0]}' does not apply to {what} ('{p.name}'); options for it: "
            f"{', '.join(allowed) or 'none'}"
        )
    if kind == "folder":
        return load_image_folder(p, seed=seed, limit=limit, image_size=image_size)
    if kind in TABLE_SUFFIXES:
        return load_table(p, seed=seed, limit=limit, text_column=text_column, label_column=label_column,
                          labels=labels, label_map=label_map, drop_empty=drop_empty,
                          min_class_rows=min_class_rows)  # fmt: skip
    if kind == ".npz":
        return load_npz(p, seed=seed, limit=limit)
    raise DataError(f"unsupported data file '{p.name}'; use a folder of class subfolders, .csv, .tsv, .jsonl or .npz")


def encode_labels(
    values: Sequence[Any], source: str, *, order: Sequence[str] | None = None, lines: Sequence[int] | None = None
) -> tuple[torch.Tensor, list[str]]:
    """Integer labels or class-name strings → ids 0..K-1 in sorted order (or in ``order``), plus the label
    names. ``lines`` (one per value) locate a bad label as ``source:line``."""

    def where(i: int) -> str:
        return f"{source}:{lines[i]}" if lines is not None else source

    empty = next((i for i, v in enumerate(values) if v is None or (isinstance(v, str) and not v.strip())), None)
    if empty is not None:
        raise DataError(f"{where(empty)}: empty label; give every example a label")
    if order is not None:
        index = {name: i for i, name in enumerate(order)}
        return torch.tensor([index[str(v).strip()] for v in values], dtype=torch.long), list(order)
    ints = [_as_int(v) for v in values]
    keys: list[Any]
    if all(i is not None for i in ints):
        keys = ints
    elif all(isinstance(v, str) for v in values) and not all(_is_number(v) for v in values):
        keys = [v.strip() for v in values]
    else:
        bad = next(i for i, n in enumerate(ints) if n is None)
        raise DataError(
            f"{where(bad)}: labels must be integers or class names, got {values[bad]!r}; fix it, or rename "
            "labels with data: {label_map: {raw: name}}"
        )
    classes = sorted(set(keys))
    ids = {c: i for i, c in enumerate(classes)}
    return torch.tensor([ids[k] for k in keys], dtype=torch.long), [str(c) for c in classes]


def _as_int(v: object) -> int | None:
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return int(v)
    if isinstance(v, str) and INT_RE.fullmatch(v.strip()):
        return int(v)
    return None


def _is_number(v: str) -> bool:
    try:
        float(v)
    except ValueError:
        return False
    return True


# --- text tables ---------------------------------------------------------------------------------


def load_table(
    path: Path,
    *,
    seed: int = 0,
    limit: int | None = None,
    text_column: str | None = None,
    label_column: str | None = None,
    labels: Sequence[str] | None = None,
    label_map: Mapping[Any, Any] | None = None,
    drop_empty: bool = False,
    min_class_rows: int = MIN_CLASS_ROWS,
) -> DataSplits:
    table = read_table(path, text_column=text_column, label_column=label_column, drop_empty=drop_empty)
    mapping = {str(k).strip(): v for k, v in (label_map or {}).items()}
    values, order = map_labels(table, path, labels=labels, label_map=mapping)
    y, names = encode_labels(values, str(path), order=order, lines=table.lines)
    check_class_counts(path, y.tolist(), names, table.lines, min_class_rows)
    splits = split_arrays(path.stem, table.texts, y, label_names=names, kind="text", seed=seed, limit=limit)
    splits.meta["source"] = str(path)
    if table.dropped:
        splits.meta["dropped_rows"] = table.dropped
    return splits


# --- image folders -------------------------------------------------------------------------------


def load_image_folder(
    folder: Path, *, seed: int = 0, limit: int | None = None, image_size: int | Sequence[int] | None = None
) -> DataSplits:
    """Images under ``folder/<class>/``; grayscale if every image is, else RGB; (N, C, H, W) in [0, 1]."""
    try:
        from PIL import Image
    except ImportError as exc:
        raise missing_dependency("pillow", "data") from exc
    classes = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DataError(f"'{folder}' has no class subfolders; put each class's images in folder/<class>/")
    files: list[tuple[Path, int]] = []
    for label, name in enumerate(classes):
        found = sorted(f for f in (folder / name).iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            raise DataError(f"class folder '{folder / name}' has no images ({', '.join(IMAGE_SUFFIXES)})")
        files += [(f, label) for f in found]
    images = []
    for f, _ in files:
        try:
            im = Image.open(f)
            im.load()  # reads the pixels and closes the file
        except OSError as exc:
            raise DataError(f"cannot read image '{f}' ({exc}); remove or replace it") from exc
        images.append(im)
    mode = "L" if all(im.mode in GRAY_MODES for im in images) else "RGB"
    if image_size is not None:
        h, w = image_hw(image_size)
    else:
        w, h = images[0].size
        odd = next((i for i, im in enumerate(images) if im.size != (w, h)), None)
        if odd is not None:
            raise DataError(
                f"images have different sizes ('{files[0][0].relative_to(folder)}' is {w}x{h}, "
                f"'{files[odd][0].relative_to(folder)}' is "
                f"{images[odd].width}x{images[odd].height}); resize them to one size: "
                + data_option("image_size", "[height,width]")
            )
    arrays = [np.asarray(im.convert(mode).resize((w, h)), dtype=np.uint8) for im in images]
    x = torch.from_numpy(np.stack(arrays))
    x = x[:, None] if mode == "L" else x.permute(0, 3, 1, 2).contiguous()
    y = torch.tensor([label for _, label in files], dtype=torch.long)
    splits = split_arrays(folder.name, x, y, label_names=classes, kind="image", seed=seed, limit=limit)
    splits.meta["source"] = str(folder)
    return scale_images(splits)


def image_hw(size: int | Sequence[int]) -> tuple[int, int]:
    """``image_size`` (an int, or [height, width]) as positive (height, width)."""
    hw = [size, size] if isinstance(size, int) else list(size)
    if len(hw) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in hw):
        raise ConfigError(f"data.image_size must be a positive int or [height, width]; got {size!r}")
    return int(hw[0]), int(hw[1])


# --- npz arrays ----------------------------------------------------------------------------------


def load_npz(path: Path, *, seed: int = 0, limit: int | None = None) -> DataSplits:
    """Arrays ``x`` (N, ...) numeric and ``y`` (N,) labels; 3-D/4-D ``x`` is an image set (uint8 → [0, 1])."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(
            f"cannot read '{path}' as .npz: {numpy_problem(path, exc)}; save it with numpy.savez(path, x=..., y=...)"
        ) from None
    if "x" not in arrays or "y" not in arrays:
        raise DataError(f"'{path}' needs arrays 'x' and 'y'; it has: {', '.join(arrays) or 'none'}")
    x, y_raw = arrays["x"], arrays["y"]
    if x.dtype.kind not in "biuf" or x.ndim < 2:
        raise DataError(f"'{path}': x must be a numeric array (N, features...); got {x.dtype} shaped {x.shape}")
    if y_raw.ndim != 1 or len(y_raw) != len(x):
        raise DataError(f"'{path}': y must be 1-D with one label per row of x; got x {x.shape}, y {y_raw.shape}")
    if not np.isfinite(x).all():
        raise DataError(f"'{path}': x contains NaN or infinite values; clean or impute them")
    y, names = encode_labels(y_raw.tolist(), f"'{path}' array 'y'")
    kind: Kind = "image" if x.ndim in (3, 4) else "tabular"
    tx = torch.from_numpy(x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32))
    if x.ndim == 3:
        tx = tx[:, None]
    elif x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        tx = tx.permute(0, 3, 1, 2).contiguous()  # channels-last (N, H, W, C) → (N, C, H, W)
    splits = split_arrays(path.stem, tx, y, label_names=names, kind=kind, seed=seed, limit=limit)
    splits.meta["source"] = str(path)
    return splits
