"""The comparison report of every stage: report.json, report.md and a self-contained report.html."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

from slimtune._io import write_text
from slimtune.errors import ConfigError, DataError
from slimtune.evaluate.plots import format_number, svg_scatter
from slimtune.evaluate.report_page import CSS, PAGE
from slimtune.evaluate.report_precision import html_section, markdown_lines, precision_summary
from slimtune.evaluate.report_pruning import pruning_html, pruning_markdown
from slimtune.evaluate.report_search import search_markdown
from slimtune.evaluate.report_sections import int8_html, int8_markdown, sparsity_html, sparsity_markdown
from slimtune.evaluate.report_warnings import html_warnings, markdown_warnings, ordered_warnings

_MISSING = "—"
_TIMES = "\N{MULTIPLICATION SIGN}"


@dataclass
class StageRow:
    """Measurements of one stage (baseline, pruned, quantized, exported...). ``precision``: each
    Linear/Conv layer's precision (``fp32``, ``int8``, ``w4a8 fake-quant``, ``binary``...), read from
    the artefact itself."""

    name: str
    artifact: str | None
    metrics: dict[str, Any]
    params: int
    nonzero_params: int
    bytes_on_disk: int
    macs: int
    latency_ms: dict[str, float]
    throughput: dict[str, float] | None = None
    peak_memory_mb: float | None = None
    parity: dict[str, float] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    precision: dict[str, str] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StageRow:
        names = {f.name for f in dataclasses.fields(cls)}
        known = {k: v for k, v in data.items() if k in names}
        unknown = {k: v for k, v in data.items() if k not in names}
        try:
            row = cls(**known)
        except TypeError as exc:
            raise DataError(f"report stage {data.get('name')!r} is malformed ({exc}); regenerate it") from exc
        row.extra = {**unknown, **(row.extra or {})}
        return row


def human_bytes(n: float | None) -> str:
    """Decimal units: ``1500`` -> ``1.5 kB``, ``4_000_000`` -> ``4 MB``."""
    if n is None:
        return _MISSING
    value = float(n)
    for div, unit in ((1e12, "TB"), (1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
        if abs(value) >= div:
            return f"{value / div:.3g} {unit}"
    return f"{int(value)} B"


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _ratio(value: Any, base: Any, smaller: str, larger: str) -> str:
    """``x3.2 smaller`` (with a multiplication sign) when ``value`` is below ``base``."""
    v, b = _num(value), _num(base)
    if v is None or b is None or v <= 0 or b <= 0:
        return _MISSING
    if math.isclose(v, b, rel_tol=0.005):
        return f"{_TIMES}1.0"
    return f"{_TIMES}{b / v:.1f} {smaller}" if v < b else f"{_TIMES}{v / b:.1f} {larger}"


def _pct(value: Any) -> str:
    v = _num(value)
    return _MISSING if v is None else f"{v * 100:.2f}%"


def _delta_pp(value: Any, base: Any) -> str:
    v, b = _num(value), _num(base)
    return _MISSING if v is None or b is None else f"{(v - b) * 100:+.2f} pp"


def _ms(value: Any) -> str:
    v = _num(value)
    if v is None:
        return _MISSING
    return f"{v:.0f}" if v >= 100 else f"{v:.3g}"


def _latency(row: StageRow, key: str) -> str:
    """The median in ms, with ± half the p10–p90 spread when the row recorded it (``1.23 ±8%``)."""
    text = _ms(row.latency_ms.get(key))
    spread = _num((row.extra.get("latency_spread") or {}).get(key))
    return text if spread is None or text == _MISSING else f"{text} ±{spread * 50:.0f}%"


def _parity(parity: dict[str, float] | None) -> str:
    if not parity:
        return _MISSING
    text = _pct(parity.get("argmax_agreement"))
    diff = _num(parity.get("max_abs_diff"))
    return text if diff is None else f"{text} (max Δ {diff:.2g})"


HEADERS = (
    "Stage",
    "Accuracy",
    "F1 (macro)",
    "Params",
    "Non-zeros",
    "Size on disk",
    "MACs",
    "Latency b1 (ms)",
    "Latency b32 (ms)",
    "Parity (argmax agreement)",
    "Precision",
)


def _cells(row: StageRow) -> list[str]:
    f1 = _num(row.metrics.get("f1_macro"))
    return [
        row.name,
        _pct(row.metrics.get("accuracy")),
        _MISSING if f1 is None else f"{f1:.4f}",
        format_number(row.params),
        format_number(row.nonzero_params),
        human_bytes(row.bytes_on_disk),
        format_number(row.macs),
        _latency(row, "batch1"),
        _latency(row, "batch32"),
        _parity(row.parity),
        precision_summary(row.precision),
    ]


def _ratio_cells(row: StageRow, base: StageRow) -> list[str]:
    f1, f1_base = _num(row.metrics.get("f1_macro")), _num(base.metrics.get("f1_macro"))
    return [
        f"↳ vs {base.name}",
        _delta_pp(row.metrics.get("accuracy"), base.metrics.get("accuracy")),
        _MISSING if f1 is None or f1_base is None else f"{f1 - f1_base:+.4f}",
        _ratio(row.params, base.params, "fewer", "more"),
        _ratio(row.nonzero_params, base.nonzero_params, "fewer", "more"),
        _ratio(row.bytes_on_disk, base.bytes_on_disk, "smaller", "larger"),
        _ratio(row.macs, base.macs, "fewer", "more"),
        _ratio(row.latency_ms.get("batch1"), base.latency_ms.get("batch1"), "faster", "slower"),
        _ratio(row.latency_ms.get("batch32"), base.latency_ms.get("batch32"), "faster", "slower"),
        "",
        "",
    ]


def _layout(rows: list[StageRow]) -> tuple[tuple[str, ...], Any, Any]:
    """Headers and cell makers: the classifier table, or the causal-LM one (perplexity, decode speed)."""
    from slimtune.evaluate.report_lm import LM_HEADERS, is_lm_rows, lm_cells, lm_ratio_cells

    if is_lm_rows(rows):
        return LM_HEADERS, lm_cells, lm_ratio_cells
    return HEADERS, _cells, _ratio_cells


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy arrays/scalars, torch tensors
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


class Report:
    """An ordered list of ``StageRow``s (the first is the baseline) plus an environment dict."""

    def __init__(self, env: dict[str, Any] | None = None, rows: list[StageRow] | None = None) -> None:
        self.env: dict[str, Any] = dict(env or {})
        self._rows: list[StageRow] = []
        for row in rows or []:
            self.add(row)

    @property
    def rows(self) -> list[StageRow]:
        return list(self._rows)

    def add(self, row: StageRow) -> None:
        if any(r.name == row.name for r in self._rows):
            raise ConfigError(f"the report already has a stage named '{row.name}'; give each stage a unique name")
        self._rows.append(row)

    def to_dict(self) -> dict[str, Any]:
        return {"stages": [row.to_dict() for row in self._rows], "env": self.env, "warnings": self.warnings()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        if not isinstance(data, dict) or not isinstance(data.get("stages"), list):
            raise DataError("a report needs a 'stages' list; is this a slimtune report.json?")
        return cls(env=data.get("env") or {}, rows=[StageRow.from_dict(s) for s in data["stages"]])

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Report:
        """Read ``report.json`` (or the ``report.json`` inside a folder)."""
        p = Path(path)
        if p.is_dir():
            p = p / "report.json"
        if not p.is_file():
            raise DataError(f"no report at '{p}'; pass the report.json written by Report.write")
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise DataError(f"'{p}' is not valid JSON ({exc}); regenerate the report") from exc
        return cls.from_dict(data)

    def warnings(self) -> list[str]:
        """Every warning line: accuracy drops first, then unreliable timings (a loaded machine: one line)."""
        return ordered_warnings(self._rows)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=_json_default) + "\n"

    def table(self) -> str:
        """The stage table alone (Markdown), as the CLI prints it."""

        def line(cells: list[str]) -> str:
            return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

        headers, cells, ratio_cells = _layout(self._rows)
        out = [line(list(headers)), line(["---"] * len(headers))]
        for i, row in enumerate(self._rows):
            out.append(line(cells(row)))
            if i:
                out.append(line(ratio_cells(row, self._rows[0])))
        return "\n".join(out)

    def markdown(self) -> str:
        out = ["# slimtune report", *markdown_warnings(self._rows), "", self.table(), *markdown_lines(self._rows)]
        out += [*pruning_markdown(self._rows), *sparsity_markdown(self._rows), *int8_markdown(self._rows)]
        out += search_markdown(self._rows)
        if self.env:
            out += ["", "## Environment", ""]
            out += [f"- **{k}**: {_env_value(v)}" for k, v in self.env.items()]
        return "\n".join(out) + "\n"

    def html(self) -> str:
        """A self-contained HTML page: table, plots, per-stage details and the environment."""
        headers, cells, ratio_cells = _layout(self._rows)
        head = "".join(f"<th>{escape(h)}</th>" for h in headers)
        body = []
        for i, row in enumerate(self._rows):
            body.append(_tr(cells(row)))
            if i:
                body.append(_tr(ratio_cells(row, self._rows[0]), css="ratio"))
        details = [
            _tr([r.name, r.artifact or _MISSING, _throughput(r), _mib(r.peak_memory_mb), _env_value(r.extra)])
            for r in self._rows
        ]
        env = [_tr([k, _env_value(v)]) for k, v in self.env.items()]
        return PAGE.format(
            css=CSS,
            warnings=html_warnings(self._rows),
            head=head,
            body="\n".join(body),
            plots="\n".join(f'<figure class="plot">{svg}</figure>' for svg in self.plots()),
            details="\n".join(details),
            precision=html_section(self._rows),
            pruning=pruning_html(self._rows),
            sparsity=sparsity_html(self._rows),
            int8=int8_html(self._rows),
            env="\n".join(env) or _tr(["(none)", ""]),
        )

    def write(self, out_dir: str | os.PathLike[str]) -> dict[str, Path]:
        """Write report.json, report.md and report.html (each atomically) into ``out_dir``."""
        out = Path(out_dir)
        paths = {"json": out / "report.json", "md": out / "report.md", "html": out / "report.html"}
        write_text(paths["json"], self.to_json())
        write_text(paths["md"], self.markdown())
        write_text(paths["html"], self.html())
        return paths

    def plots(self) -> list[str]:
        """The two SVG plots: accuracy vs size on disk (log x) and accuracy vs batch-1 latency
        (for causal LMs: perplexity vs size and vs decode latency)."""
        from slimtune.evaluate.report_lm import is_lm_rows, lm_plots

        if is_lm_rows(self._rows):
            return lm_plots(self._rows)
        size_pts = [(r.name, _num(r.bytes_on_disk), _accuracy_pct(r)) for r in self._rows]
        lat_pts = [(r.name, _num(r.latency_ms.get("batch1")), _accuracy_pct(r)) for r in self._rows]
        return [
            svg_scatter(
                _complete(size_pts),
                x_label="Size on disk",
                y_label="Accuracy (%)",
                title="Accuracy vs size on disk",
                log_x=True,
                x_format=human_bytes,
                standalone=False,
            ),
            svg_scatter(
                _complete(lat_pts),
                x_label="Latency, batch 1 (ms)",
                y_label="Accuracy (%)",
                title="Accuracy vs batch-1 latency",
                standalone=False,
            ),
        ]


def _accuracy_pct(row: StageRow) -> float | None:
    acc = _num(row.metrics.get("accuracy"))
    return None if acc is None else acc * 100


def _complete(points: list[tuple[str, float | None, float | None]]) -> list[tuple[str, float, float]]:
    return [(n, x, y) for n, x, y in points if x is not None and y is not None]


def _env_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=_json_default, ensure_ascii=False)


def _throughput(row: StageRow) -> str:
    if not row.throughput:
        return _MISSING
    return ", ".join(f"{k}: {v:.4g}/s" for k, v in row.throughput.items() if _num(v) is not None) or _MISSING


def _mib(value: float | None) -> str:
    v = _num(value)
    return _MISSING if v is None else f"{v:.1f} MiB"


def _tr(cells: list[str], css: str = "") -> str:
    cls = f' class="{css}"' if css else ""
    return f"<tr{cls}>" + "".join(f"<td>{escape(c)}</td>" for c in cells) + "</tr>"
