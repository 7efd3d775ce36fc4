"""The LM search's HTML page: perplexity vs ONNX Runtime decode latency and perplexity vs bytes (the classifier
page's plots with perplexity on the y axis, lower is better), the budget as a dashed line, the model itself as
a diamond, the chosen candidate ringed; and a table of every candidate."""

from __future__ import annotations

import json
from html import escape
from typing import Any

from slimtune.evaluate.report import human_bytes
from slimtune.search.pareto import scatter


def _hover(rec: dict[str, Any]) -> str:
    lat = (rec.get("latency_ms") or {}).get("batch1")
    return "\n".join([
        f"{rec['name']} ({rec['status']})",
        f"perplexity {rec['val_perplexity']:.4g} ({rec.get('ppl_increase', 0.0):+.1f}%)"
        + (", recovered by distillation" if rec.get("recovered") else ""),
        f"{human_bytes(rec.get('bytes'))}" + ("" if rec.get("measured") else " (estimated)")
        + (f", decode {lat:.4g} ms/token" if lat is not None else ""),
        json.dumps(rec["config"], sort_keys=True),
    ])  # fmt: skip


def _num(v: Any, fmt: str = ".4g") -> str:
    return "" if v is None else format(v, fmt)


def lm_search_page(result: dict[str, Any]) -> str:
    """The whole page for a finished LM ``search.json`` dict."""
    teacher, cands, cfg = result["teacher"], result["candidates"], result["config"]
    ceiling = teacher["val_perplexity"] * (1 + cfg["max_ppl_increase"] / 100)
    common = {"floor": ceiling, "y_key": "val_perplexity", "y_scale": 1.0, "hover": _hover,
              "y_label": "validation perplexity (lower is better)"}  # fmt: skip
    plots = [
        scatter(cands, teacher, x_key="latency", x_label="ONNX Runtime decode, batch 1 (ms/token)",
                title="perplexity vs decode latency", **common),
        scatter(cands, teacher, x_key="bytes", x_label="bytes (measured when exported, else estimated)",
                title="perplexity vs bytes", **common),
    ]  # fmt: skip
    head = (
        "<tr><th>candidate</th><th>status</th><th>val perplexity</th><th>increase</th><th>test perplexity</th>"
        "<th>recovered</th><th>bytes</th><th>decode ms/token (b1)</th><th>seconds</th></tr>"
    )
    rows = []
    for r in cands:
        cells = [
            r["name"],
            r["status"] + (f" ({r['reason']})" if r.get("reason") else ""),
            _num(r.get("val_perplexity")),
            "" if r.get("ppl_increase") is None else f"{r['ppl_increase']:+.1f}%",
            _num(r.get("test_perplexity")),
            "yes" if r.get("recovered") else "",
            "" if r.get("bytes") is None else human_bytes(r["bytes"]) + ("" if r.get("measured") else " (est.)"),
            _num((r.get("latency_ms") or {}).get("batch1")),
            f"{r.get('seconds', 0):.1f}",
        ]
        rows.append(
            f'<tr title="{escape(json.dumps(r["config"], sort_keys=True))}">'
            + "".join(f"<td>{escape(c)}</td>" for c in cells)
            + "</tr>"
        )
    message = result.get("outcome", {}).get("message", "")
    return (
        "<!doctype html>\n<html><head><meta charset='utf-8'><title>slimtune LM search</title><style>"
        "body{font-family:sans-serif;margin:24px}table{border-collapse:collapse}td,th{border:1px solid #ddd;"
        "padding:3px 8px;font-size:13px}.plots{display:flex;flex-wrap:wrap;gap:12px}</style></head><body>"
        f"<h1>Budget search (language model): {escape(cfg['objective'])} within "
        f"{cfg['max_ppl_increase']:g}% perplexity</h1><p>{escape(message)}</p>"
        f"<div class='plots'>{''.join(plots)}</div><p>Hover a point for its config. Blue: the Pareto front of the "
        "exported candidates; red ring: chosen; dashed line: the perplexity budget; diamond: the model itself. "
        "Only exported candidates have a measured latency.</p>"
        f"<table>{head}{''.join(rows)}</table></body></html>\n"
    )


__all__ = ["lm_search_page"]
