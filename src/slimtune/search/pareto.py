"""The Pareto front (accuracy up, cost down) and the search's HTML page: accuracy vs latency and
accuracy vs bytes, every candidate a point (hover shows its config), the front joined by a line, the
budget as a dashed line, the teacher as a diamond and the chosen candidate ringed in red."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from html import escape
from typing import Any

from slimtune.evaluate.plots import _linear_axis, _log_axis, format_number
from slimtune.evaluate.report import human_bytes

_W, _H, _L, _R, _T, _B = 600, 400, 70, 24, 40, 56
_COLORS = {"chosen": "#dc2626", "front": "#2563eb", "pruned-early": "#d1d5db"}


def pareto_front(points: Sequence[tuple[str, float, float]]) -> list[str]:
    """Ids of the points ``(id, accuracy, cost)`` no other point beats on both (equal points all stay)."""
    out = []
    for pid, acc, cost in points:
        beaten = any(a >= acc and c <= cost and (a > acc or c < cost) for _, a, c in points)
        if not beaten and math.isfinite(cost):
            out.append(pid)
    return out


def _hover(rec: dict[str, Any]) -> str:
    lat = (rec.get("latency_ms") or {}).get("batch1")
    lines = [
        f"{rec['name']} ({rec['status']})",
        f"val {100 * rec['val_accuracy']:.2f}%"
        + (f", test {100 * rec['test_accuracy']:.2f}%" if rec.get("test_accuracy") is not None else ""),
        f"{human_bytes(rec.get('bytes'))}, {format_number(rec.get('macs') or 0)} MACs"
        + (f", {lat:.4g} ms at batch 1" if lat is not None else ""),
        f"{rec.get('epochs', 0)} recovery epochs, {rec.get('seconds', 0):.1f} s",
        json.dumps(rec["config"], sort_keys=True),
    ]
    return "\n".join(lines)


def scatter(
    records: Sequence[dict[str, Any]],
    teacher: dict[str, Any],
    *,
    x_key: str,
    x_label: str,
    floor: float,
    title: str,
    y_key: str = "val_accuracy",
    y_scale: float = 100.0,
    y_label: str = "validation accuracy (%)",
    hover: Any = None,
) -> str:
    """One inline SVG: accuracy (%) against ``x_key`` (log scale) for every record that has it (``y_key``,
    ``y_scale``, ``y_label``: another quality measure, e.g. perplexity; ``floor``: the budget line there)."""
    hover = hover or _hover

    def x_of(rec: dict[str, Any]) -> float | None:
        if x_key == "latency":
            v = (rec.get("latency_ms") or {}).get("batch1", rec.get("quick_latency_ms"))
        else:
            v = rec.get(x_key)
        return float(v) if v is not None and v > 0 else None

    pts: list[tuple[dict[str, Any], float, float]] = []
    for r in records:
        x = x_of(r) if r.get(y_key) is not None else None
        if x is not None:
            pts.append((r, x, y_scale * r[y_key]))
    tx = x_of(teacher)
    xs = [x for _, x, _ in pts] + ([tx] if tx else [])
    ys = [y for _, _, y in pts] + [y_scale * teacher[y_key], floor]
    if not xs:
        return f"<p>{escape(title)}: no measurements</p>"
    x_lo, x_hi, x_ticks = _log_axis(xs)
    y_lo, y_hi, y_ticks = _linear_axis(ys)
    pw, ph = _W - _L - _R, _H - _T - _B

    def px(v: float) -> float:
        return _L + 10 + (math.log10(v) - math.log10(x_lo)) / (math.log10(x_hi) - math.log10(x_lo)) * (pw - 20)

    def py(v: float) -> float:
        return _T + ph - 10 - (v - y_lo) / (y_hi - y_lo) * (ph - 20)

    svg = [
        f'<svg width="{_W}" height="{_H}" viewBox="0 0 {_W} {_H}" font-family="sans-serif" font-size="11" '
        f'role="img" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        f'<text x="{_W / 2}" y="22" text-anchor="middle" font-size="14" font-weight="bold">{escape(title)}</text>',
        f'<polyline points="{_L},{_T} {_L},{_T + ph} {_L + pw},{_T + ph}" fill="none" stroke="#374151"/>',
    ]
    for t in x_ticks:
        svg.append(f'<text x="{px(t):.1f}" y="{_T + ph + 16}" text-anchor="middle">{format_number(t)}</text>')
    for t in y_ticks:
        svg.append(f'<line x1="{_L}" y1="{py(t):.1f}" x2="{_L + pw}" y2="{py(t):.1f}" stroke="#e5e7eb"/>')
        svg.append(f'<text x="{_L - 6}" y="{py(t) + 4:.1f}" text-anchor="end">{format_number(t)}</text>')
    svg.append(f'<text x="{_L + pw / 2}" y="{_H - 12}" text-anchor="middle">{escape(x_label)} (log scale)</text>')
    svg.append(
        f'<text x="16" y="{_T + ph / 2}" transform="rotate(-90 16 {_T + ph / 2})" '
        f'text-anchor="middle">{escape(y_label)}</text>'
    )
    svg.append(
        f'<line x1="{_L}" y1="{py(floor):.1f}" x2="{_L + pw}" y2="{py(floor):.1f}" stroke="#dc2626" '
        f'stroke-dasharray="5,4"><title>budget: {floor:.2f}%</title></line>'
    )
    line = sorted((x, y) for r, x, y in pts if r["status"] in ("front", "chosen"))
    if len(line) > 1:
        coords = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in line)
        svg.append(f'<polyline points="{coords}" fill="none" stroke="#2563eb" stroke-opacity="0.6"/>')
    for r, x, y in pts:
        color = _COLORS.get(r["status"], "#6b7280")
        ring = ' stroke="#dc2626" stroke-width="3" r="7"' if r["status"] == "chosen" else ' r="4.5"'
        svg.append(
            f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}"{ring} fill="{color}" data-id="{r["id"]}">'
            f"<title>{escape(hover(r))}</title></circle>"
        )
        if r["status"] in ("front", "chosen"):
            svg.append(f'<text x="{px(x) + 7:.1f}" y="{py(y) - 7:.1f}">{escape(r["name"])}</text>')
    if tx:
        cx, cy = px(tx), py(y_scale * teacher[y_key])
        svg.append(
            f'<path d="M{cx:.1f},{cy - 6:.1f} L{cx + 6:.1f},{cy:.1f} L{cx:.1f},{cy + 6:.1f} '
            f'L{cx - 6:.1f},{cy:.1f} Z" fill="#111827"><title>teacher (fp32 in ONNX Runtime)</title></path>'
        )
    svg.append("</svg>")
    return "\n".join(svg)


def search_page(result: dict[str, Any]) -> str:
    """The whole page for a finished ``search.json`` dict."""
    teacher, cands = result["teacher"], result["candidates"]
    floor = 100 * teacher["val_accuracy"] - result["config"]["max_accuracy_drop"]
    plots = [
        scatter(
            cands,
            teacher,
            x_key="latency",
            x_label="ONNX Runtime latency, batch 1 (ms)",
            floor=floor,
            title="accuracy vs latency",
        ),
        scatter(cands, teacher, x_key="bytes", x_label="bytes on disk", floor=floor, title="accuracy vs bytes"),
    ]
    head = (
        "<tr><th>candidate</th><th>status</th><th>epochs</th><th>val</th><th>test</th><th>bytes</th>"
        "<th>MACs</th><th>latency b1 / b8 (ms)</th><th>seconds</th></tr>"
    )
    rows = []
    for r in cands:
        lat = r.get("latency_ms") or {}
        cells = [
            r["name"],
            r["status"] + (f" ({r['reason']})" if r.get("reason") else ""),
            str(r.get("epochs", "")),
            _pct(r.get("val_accuracy")),
            _pct(r.get("test_accuracy")),
            human_bytes(r.get("bytes"))
            + (f" (stored {human_bytes(r['compressed_bytes'])})" if r.get("compressed_bytes") else ""),
            format_number(r["macs"]) if r.get("macs") is not None else "",
            " / ".join(f"{lat[k]:.4g}" for k in ("batch1", "batch8") if k in lat)
            or (f"≈ {r['quick_latency_ms']:.4g} (short timing)" if r.get("quick_latency_ms") else ""),
            f"{r.get('seconds', 0):.1f}",
        ]
        rows.append(
            f'<tr title="{escape(json.dumps(r["config"], sort_keys=True))}">'
            + "".join(f"<td>{escape(c)}</td>" for c in cells)
            + "</tr>"
        )
    message = result.get("outcome", {}).get("message", "")
    return (
        "<!doctype html>\n<html><head><meta charset='utf-8'><title>slimtune search</title><style>"
        "body{font-family:sans-serif;margin:24px}table{border-collapse:collapse}td,th{border:1px solid #ddd;"
        "padding:3px 8px;font-size:13px}.plots{display:flex;flex-wrap:wrap;gap:12px}</style></head><body>"
        f"<h1>Budget search: {escape(result['config']['objective'])} within "
        f"{result['config']['max_accuracy_drop']:g} pt</h1><p>{escape(message)}</p>"
        f"<div class='plots'>{''.join(plots)}</div><p>Hover a point for its config. Blue: the Pareto front; "
        "red ring: chosen; dashed line: the accuracy budget; diamond: the teacher.</p>"
        f"<table>{head}{''.join(rows)}</table></body></html>\n"
    )


def _pct(v: float | None) -> str:
    return "" if v is None else f"{100 * v:.2f}%"


__all__ = ["pareto_front", "scatter", "search_page"]
