"""The "Structured pruning" report section, read from a prune stage's ``extra``: ``prune`` (ratio, targets, MACs
before/after) and ``prune_groups`` (per group: units kept of how many, cut or whole, and why), in report.md and
report.html."""

from __future__ import annotations

from html import escape
from typing import Any

_NOUNS = {"heads": "heads", "ffn": "FFN units", "channels": "channels", "neurons": "neurons"}


def _groups(extra: dict[str, Any] | None) -> list[dict[str, Any]]:
    groups = (extra or {}).get("prune_groups")
    return [g for g in groups if isinstance(g, dict)] if isinstance(groups, list) else []


def headline(record: dict[str, Any]) -> str:
    """One sentence: the options and what they did to the MACs."""
    parts = [f"ratio {record.get('ratio')}", f"targets {', '.join(map(str, record.get('targets', [])))}"]
    if record.get("target_macs") is not None:
        parts.append(f"target_macs {record['target_macs']}")
    if record.get("removed_layers"):
        parts.append(f"removed layers {', '.join(map(str, record['removed_layers']))}")
    if record.get("macs_before"):
        parts.append(f"MACs {record['macs_before']:,} → {record['macs_after']:,} (×{record['macs_kept']})")
    parts.append(f"{record.get('groups_cut', 0)} groups cut, {record.get('groups_whole', 0)} kept whole")
    return "; ".join(parts)


def _cells(g: dict[str, Any]) -> list[str]:
    unit = int(g.get("unit", 1))
    noun = _NOUNS.get(str(g.get("target")), str(g.get("target")))
    if unit > 1 and g.get("target") == "channels":
        noun += f" (groups of {unit})"
    elif g.get("status") == "frozen" and g.get("target") in ("ffn", "neurons"):
        noun = "outputs"
    kept = f"{g.get('kept')}/{g.get('units')}"
    return [str(g.get("group")), noun, kept, str(g.get("status")), str(g.get("reason") or "")]


def pruning_markdown(rows: list[Any]) -> list[str]:
    """A "Structured pruning" section: per prune stage, the headline and one table row per group."""
    out: list[str] = []
    for row in rows:
        record, groups = (row.extra or {}).get("prune"), _groups(row.extra)
        if not isinstance(record, dict) or not groups:
            continue
        out += ["", f"**{row.name}**: {headline(record)}", ""]
        out += ["| Group | Units | Kept | Outcome | Why |", "| --- | --- | ---: | --- | --- |"]
        for g in groups:
            name, noun, kept, status, why = (c.replace("|", "\\|") for c in _cells(g))
            out.append(f"| `{name}` | {noun} | {kept} | {status} | {why} |")
    return ["", "## Structured pruning", *out] if out else []


def pruning_html(rows: list[Any]) -> str:
    parts = []
    for row in rows:
        record, groups = (row.extra or {}).get("prune"), _groups(row.extra)
        if not isinstance(record, dict) or not groups:
            continue
        body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in _cells(g)) + "</tr>" for g in groups)
        parts.append(
            f"<p><b>{escape(row.name)}</b>: {escape(headline(record))}</p><table><thead><tr><th>Group</th>"
            f"<th>Units</th><th>Kept</th><th>Outcome</th><th>Why</th></tr></thead><tbody>{body}</tbody></table>"
        )
    return "\n".join(parts) or "<p>(no structured pruning stage)</p>"


__all__ = ["headline", "pruning_html", "pruning_markdown"]
