"""Report sections read from the stages' ``extra``: sparsity per layer (pruning stages) and the int8 settings
each quantization stage chose, with the reason, in both report.md and report.html."""

from __future__ import annotations

from html import escape
from typing import Any

_MISSING = "—"
# quantization settings worth a column, in order, and how the report names them
_INT8_KEYS = (
    ("method", "method"),
    ("chosen", "chosen"),
    ("reduce_range", "reduce_range"),
    ("per_channel", "per-channel"),
    ("activation_type", "activations"),
    ("observer", "observer"),
)


def layer_rows(extra: dict[str, Any] | None) -> list[tuple[str, int | None, float]]:
    """(layer, weights, sparsity) from a row's ``extra["layer_sparsity"]`` (and ``"layer_weights"``)."""
    extra = extra or {}
    sparsity, weights = extra.get("layer_sparsity"), extra.get("layer_weights") or {}
    if not isinstance(sparsity, dict):
        return []
    return [(str(n), weights.get(n), float(s)) for n, s in sparsity.items()]


def _weights(n: int | None) -> str:
    return _MISSING if n is None else f"{n:,}"


def _nonzero(n: int | None, s: float) -> str:
    return _MISSING if n is None else f"{round(n * (1 - s)):,}"


def sparsity_markdown(rows: list[Any]) -> list[str]:
    """A "Sparsity per layer" section: one table per stage that recorded it."""
    out: list[str] = []
    for row in rows:
        layers = layer_rows(row.extra)
        if not layers:
            continue
        out += ["", f"**{row.name}**", "", "| Layer | Weights | Non-zeros | Sparsity |", "| --- | ---: | ---: | ---: |"]
        out += [f"| `{n}` | {_weights(w)} | {_nonzero(w, s)} | {s:.1%} |" for n, w, s in layers]
    return ["", "## Sparsity per layer", *out] if out else []


def sparsity_html(rows: list[Any]) -> str:
    parts = []
    for row in rows:
        layers = layer_rows(row.extra)
        if not layers:
            continue
        body = "".join(
            f"<tr><td>{escape(n)}</td><td>{_weights(w)}</td><td>{_nonzero(w, s)}</td><td>{s:.1%}</td></tr>"
            for n, w, s in layers
        )
        overall = sum(w * s for _, w, s in layers if w) / max(1, sum(w for _, w, _ in layers if w))
        parts.append(
            f"<details><summary>{escape(row.name)}: {len(layers)} layers, {overall:.1%} of their weights zero"
            "</summary><table><thead><tr><th>Layer</th><th>Weights</th><th>Non-zeros</th><th>Sparsity</th>"
            f"</tr></thead><tbody>{body}</tbody></table></details>"
        )
    return "\n".join(parts) or "<p>(no pruning stage)</p>"


def _int8(extra: dict[str, Any] | None) -> dict[str, Any] | None:
    q = (extra or {}).get("quantization")
    return q if isinstance(q, dict) else None


def _reason(q: dict[str, Any]) -> str:
    reasons = [str(q[k]) for k in ("reason", "reduce_range_reason") if q.get(k)]
    return "; ".join(reasons) or _MISSING


def int8_markdown(rows: list[Any]) -> list[str]:
    """A "Quantization settings" section: what each quantization stage chose and why."""
    out: list[str] = []
    for row in rows:
        q = _int8(row.extra)
        if q is None:
            continue
        settings = ", ".join(f"{label} {q[key]}" for key, label in _INT8_KEYS if q.get(key) is not None)
        out.append(f"- **{row.name}**: {settings}. Why: {_reason(q)}")
    return ["", "## Quantization settings", "", *out] if out else []


def int8_html(rows: list[Any]) -> str:
    head = "".join(f"<th>{escape(label)}</th>" for _, label in _INT8_KEYS)
    body = []
    for row in rows:
        q = _int8(row.extra)
        if q is None:
            continue
        cells = "".join(f"<td>{escape(str(q.get(key, _MISSING)))}</td>" for key, _ in _INT8_KEYS)
        body.append(f"<tr><td>{escape(row.name)}</td>{cells}<td>{escape(_reason(q))}</td></tr>")
    if not body:
        return "<p>(no quantization stage)</p>"
    return f"<table><thead><tr><th>Stage</th>{head}<th>Why</th></tr></thead><tbody>{''.join(body)}</tbody></table>"


__all__ = ["int8_html", "int8_markdown", "layer_rows", "sparsity_html", "sparsity_markdown"]
