"""Warnings a report must show loudly: a stage that lost too much accuracy, latency timed on a busy machine.

Each warning is one line kept in its row's ``extra["warnings"]`` (so report.json, a resumed run and a
reloaded report all carry it); ``Report`` prints them above its table in Markdown and HTML.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from slimtune.evaluate.report import StageRow

WARNINGS_KEY = "warnings"


def _accuracy(row: StageRow) -> float | None:
    value = row.metrics.get("accuracy")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def accuracy_drop_warning(row: StageRow, before: StageRow | None, *, limit: float | None) -> str | None:
    """One line when ``row`` lost more than ``limit`` points of accuracy against ``before`` (the model that
    entered the stage: the teacher of a distillation, the dense model of a pruning...); None otherwise."""
    if before is None or limit is None:
        return None
    acc, base = _accuracy(row), _accuracy(before)
    if acc is None or base is None:
        return None
    drop = (base - acc) * 100
    if drop <= limit:
        return None
    return (
        f"stage '{row.name}' lost {drop:.2f} points of accuracy vs '{before.name}' ({base * 100:.2f}% → "
        f"{acc * 100:.2f}%), more than warn_drop {limit:g}: check its options (epochs, lr, student size, kd) "
        "before shipping it"
    )


def add_warning(row: StageRow, message: str) -> None:
    """Attach a warning line to ``row`` (once)."""
    warnings = row.extra.setdefault(WARNINGS_KEY, [])
    if message not in warnings:
        warnings.append(message)


def row_warnings(row: StageRow) -> list[str]:
    value: Any = row.extra.get(WARNINGS_KEY) or []
    return [str(w) for w in value] if isinstance(value, list) else [str(value)]


def check_accuracy_drop(row: StageRow, before: StageRow | None, *, limit: float | None) -> str | None:
    """``accuracy_drop_warning`` that also records the warning on ``row``; returns it for the log."""
    message = accuracy_drop_warning(row, before, limit=limit)
    if message is not None:
        add_warning(row, message)
    return message


LOADED = "was timed on a loaded machine"


def loaded_machine_warning(name: str, load: float, cores: int) -> str:
    return (
        f"stage '{name}' {LOADED} (load average {load:g} on {cores} cores): its latency columns are unreliable; "
        "rerun on an idle machine to compare speeds"
    )


def ordered_warnings(rows: list[StageRow]) -> list[str]:
    """Every row's warnings, accuracy drops first; the loaded-machine ones of several stages merged into one."""
    all_lines = [(row, w) for row in rows for w in row_warnings(row)]
    loaded = [(row, w) for row, w in all_lines if LOADED in w]
    first = [w for _, w in all_lines if " points of accuracy vs " in w]
    rest = [w for _, w in all_lines if w not in first and LOADED not in w]
    if len(loaded) == 1:
        rest.insert(0, loaded[0][1])
    elif loaded:
        names = ", ".join(f"'{row.name}'" for row, _ in loaded)
        loads = [v for row, _ in loaded if isinstance(v := row.extra.get("load_average"), int | float)]
        peak = f" (load average up to {max(loads):g})" if loads else ""
        rest.insert(
            0,
            f"stages {names} were timed on a loaded machine{peak}: their latency columns are unreliable; rerun on "
            "an idle machine to compare speeds",
        )
    return first + rest


def markdown_warnings(rows: list[StageRow]) -> list[str]:
    lines = [f"> **⚠ WARNING:** {w}" for w in ordered_warnings(rows)]
    return ["", *lines] if lines else []


def html_warnings(rows: list[StageRow]) -> str:
    from html import escape

    items = [f'<p class="warning"><strong>⚠ WARNING:</strong> {escape(w)}</p>' for w in ordered_warnings(rows)]
    return "\n".join(items)


__all__ = [
    "accuracy_drop_warning",
    "add_warning",
    "check_accuracy_drop",
    "html_warnings",
    "loaded_machine_warning",
    "markdown_warnings",
    "ordered_warnings",
    "row_warnings",
]
