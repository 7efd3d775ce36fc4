"""Bits per layer in the report: a compact summary per stage ("int8 ×12, fp32 ×2"), the layers mixed
precision kept in fp32 and why (their SQNR), and the per-layer detail for the HTML page."""

from __future__ import annotations

from collections import Counter
from html import escape
from typing import Any

_TIMES = "\N{MULTIPLICATION SIGN}"


def precision_summary(precision: dict[str, str] | None) -> str:
    """``{"a": "int8", "b": "int8", "c": "fp32"}`` → ``int8 ×2, fp32 ×1`` (most frequent first)."""
    if not precision:
        return "—"
    counts = Counter(precision.values())
    return ", ".join(f"{label} {_TIMES}{n}" for label, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def fp32_reasons(extra: dict[str, Any] | None) -> dict[str, str]:
    """Layer → why mixed precision kept it in fp32, from a row's ``extra["mixed_precision"]``."""
    mixed = (extra or {}).get("mixed_precision")
    if not isinstance(mixed, dict) or not isinstance(mixed.get("fp32_layers"), dict):
        return {}
    out = {}
    for name, entry in mixed["fp32_layers"].items():
        why = entry.get("why") if isinstance(entry, dict) else None
        out[str(name)] = str(why or "kept fp32 by mixed precision")
    return out


def markdown_lines(rows: list[Any]) -> list[str]:
    """A "Mixed precision" section naming, per stage, the layers kept fp32 and their SQNR."""
    out: list[str] = []
    for row in rows:
        mixed = (row.extra or {}).get("mixed_precision")
        if not isinstance(mixed, dict):
            continue
        layers = mixed.get("fp32_layers") or {}
        kept = ", ".join(
            f"`{n}` ({e['sqnr_db']:.1f} dB)" if isinstance(e, dict) and "sqnr_db" in e else f"`{n}`"
            for n, e in layers.items()
        )
        out.append(
            f"- **{row.name}**: kept fp32 ({mixed.get('criterion', '')}; SQNR of the logits with only that "
            f"layer quantized): {kept or 'none'}"
        )
    return ["", "## Mixed precision", "", *out] if out else []


def html_section(rows: list[Any]) -> str:
    """One collapsible per-layer table per stage that has a precision map."""
    parts = []
    for row in rows:
        if not row.precision:
            continue
        reasons = fp32_reasons(row.extra)
        body = "".join(
            f"<tr><td>{escape(layer)}</td><td>{escape(label)}</td><td>{escape(reasons.get(layer, ''))}</td></tr>"
            for layer, label in row.precision.items()
        )
        parts.append(
            f"<details><summary>{escape(row.name)}: {escape(precision_summary(row.precision))}</summary>"
            '<table class="precision"><thead><tr><th>Layer</th><th>Precision</th><th>Why fp32</th></tr></thead>'
            f"<tbody>{body}</tbody></table></details>"
        )
    return "\n".join(parts) or "<p>(no per-layer precision recorded)</p>"


__all__ = ["fp32_reasons", "html_section", "markdown_lines", "precision_summary"]
