"""The Markdown of ``lm_smoothquant.py``'s JSON: the table, the goals (met / not met, with numbers), and what each
variant chose (α, per-group α, the fp32 fallback)."""

from __future__ import annotations

import json
from typing import Any


def _speed(r: dict[str, Any], k: str, digits: int) -> str:
    return "-" if k not in r else f"{r[k]:.{digits}f} (×{r[k + '_x']:.2f})"


def _alpha(r: dict[str, Any]) -> str:
    info = r.get("info", {})
    if r.get("alpha") == "per-group":
        return f"per group (mean {info.get('alpha_mean') or 0:.2f})"
    return "-" if r.get("alpha") is None else f"{r['alpha']:g}"


def _fallback(r: dict[str, Any]) -> str:
    return str(len(r.get("info", {}).get("fallback_units", [])))


def markdown(result: dict[str, Any]) -> str:
    setup, rows = result["setup"], result["rows"]
    timed = "decode_b1" in rows[0]
    loads = setup.get("load_average_speed")
    under_load = timed and (setup.get("speed_threads") == 1 or max(loads[0][0], loads[1][0]) >= 2.5)
    lines = [
        "# SmolLM2-135M: SmoothQuant W8A8 vs plain int8 vs fp32 in ONNX Runtime",
        "",
        f"Setup: {json.dumps(setup, default=str)}.",
        "",
        f"Perplexity of each ONNX file on the same {setup['eval']} test-play windows × {setup['window']} tokens "
        f"({setup.get('eval_tokens')} tokens; ORT at {setup['quality_threads']} thread). α, the fallback ranking and "
        f"`fallback: auto` use {setup['val']} held-out train windows (W8A8 simulated in PyTorch); calibration "
        f"{setup['calib']} train windows. Speed: `lm_bench`, 64-token prompts, 32 new tokens, medians of "
        f"{setup.get('rounds')} interleaved rounds at {setup.get('speed_threads')} ORT threads"
        + (" — **measured under load** (shared 2-core machine), ratios indicative only." if under_load else ".")
        if timed else "Speed: not measured yet (`--phase speed`).",
        "",
        "| variant | α | fp32 MatMuls | ppl | Δ vs fp32 | MB | decode b1 tok/s (×) | decode b8 (×) | prefill b8 (×) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for r in rows:
        mb = f"{r['mb']:.1f}" if "mb" in r else "-"
        lines.append(f"| {r['variant']} | {_alpha(r)} | {_fallback(r) if r['variant'] != 'fp32' else 'all'} | "
                     f"{r['perplexity']:.3f} | {r['delta_pct']:+.2f}% | {mb} | {_speed(r, 'decode_b1', 1)} | "
                     f"{_speed(r, 'decode_b8', 1)} | {_speed(r, 'prefill_b8', 0)} |")  # fmt: skip
    lines += ["", "Goals (issue #20):", *goals(rows, timed), "", "What each variant chose:"]
    for r in rows[1:]:
        info = r.get("info", {})
        bits = []
        if "search" in info:
            bits.append("global α search (simulated val ppl): " + json.dumps({k: round(v, 2) for k, v in
                                                                              info["search"].items()}))  # fmt: skip
        if isinstance(info.get("alphas"), dict):
            counts: dict[str, int] = {}
            for a in info["alphas"].values():
                counts[str(a)] = counts.get(str(a), 0) + 1
            bits.append(f"per-group α counts {json.dumps(dict(sorted(counts.items())))}")
        if "fallback_auto" in info:
            auto = info["fallback_auto"]
            tried = json.dumps({k: round(v, 2) for k, v in auto["tried"].items()})
            bits.append(
                f"auto: N={auto['n']} units (simulated val ppl fp32 {auto['fp32_perplexity']:.2f}, target "
                f"{auto['target']:.2f}, N tried → ppl {tried})"
            )
        if info.get("fallback"):
            bits.append(f"fp32 Linears: {', '.join(info['fallback'])}")
        if bits:
            lines.append(f"- {r['variant']}: " + "; ".join(bits))
    if result.get("notes"):  # the analysis, kept in the JSON beside the numbers it reads
        lines += ["", "Findings:", *(f"- {n}" for n in result["notes"])]
    return "\n".join(lines) + "\n"


def goals(rows: list[dict[str, Any]], timed: bool) -> list[str]:
    sq = [r for r in rows if r["variant"].startswith("sq")]
    if not sq:
        return ["- no SmoothQuant row"]
    best = min(sq, key=lambda r: r["perplexity"])
    ok = [r for r in sq if r["delta_pct"] <= 2.0]
    out = [f"- SmoothQuant W8A8 ≤ +2% perplexity vs fp32: **{'met' if ok else 'not met'}** "
           f"(best {best['variant']}: {best['delta_pct']:+.2f}%"
           + (f"; within: {', '.join(r['variant'] for r in ok)})" if ok else ")")]  # fmt: skip
    if not timed:
        return [*out, "- faster than fp32 at batch-8 prefill: not measured yet"]
    ok, sq = [r for r in ok if "prefill_b8_x" in r], [r for r in sq if "prefill_b8_x" in r]  # timed rows
    both = [r for r in ok if r["prefill_b8_x"] > 1.0]
    cand = max(both or ok or sq, key=lambda r: r["prefill_b8_x"])
    verdict = "met" if both else "not met"
    out.append(f"- ≤ +2% **and** faster than fp32 at batch-8 prefill in ONNX Runtime: **{verdict}** "
               f"({cand['variant']}: {cand['delta_pct']:+.2f}%, prefill b8 ×{cand['prefill_b8_x']:.2f})")  # fmt: skip
    plain = next((r for r in rows if r["variant"] == "plain-dynamic"), None)
    if plain is not None and "prefill_b8_x" in plain:
        out.append(
            f"- for reference: plain ORT dynamic int8 {plain['delta_pct']:+.2f}%, prefill b8 "
            f"×{plain['prefill_b8_x']:.2f}"
        )
    return out
