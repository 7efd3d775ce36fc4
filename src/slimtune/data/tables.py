"""Strict, located reading of text tables (CSV/TSV/JSONL): every problem is one ``DataError`` naming
``file:line`` and what was expected.

A CSV whose quote is never closed must not silently merge rows: the file is read with ``csv`` in strict
mode (a quote that runs to the end of the file, or closes in the middle of a field, is an error at the line
where it opened), a row with the wrong number of fields is an error, and a quoted field that runs over
several lines is refused when one of the lines it swallows looks like a complete row of its own. Rows with
an empty text or label are an error unless ``drop_empty`` (then they are dropped and counted), and a class
seen in fewer than ``min_class_rows`` rows (the usual symptom of merged or shifted rows) is an error naming
the rare labels and their lines.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slimtune.errors import DataError

log = logging.getLogger("slimtune.data")

TEXT_ALIASES = ("text", "sentence", "review", "content", "tweet", "document")
LABEL_ALIASES = ("label", "labels", "class", "target", "sentiment", "category", "y")
MIN_CLASS_ROWS = 3
Records = list[tuple[int, int, dict[str, Any]]]  # (first line, last line, row) per row


@dataclass
class Table:
    """The rows of a table: one text, one raw label and the 1-based line where the row starts, per row."""

    texts: list[str]
    labels: list[Any]
    lines: list[int]
    dropped: int = 0


def data_option(key: str, example: str) -> str:
    """How to set a data option, for error hints: the recipe key and the CLI flag."""
    return f"set it in the recipe (data: {{{key}: {example}}}) or with --data-option {key}={example}"


def decode(path: Path) -> str:
    raw = path.read_bytes()
    if not raw.strip():
        raise DataError(f"'{path}' is empty; add a header line and data rows")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def read_table(
    path: Path,
    *,
    text_column: str | None = None,
    label_column: str | None = None,
    drop_empty: bool = False,
) -> Table:
    """Texts and raw labels of a CSV/TSV (header line required) or JSONL file, strictly checked."""
    text = decode(path)
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    jsonl = path.suffix.lower() in (".jsonl", ".ndjson")
    records, columns = _jsonl_records(path, text) if jsonl else _csv_records(path, text, delimiter)
    if not records:
        raise DataError(f"'{path}' has no data rows; add at least {MIN_CLASS_ROWS} examples per class")
    text_col = pick_column(text_column, "text", TEXT_ALIASES, columns, path)
    label_col = pick_column(label_column, "label", LABEL_ALIASES, columns, path)
    if not jsonl:
        _check_swallowed(path, text, records, columns, label_col, delimiter)
    table = Table([], [], [])
    empty: list[int] = []
    for line, _, row in records:
        value, label = row.get(text_col), row.get(label_col)
        if value is not None and not isinstance(value, str):
            raise DataError(f"{path}:{line}: '{text_col}' must be a string, got {value!r}; quote it")
        missing = next((c for c, v in ((text_col, value), (label_col, label)) if _is_empty(v)), None)
        if missing is not None:
            if not drop_empty:
                raise DataError(
                    f"{path}:{line}: empty or missing '{missing}' value; fill it in, or drop such rows: "
                    + data_option("drop_empty", "true")
                )
            empty.append(line)
            continue
        assert isinstance(value, str)
        table.texts.append(value)
        table.labels.append(label)
        table.lines.append(line)
    if empty:
        table.dropped = len(empty)
        shown = ", ".join(map(str, empty[:5])) + (", ..." if len(empty) > 5 else "")
        rows, lines = ("row", "line") if len(empty) == 1 else ("rows", "lines")
        log.warning(f"{path}: dropped {len(empty)} {rows} with an empty text or label ({lines} {shown})")
    if not table.texts:
        raise DataError(f"'{path}': every row has an empty text or label; fill them in")
    return table


def _is_empty(v: Any) -> bool:
    return v is None or (isinstance(v, str) and not v.strip())


def _csv_records(path: Path, text: str, delimiter: str) -> tuple[Records, list[str]]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    rows: list[tuple[int, int, list[str]]] = []
    prev = 0
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise DataError(_csv_error(path, prev + 1, reader.line_num, str(exc), delimiter)) from None
        start, prev = prev + 1, reader.line_num
        if fields and any(f.strip() for f in fields):
            rows.append((start, reader.line_num, fields))
    if not rows:
        raise DataError(f"'{path}' is empty; add a header line and data rows")
    (_, _, header), body = rows[0], rows[1:]
    header = [h.strip() for h in header]
    sep = "tab" if delimiter == "\t" else f"'{delimiter}'"
    for start, end, fields in body:
        if len(fields) != len(header):
            where = f" (the row runs on to line {end}: is a quote on line {start} never closed?)" if end > start else ""
            raise DataError(
                f"{path}:{start}: expected {len(header)} fields ({', '.join(header)}), found {len(fields)}{where}; "
                f'quote fields that contain {sep} ("a, b")'
            )
    return [(start, end, dict(zip(header, fields))) for start, end, fields in body], header


def _csv_error(path: Path, start: int, now: int, message: str, delimiter: str) -> str:
    if "end of data" in message or "EOF" in message:
        return (
            f"{path}:{start}: a quote opened on this line is never closed (the file ends inside it); "
            'close it, or write a literal quote as "" inside a quoted field'
        )
    if "expected after" in message:
        if now > start:
            return (
                f"{path}:{start}: a quote opened on this line is not closed before line {now}, swallowing the "
                f'rows in between; close it, or write a literal quote as "" inside a quoted field'
            )
        return (
            f"{path}:{start}: a field that starts with a quote must end with it right before the "
            f'{"tab" if delimiter == chr(9) else repr(delimiter)}; quote the whole field and double inner quotes ("")'
        )
    return f"{path}:{start}: not valid CSV ({message}); fix that line"


def _check_swallowed(
    path: Path, text: str, records: Records, header: list[str], label_col: str, delimiter: str
) -> None:
    """A multi-line quoted field is refused when a line inside it parses as a complete row whose label is
    one that single-line rows use: the sign of an unterminated quote, not of a long text."""
    multi = [(s, e) for s, e, _ in records if e > s]
    if not multi:
        return
    lines = io.StringIO(text, newline="").readlines()  # the physical lines as the csv reader counts them
    at = header.index(label_col)
    known = {str(row[label_col]).strip() for s, e, row in records if e == s and str(row[label_col]).strip()}
    for start, end in multi:
        for lineno in range(start + 1, end):  # the last line holds the closing quote: not a row of its own
            parts = next(csv.reader([lines[lineno - 1].rstrip("\r\n")], delimiter=delimiter), [])
            if len(parts) == len(header) and parts[at].strip() in known and all(p.strip() for p in parts):
                raise DataError(
                    f"{path}:{start}: a quoted field opened on this line runs on to line {end} and swallows line "
                    f"{lineno}, which looks like a row of its own; close the quote on line {start}"
                )


def _jsonl_records(path: Path, text: str) -> tuple[Records, list[str]]:
    records = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(
                f"{path}:{lineno}: not valid JSON ({exc.msg} at column {exc.colno}); write one JSON object per line"
            ) from None
        if not isinstance(row, dict):
            raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}; one object per line")
        records.append((lineno, lineno, row))
    columns = list(dict.fromkeys(k for _, _, row in records for k in row))
    return records, columns


def pick_column(wanted: str | None, default: str, aliases: Sequence[str], available: list[str], path: Path) -> str:
    """``wanted`` if given and present; otherwise ``default`` or a common alias of it (any case)."""
    key = "text_column" if default == "text" else "label_column"
    if wanted is not None and wanted != default:
        if wanted in available:
            return wanted
        raise DataError(
            f"column '{wanted}' not found in '{path.name}'; available: {', '.join(available) or 'none'}; "
            f"name one of them as {key}"
        )
    lower = {c.lower(): c for c in available}
    for alias in (default, *aliases):
        if alias in lower:
            return lower[alias]
    raise DataError(
        f"column '{default}' not found in '{path.name}'; available: {', '.join(available) or 'none'}; "
        f"name the {default} column: " + data_option(key, "<name>")
    )


def map_labels(
    table: Table, path: Path, *, labels: Sequence[str] | None = None, label_map: Mapping[str, str] | None = None
) -> tuple[list[Any], list[str] | None]:
    """Apply ``label_map`` (raw value → class name) and check the labels against ``labels`` (the expected
    class names, in id order). Returns the labels and the class order (``labels``, or None: sorted)."""
    values = list(table.labels)
    if label_map:
        values = [label_map.get(str(v).strip(), v) for v in values]
    if labels is None:
        return values, None
    expected = [str(name) for name in labels]
    for v, line in zip(values, table.lines):
        if str(v).strip() not in expected:
            raise DataError(
                f"{path}:{line}: label {str(v).strip()!r} is not one of the expected labels "
                f"({', '.join(expected)}); fix the line or add the label to data.labels"
            )
    return [str(v).strip() for v in values], expected


def check_class_counts(path: Path, ids: Sequence[int], names: list[str], lines: list[int], min_rows: int) -> None:
    """Refuse classes seen in fewer than ``min_rows`` rows: the symptom of rows merged by a broken quote or a
    shifted column (a text fragment becomes a class of its own)."""
    counts = Counter(ids)
    rare = [i for i in range(len(names)) if 0 < counts[i] < min_rows]
    if not rare:
        return
    first = {i: line for i, line in reversed(list(zip(ids, lines)))}
    shown = ", ".join(f"{names[i]!r} (line {first[i]})" for i in rare[:5]) + (
        f" and {len(rare) - 5} more" if len(rare) > 5 else ""
    )
    raise DataError(
        f"{path}: {len(rare)} of {len(names)} labels occur in fewer than {min_rows} rows: {shown}, a sign of merged "
        f"or shifted rows; fix those lines, or accept rare classes: " + data_option("min_class_rows", "1")
    )
