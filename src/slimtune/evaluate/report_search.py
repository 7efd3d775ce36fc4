"""The report's "Budget search" section: for each search stage, the outcome in words, the front, and (LM search)
every candidate with its perplexity change, bytes and measured decode latency; search.html has the plots."""

from __future__ import annotations

from typing import Any

_MISSING = "—"


def _cell(value: Any, fmt: str) -> str:
    return _MISSING if value is None else format(value, fmt)


def search_markdown(rows: list[Any]) -> list[str]:
    """One block per stage whose ``extra["search"]`` holds a search summary."""
    out: list[str] = []
    for row in rows:
        summary = (row.extra or {}).get("search")
        if not isinstance(summary, dict):
            continue
        out += ["", f"**{row.name}**: {summary.get('message', '')}", ""]
        out.append(
            f"Front: {', '.join(summary.get('front') or []) or _MISSING}; {summary.get('candidates')} candidates."
        )
        table = summary.get("rows")
        if isinstance(table, list) and table:
            out += [
                "",
                "| candidate | status | perplexity | Δ | bytes | decode ms/token |",
                "|---|---|---:|---:|---:|---:|",
            ]
            for r in table:
                inc = r.get("ppl_increase")
                out.append(
                    f"| {r.get('name')} | {r.get('status')} | {_cell(r.get('val_perplexity'), '.4g')} | "
                    f"{_MISSING if inc is None else f'{inc:+.1f}%'} | {_cell(r.get('bytes'), ',')} | "
                    f"{_cell(r.get('decode_ms'), '.3g')} |"
                )
    return ["", "## Budget search", *out] if out else []


__all__ = ["search_markdown"]
