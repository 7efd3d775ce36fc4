"""Hand-written SVG scatter plots (no plotting library)."""

from __future__ import annotations

import math
from collections.abc import Callable
from html import escape

Formatter = Callable[[float], str]

_W, _H = 560, 380
_LEFT, _RIGHT, _TOP, _BOTTOM = 72, 28, 44, 60
_PAD = 14  # inner margin so points never sit on the axes
_COLOR = "#2563eb"


def format_number(value: float) -> str:
    """Compact number: ``1.5k``, ``12M``, ``0.25``."""
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= div:
            return f"{value / div:.3g}{suffix}"
    return f"{value:.3g}"


def _nice_step(span: float, target: int = 5) -> float:
    raw = span / target
    base = 10 ** math.floor(math.log10(raw))
    for mult in (1, 2, 2.5, 5, 10):
        if raw <= mult * base:
            return mult * base
    return 10 * base


def _linear_axis(values: list[float]) -> tuple[float, float, list[float]]:
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    if hi == lo:
        pad = max(abs(lo) * 0.1, 1.0)
        lo, hi = lo - pad, hi + pad
    step = _nice_step(hi - lo)
    lo, hi = math.floor(lo / step) * step, math.ceil(hi / step) * step
    count = round((hi - lo) / step)
    return lo, hi, [round(lo + i * step, 12) + 0.0 for i in range(count + 1)]


def _log_axis(values: list[float]) -> tuple[float, float, list[float]]:
    lo_exp = math.floor(math.log10(min(values))) if values else 0
    hi_exp = math.ceil(math.log10(max(values))) if values else 1
    if hi_exp == lo_exp:
        hi_exp += 1
    mults = (1, 2, 5) if hi_exp - lo_exp <= 2 else (1,)
    ticks = [m * 10.0**e for e in range(lo_exp, hi_exp) for m in mults] + [10.0**hi_exp]
    return 10.0**lo_exp, 10.0**hi_exp, ticks


def _text(x: float, y: float, text: str, *, anchor: str = "middle", extra: str = "") -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}"{extra}>{escape(text)}</text>'


def svg_scatter(
    points: list[tuple[str, float, float]],
    *,
    x_label: str,
    y_label: str,
    title: str,
    log_x: bool = False,
    x_format: Formatter | None = None,
    y_format: Formatter | None = None,
    standalone: bool = True,
) -> str:
    """An SVG scatter plot of ``(label, x, y)`` points joined by a line in the given order.

    Points with a non-finite coordinate (or ``x <= 0`` when ``log_x``) are left out.
    ``standalone=False`` omits the ``xmlns`` attribute, for inlining into HTML5.
    """
    pts = [
        (label, float(x), float(y))
        for label, x, y in points
        if x is not None and y is not None and math.isfinite(x) and math.isfinite(y) and (x > 0 or not log_x)
    ]
    xs = [math.log10(p[1]) if log_x else p[1] for p in pts]
    if log_x:
        x_lo, x_hi, x_ticks = _log_axis([p[1] for p in pts])
        x_lo, x_hi = math.log10(x_lo), math.log10(x_hi)
        x_tick_pos = [math.log10(t) for t in x_ticks]
    else:
        x_lo, x_hi, x_ticks = _linear_axis(xs)
        x_tick_pos = x_ticks
    y_lo, y_hi, y_ticks = _linear_axis([p[2] for p in pts])
    fx, fy = x_format or format_number, y_format or format_number
    plot_w, plot_h = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM

    def px(v: float) -> float:
        return _LEFT + _PAD + (v - x_lo) / (x_hi - x_lo) * (plot_w - 2 * _PAD)

    def py(v: float) -> float:
        return _TOP + plot_h - _PAD - (v - y_lo) / (y_hi - y_lo) * (plot_h - 2 * _PAD)

    ns = ' xmlns="http://www.w3.org/2000/svg"' if standalone else ""
    out = [
        f'<svg{ns} width="{_W}" height="{_H}" viewBox="0 0 {_W} {_H}" role="img" '
        f'aria-label="{escape(title)}" font-family="sans-serif" font-size="11">',
        f"<title>{escape(title)}</title>",
        f'<rect x="0" y="0" width="{_W}" height="{_H}" fill="#ffffff"/>',
        _text(_W / 2, 22, title, extra=' font-size="14" font-weight="bold"'),
    ]
    bottom, right = _TOP + plot_h, _LEFT + plot_w
    for value, pos in zip(x_ticks, x_tick_pos):
        x = px(pos)
        out.append(f'<line x1="{x:.1f}" y1="{_TOP}" x2="{x:.1f}" y2="{bottom}" stroke="#e5e7eb"/>')
        out.append(f'<line x1="{x:.1f}" y1="{bottom}" x2="{x:.1f}" y2="{bottom + 5}" stroke="#374151"/>')
        out.append(_text(x, bottom + 18, fx(value)))
    for value in y_ticks:
        y = py(value)
        out.append(f'<line x1="{_LEFT}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}" stroke="#e5e7eb"/>')
        out.append(f'<line x1="{_LEFT - 5}" y1="{y:.1f}" x2="{_LEFT}" y2="{y:.1f}" stroke="#374151"/>')
        out.append(_text(_LEFT - 8, y + 4, fy(value), anchor="end"))
    out.append(f'<polyline points="{_LEFT},{_TOP} {_LEFT},{bottom} {right},{bottom}" fill="none" stroke="#374151"/>')
    out.append(_text(_LEFT + plot_w / 2, _H - 16, x_label + (" (log scale)" if log_x else "")))
    y_mid = _TOP + plot_h / 2
    out.append(_text(18, y_mid, y_label, extra=f' transform="rotate(-90 18 {y_mid:.1f})"'))
    coords = [(px(x), py(p[2])) for p, x in zip(pts, xs)]
    if len(coords) > 1:
        line = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
        out.append(f'<polyline points="{line}" fill="none" stroke="{_COLOR}" stroke-opacity="0.5"/>')
    for (label, x_raw, y_raw), (x, y) in zip(pts, coords):
        out.append(
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4.5" fill="{_COLOR}">'
            f"<title>{escape(f'{label}: {fx(x_raw)}, {fy(y_raw)}')}</title></circle>"
        )
        anchor, dx = ("end", -7) if x > _LEFT + plot_w * 0.75 else ("start", 7)
        out.append(_text(x + dx, y - 7, label, anchor=anchor))
    if not pts:
        out.append(_text(_LEFT + plot_w / 2, y_mid, "no data", extra=' fill="#6b7280"'))
    out.append("</svg>")
    return "\n".join(out)
