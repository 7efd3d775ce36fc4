"""Prune + int4 on SmolLM2-135M (issue #21, combined goal): ≥ 6× ORT fp32 decode tokens/s at batch 1 with
≤ +25% perplexity.

Rows: the fp32 bundle; int4 alone (RTN, groups of 32, asymmetric: the grid the model was stored on, so it
reproduces the weights exactly); then ``--drop`` k blocks removed (``lm-structured drop_layers``, ShortGPT
input/output similarity on calibration text), optionally distilled back (``--recover-minutes``, ``recover_lm_``
from the dense model), then the same int4. Every model is exported as an LM bundle (MatMulNBits, parity-checked)
and decoded in ONNX Runtime with ``THREADS`` threads in interleaved rounds (lm_baseline.py's ``time_runtimes``:
per-round ratios, medians). Perplexity: the PyTorch fake-quant model (the export's parity holds it to the ONNX)
on the first ``--windows`` × 256 tokens of The Tempest. Writes benchmarks/results/lm_prune_int4.{json,md}.

    python benchmarks/lm_prune_int4.py --drop 2 3 4
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path
from typing import Any

import lm_baseline as lb
import lm_export_speed as les
import torch
from _lm_prune import RESULTS, Corpus, commit, curve_text, lm_data, load, model_and_tokenizer, recover

from slimtune.env import collect

GOAL_SPEED, GOAL_PPL = 6.0, 25.0


def export(model: Any, tok: Any, name: str, windows: torch.Tensor) -> Path:
    from slimtune.export.lm_bundle import export_lm_bundle
    from slimtune.export.lm_onnx import LMExportConfig

    check = LMExportConfig(greedy_tokens=16, prompts=2, windows=2, window_length=48, min_fast_top1_agreement=0.8)
    return export_lm_bundle(
        model, tok.tokenizer, les.CACHE / f"prune-int4-{name}", windows=windows, config=check, force=True
    )


def int4_(model: Any) -> None:
    from slimtune.quantize.weight_only import RTNConfig, quantize_lm_

    quantize_lm_(model, RTNConfig(bits=4, group_size=32, symmetric=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drop", type=int, nargs="+", default=[2, 3, 4], help="blocks removed before int4")
    parser.add_argument("--windows", type=int, default=16, help="Tempest windows of 256 tokens for perplexity")
    parser.add_argument("--calib", type=int, default=16)
    parser.add_argument("--recover-minutes", type=float, default=0.0)
    parser.add_argument("--recover-windows", type=int, default=96)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=32)
    args = parser.parse_args()
    from slimtune.prune import LMStructuredConfig, prune_

    torch.set_num_threads(lb.THREADS)
    base, tok = model_and_tokenizer()
    corpus = Corpus(tok, windows_=args.windows)
    data = lm_data(corpus.train_windows(args.calib), corpus.val)
    parity_windows = corpus.val[:2, :64]
    rows: list[dict[str, Any]] = []
    bundles: dict[str, Path] = {}
    dense_ppl = corpus.ppl(base)
    rows.append({"name": "fp32", "perplexity": dense_ppl, "params": sum(p.numel() for p in base.parameters())})
    bundles["fp32"] = export(base, tok, "fp32", parity_windows)
    for k in [0, *args.drop]:
        model, started, row = (
            copy.deepcopy(base),
            time.perf_counter(),
            {"name": "int4-g32" if not k else f"drop{k}+int4-g32"},
        )
        if k:
            prune_(model, LMStructuredConfig(drop_layers=k, samples=args.calib), data=data)
            row["dropped_ppl"] = corpus.ppl(model)
            if args.recover_minutes > 0:
                row["recovery"] = recover(model, base, corpus, minutes=args.recover_minutes,
                                          windows_=args.recover_windows, lr=args.lr)  # fmt: skip
                row["recovered_ppl"] = corpus.ppl(model)
        row["params"] = sum(p.numel() for p in model.parameters())
        row["blocks"] = len(model.model.layers)
        int4_(model)
        row["perplexity"] = corpus.ppl(model)
        row["prepare_s"] = time.perf_counter() - started
        bundles[row["name"]] = export(model, tok, row["name"], parity_windows)
        row["parity"] = json.loads((bundles[row["name"]] / "bundle.json").read_text())["parity"]
        rows.append(row)
        print(f"{row['name']}: ppl {row['perplexity']:.2f} ({100 * (row['perplexity'] / dense_ppl - 1):+.1f}%)",
              flush=True)  # fmt: skip
        del model
    from slimtune.runtime.decoder import Decoder, ort_decoder_session

    prompt = tok.encode(lb.PROMPT)
    run: dict[str, Any] = {}
    for name, folder in bundles.items():
        decoder = Decoder(ort_decoder_session(folder / "model.onnx", threads=lb.THREADS))
        run[name] = lambda b, n, d=decoder: d.generate([prompt] * b, max_new_tokens=n)[0]
    timing = lb.time_runtimes(run, new_tokens=args.new_tokens, rounds=args.rounds)
    speed = {(r["runtime"], r["batch"]): r["decode_tokens_per_s_rounds"] for r in timing["rows"]}
    for row in rows:
        row["perplexity_delta_pct"] = 100 * (row["perplexity"] / dense_ppl - 1)
        for b in (1, 8):
            ratios = [x / y for x, y in zip(speed[(row["name"], b)], speed[("fp32", b)], strict=True)]
            row[f"decode_b{b}_tok_s"] = statistics.median(speed[(row["name"], b)])
            row[f"decode_b{b}_vs_fp32"] = statistics.median(ratios)
            row[f"decode_b{b}_vs_fp32_spread"] = [min(ratios), max(ratios)]
        row["goal_met"] = row["decode_b1_vs_fp32"] >= GOAL_SPEED and row["perplexity_delta_pct"] <= GOAL_PPL
    out = {"model": "smollm2-135m", "commit": commit(), "settings": vars(args), "threads": lb.THREADS,
           "load_per_round": timing["load_per_round"], "load_end": load(), "rows": rows, "env": collect()}  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "lm_prune_int4.json").write_text(json.dumps(out, indent=2, default=str) + "\n", encoding="utf-8")
    (RESULTS / "lm_prune_int4.md").write_text(render(out), encoding="utf-8")
    print(render(out))


def render(out: dict[str, Any]) -> str:
    s = out["settings"]
    lines = [
        "# SmolLM2-135M: depth pruning + int4 (MatMulNBits) vs ORT fp32",
        "",
        f"Perplexity on The Tempest's first {s['windows']} × 256 tokens (PyTorch, fake-quant = the ONNX within its",
        "parity check); int4: RTN groups of 32 asymmetric (the grid SmolLM2 was stored on); blocks removed by",
        f"ShortGPT similarity on {s['calib']} × 256 train-play tokens; recovery {s['recover_minutes']:g} min.",
        f"Decode: ONNX Runtime, {out['threads']} threads, {s['rounds']} interleaved rounds, {s['new_tokens']} new",
        f"tokens; × = median of per-round ratios to fp32 [min, max]. Load average per round {out['load_per_round']}.",
        f"Commit {out['commit']}.",
        "",
        "| model | blocks | params | perplexity | Δ | decode b1 tok/s | × fp32 b1 | decode b8 tok/s | × fp32 b8 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in out["rows"]:
        lo, hi = r["decode_b1_vs_fp32_spread"]
        lines.append(
            f"| {r['name']} | {r.get('blocks', 30)} | {r['params'] / 1e6:.1f} M | {r['perplexity']:.2f} | "
            f"{r['perplexity_delta_pct']:+.1f}% | {r['decode_b1_tok_s']:.1f} | ×{r['decode_b1_vs_fp32']:.2f} "
            f"[{lo:.2f}, {hi:.2f}] | {r['decode_b8_tok_s']:.1f} | ×{r['decode_b8_vs_fp32']:.2f} |"
        )
    met = [r for r in out["rows"] if r["goal_met"]]
    best = max(out["rows"][1:], key=lambda r: r["decode_b1_vs_fp32"] if r["perplexity_delta_pct"] <= GOAL_PPL else 0)
    verdict = (f"**met** by {', '.join(r['name'] for r in met)}" if met else
               f"**not met** (fastest within +{GOAL_PPL:.0f}%: {best['name']} ×{best['decode_b1_vs_fp32']:.2f}, "
               f"{best['perplexity_delta_pct']:+.1f}%)")  # fmt: skip
    lines += ["", "## Goal (issue #21)", "",
              f"- prune + int4 ≥ {GOAL_SPEED:.0f}× ORT fp32 decode at batch 1 with ≤ +{GOAL_PPL:.0f}% perplexity: "
              f"{verdict}."]  # fmt: skip
    curves = [f"- {r['name']}: {curve_text(r['recovery'])}" for r in out["rows"] if r.get("recovery")]
    if curves:
        lines += ["", "Recovery curves (validation perplexity by training tokens):", "", *curves]
    dropped = [f"{r['name']}: {r['dropped_ppl']:.2f} before int4" for r in out["rows"] if "dropped_ppl" in r]
    if dropped:
        lines += ["", "Perplexity after the blocks are removed, before int4: " + "; ".join(dropped) + "."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
