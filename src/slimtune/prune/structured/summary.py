"""What a structured pruning run did, group by group: what was cut, what stayed whole, and why — one line
per group for the log (``slimtune.prune``) and a JSON record for the recipe report and model card."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from slimtune.prune.structured.config import StructuredPruneConfig
from slimtune.prune.structured.graph import Group

NOUNS = {"heads": "heads", "ffn": "FFN units", "channels": "channels", "neurons": "neurons"}


@dataclass(frozen=True)
class Outcome:
    """One group: ``kept`` of its ``units``; ``status`` 'cut', 'whole' (asked for, nothing removed), 'frozen'
    (never cut: the trace found it unsafe), 'excluded' or 'not targeted'; ``reason`` says why it stayed whole
    or kept more than asked ('' when cut as asked)."""

    group: str
    target: str
    units: int
    kept: int
    status: str
    reason: str = ""
    unit: int = 1  # channels per unit: a grouped conv's group (a head's size is not shown)

    def line(self) -> str:
        noun = NOUNS.get(self.target, self.target)
        if self.unit > 1 and self.target == "channels":
            noun = f"channels (groups of {self.unit})"
        elif self.status == "frozen" and self.target in ("ffn", "neurons"):
            noun = "outputs"  # e.g. a transformer's hidden size, which every layer adds to
        head = f"{self.group} {noun}: "
        if self.status in ("frozen", "excluded", "not targeted"):
            head += f"{self.status}, kept {self.units}/{self.units}"
        else:
            head += f"kept {self.kept}/{self.units}"
        return head + (f" — {self.reason}" if self.reason else "")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _multiple_source(config: StructuredPruneConfig, target: str, multiple: int) -> str:
    if target == "channels" and multiple != config.round_to:
        if config.channel_round_to == "auto":
            return "channel_round_to auto: this CPU's ONNX Runtime channel block"
        return f"channel_round_to {config.channel_round_to}"
    return f"round_to {config.round_to}"


def _why(group: Group, kept: int, config: StructuredPruneConfig, ratio: float) -> str:
    """Why a planned group kept more units than ``ratio`` asks ('' when it kept exactly that)."""
    n, noun = group.units, NOUNS.get(group.target, group.target)
    if config.target_latency is not None:
        return "" if kept < n else f"the latency budget (target_latency {config.target_latency:g}) is met without it"
    if config.target_macs is not None:
        return "" if kept < n else f"the MAC budget (target_macs {config.target_macs:g}) is met without cutting it"
    if config.global_ranking:
        return "" if kept < n else "global ranking removed none of its units (they outscore the removed ones)"
    asked = n - math.floor(ratio * n + 1e-9)
    least = max(asked, min(config.min_keep, n))
    if asked == n and kept == n:
        return f"ratio {ratio:g} of {n} {noun} is less than one unit"
    if kept == asked:
        return ""
    if kept == least:
        return f"min_keep {config.min_keep}"
    multiple = config.multiple(group.target, n, group.unit)
    source = _multiple_source(config, group.target, multiple)
    if kept == n and multiple >= n:
        return f"{source} exceeds its {n} {noun}" if multiple > n else f"{source} equals its {n} {noun}"
    return f"{least} rounded up to a multiple of {multiple} ({source})"


def outcomes(
    every: list[Group],
    kept: dict[int, int],
    excluded: dict[int, str],
    unscored: set[int],
    config: StructuredPruneConfig,
    ratio: float,
) -> list[Outcome]:
    """One outcome per group of ``every``: ``kept`` maps planned groups (by id) to their kept units,
    ``excluded`` groups to the pattern that excluded them, ``unscored`` those the importance did not apply to."""
    out = []
    for g in every:
        if g.frozen:
            more = f" (and {len(g.frozen) - 1} more)" if len(g.frozen) > 1 else ""
            out.append(Outcome(g.name, g.target, g.units, g.units, "frozen", g.frozen[0] + more, g.unit))
        elif g.target not in config.unit_targets:
            out.append(
                Outcome(g.name, g.target, g.units, g.units, "not targeted", f"'{g.target}' is not in targets", g.unit)
            )
        elif id(g) in excluded:
            out.append(
                Outcome(g.name, g.target, g.units, g.units, "excluded", f"exclude pattern {excluded[id(g)]!r}", g.unit)
            )
        elif id(g) in unscored:
            why = f"importance '{config.importance}' does not apply to it"
            if config.importance == "bn-scale":
                why += " (no BatchNorm follows it)"
            out.append(Outcome(g.name, g.target, g.units, g.units, "whole", why, g.unit))
        elif id(g) in kept:
            n = kept[id(g)]
            status = "cut" if n < g.units else "whole"
            out.append(Outcome(g.name, g.target, g.units, n, status, _why(g, n, config, ratio), g.unit))
    return out


def record(
    config: StructuredPruneConfig,
    result: Any,
    macs: tuple[int, int] | None,
) -> dict[str, Any]:
    """The JSON summary of a run (``StructuredResult.summary``): options, MACs before/after, counts."""
    rows = result.outcomes
    out: dict[str, Any] = {
        "method": "structured",
        "ratio": round(result.ratio, 4),
        "targets": list(config.targets),
    }
    if config.target_macs is not None:
        out["target_macs"] = config.target_macs
    if config.target_latency is not None:
        out["target_latency"] = config.target_latency
    if result.latency is not None:
        out["latency_ms_predicted"] = {"before": round(result.latency[0], 4), "after": round(result.latency[1], 4)}
        out["latency_setting"] = {"batch": config.latency_batch, "threads": config.latency_threads}
    if "layers" in config.targets:
        out["layers_ratio"] = config.layers_ratio
        out["removed_layers"] = list(result.removed_layers)
    if macs is not None:
        before, after = macs
        out.update(macs_before=before, macs_after=after, macs_kept=round(after / before, 4) if before else None)
    out["groups_cut"] = sum(o.status == "cut" for o in rows)
    out["groups_whole"] = sum(o.status != "cut" for o in rows)
    return out


def lines(result: Any, macs: tuple[int, int] | None) -> list[str]:
    """The log lines of a run: a headline, the removed layers, then one line per group."""
    config = result.config
    head = "structured pruning" + (f" (ratio {result.ratio:.3g})" if config is None or config.unit_targets else "")
    if macs is not None and macs[0]:
        head += f": MACs {macs[0]:,} → {macs[1]:,} (×{macs[1] / macs[0]:.2f})"
    latency = getattr(result, "latency", None)
    if latency is not None and latency[0]:
        head += f", predicted ORT latency {latency[0]:.3g} → {latency[1]:.3g} ms (×{latency[1] / latency[0]:.2f})"
    rows = result.outcomes
    head += f"; {sum(o.status == 'cut' for o in rows)} groups cut, {sum(o.status != 'cut' for o in rows)} whole"
    out = [head]
    out += [f"{name}: removed (whole layer)" for name in result.removed_layers]
    return out + [o.line() for o in rows]
