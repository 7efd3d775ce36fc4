"""User data formats: a folder of images (one subfolder per class), CSV/TSV/JSONL text tables and
``.npz`` arrays. Each becomes seeded ``DataSplits``; bad data raises one ``DataError`` line."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from slimtune.data.core import DataSplits, Kind, scale_images, split_arrays
from slimtune.errors import DataError, missing_dependency

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".pgm")
TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".ndjson")
GRAY_MODES = {"1", "L", "LA", "I", "I;16", "F"}
TEXT_ALIASES = ("text", "sentence", "review", "content", "tweet", "document")
LABEL_ALIASES = ("label", "labels", "class", "target", "sentiment", "category", "y")
INT_RE = re.compile(r"[+-]?\d+")


def load_path(
    path: str | Path,
    *,
    seed: int = 0,
    limit: int | None = None,
    text_column: str = "text",
    label_column: str = "label",
    image_size: int | tuple[int, int] | None = None,
) -> DataSplits:
    """Load a user dataset: a folder of class subfolders, ``.csv``/``.tsv``/``.jsonl`` or ``.npz``."""
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"file not found: {p}; check the path")
    if p.is_dir():
        return load_image_folder(p, seed=seed, limit=limit, image_size=image_size)
    suffix = p.suffix.lower()
    if suffix in TABLE_SUFFIXES:
        return load_table(p, seed=seed, limit=limit, text_column=text_column, label_column=label_column)
    if suffix == ".npz":
        return load_npz(p, seed=seed, limit=limit)
    raise DataError(f"unsupported data file '{p.name}'; use a folder of class subfolders, .csv, .tsv, .jsonl or .npz")


def encode_labels(values: Sequence[Any], source: str) -> tuple[torch.Tensor, list[str]]:
    """Integer labels or class-name strings → ids 0..K-1 in sorted order, plus the label names."""
    if any(v is None or (isinstance(v, str) and not v.strip()) for v in values):
        raise DataError(f"{source}: some labels are empty; give every example a label")
    ints = [_as_int(v) for v in values]
    keys: list[Any]
    if all(i is not None for i in ints):
        keys = ints
    elif all(isinstance(v, str) for v in values) and not all(_is_number(v) for v in values):
        keys = [v.strip() for v in values]
    else:
        bad = next(v for v, i in zip(values, ints) if i is None)
        raise DataError(f"{source}: labels must be integers or class names, got {bad!r}; round or map them to classes")
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


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a CSV/TSV (header line required) or JSONL file, as dicts."""
    raw = path.read_bytes()
    if not raw.strip():
        raise DataError(f"'{path}' is empty; add a header line and data rows")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        rows = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"'{path}' line {lineno} is not valid JSON ({exc.msg}); fix that line") from exc
            if not isinstance(row, dict):
                raise DataError(f"'{path}' line {lineno} is not a JSON object; write one object per line")
            rows.append(row)
        return rows
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    return list(csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter))


def pick_column(wanted: str, default: str, aliases: Sequence[str], available: list[str], path: Path) -> str:
    """``wanted`` if present; when it is the default, also accept a common alias (any case)."""
    if wanted in available:
        return wanted
    if wanted == default:
        lower = {c.lower(): c for c in available}
        for alias in aliases:
            if alias in lower:
                return lower[alias]
    arg = "text_column" if default == "text" else "label_column"
    raise DataError(
        f"column '{wanted}' not found in '{path.name}'; available: {', '.join(available) or 'none'}; pass {arg}=<name>"
    )


def load_table(
    path: Path,
    *,
    seed: int = 0,
    limit: int | None = None,
    text_column: str = "text",
    label_column: str = "label",
) -> DataSplits:
    rows = read_rows(path)
    if not rows:
        raise DataError(f"'{path}' has no data rows; add at least two examples per class")
    available = list(dict.fromkeys(k for row in rows for k in row if k is not None))
    text_col = pick_column(text_column, "text", TEXT_ALIASES, available, path)
    label_col = pick_column(label_column, "label", LABEL_ALIASES, available, path)
    missing = next((i for i, row in enumerate(rows, 1) if row.get(text_col) is None), None)
    if missing is not None:
        raise DataError(f"'{path}' data row {missing} has no '{text_col}' value; fill it in or drop the row")
    texts = [str(row[text_col]) for row in rows]
    y, names = encode_labels([row.get(label_col) for row in rows], f"'{path}' column '{label_col}'")
    splits = split_arrays(path.stem, texts, y, label_names=names, kind="text", seed=seed, limit=limit)
    splits.meta["source"] = str(path)
    return splits


# --- image folders -------------------------------------------------------------------------------


def load_image_folder(
    folder: Path, *, seed: int = 0, limit: int | None = None, image_size: int | tuple[int, int] | None = None
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
        h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    else:
        w, h = images[0].size
        odd = next((i for i, im in enumerate(images) if im.size != (w, h)), None)
        if odd is not None:
            raise DataError(
                f"images have different sizes ('{files[0][0].name}' is {w}x{h}, '{files[odd][0].name}' is "
                f"{images[odd].width}x{images[odd].height}); pass image_size=(height, width) to resize them"
            )
    arrays = [np.asarray(im.convert(mode).resize((w, h)), dtype=np.uint8) for im in images]
    x = torch.from_numpy(np.stack(arrays))
    x = x[:, None] if mode == "L" else x.permute(0, 3, 1, 2).contiguous()
    y = torch.tensor([label for _, label in files], dtype=torch.long)
    splits = split_arrays(folder.name, x, y, label_names=classes, kind="image", seed=seed, limit=limit)
    splits.meta["source"] = str(folder)
    return scale_images(splits)


# --- npz arrays ----------------------------------------------------------------------------------


def load_npz(path: Path, *, seed: int = 0, limit: int | None = None) -> DataSplits:
    """Arrays ``x`` (N, ...) numeric and ``y`` (N,) labels; 3-D/4-D ``x`` is an image set (uint8 → [0, 1])."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read '{path}' as .npz ({exc}); save it with numpy.savez(path, x=..., y=...)") from exc
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
