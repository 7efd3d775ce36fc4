"""Prune + int4 on SmolLM2-135M (issue #21, combined goal): ≥ 6× ORT fp32 decode tokens/s at batch 1 with
≤ +25% perplexity.

Rows: the fp32 bundle; int4 alone (GPTQ with its defaults, groups of ``--group`` (128: the faster MatMulNBits
grid, lm_int4_peers.md), symmetric unless ``--no-sym``; the tied embedding + lm_head table on the same grid, by
GPTQ on the final hidden states unless ``--no-head-gptq``, then RTN);
then ``--drop`` k blocks removed (``lm-structured drop_layers``, ShortGPT input/output similarity on calibration
text), optionally distilled back (``--recover-minutes``, ``recover_lm_`` from the dense model), then the same
int4; with ``--student`` also a width + depth pruned and recovered model that lm_width_depth.py saved.
Every model is exported as an LM bundle (MatMulNBits, parity-checked)
and decoded in ONNX Runtime with ``THREADS`` threads in rounds of one fresh process per bundle
(``_isolated_timing``: per-round ratios, medians). Perplexity: the PyTorch fake-quant model (the export's parity
holds it to the ONNX) on the first ``--windows`` × 256 tokens of The Tempest.
Writes benchmarks/results/lm_prune_int4.{json,md}.

    python benchmarks/lm_prune_int4.py --drop 2 3 4
    python benchmarks/lm_prune_int4.py --drop 4 --student benchmarks/.cache/lm-width-depth/student
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path
from typing import Any

import _isolated_timing as isolated
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


def int4_(model: Any, calib: torch.Tensor, args: Any) -> None:
    """GPTQ (the defaults) on ``--group`` groups (``--sym``); the tied embedding + lm_head table on the same grid
    (GPTQ on the final hidden states with ``--head-gptq``, else RTN)."""
    from slimtune.quantize.weight_only import GPTQConfig, quantize_lm_

    cfg = GPTQConfig(bits=4, group_size=args.group, symmetric=args.sym, samples=len(calib), batch_size=4,
                     lm_head=True, embedding=True, ragged_groups=True, head_gptq=args.head_gptq)  # fmt: skip
    quantize_lm_(model, cfg, calibration=calib)


def build(args: Any) -> dict[str, Any]:
    """Prune, quantize, score and export every row (the slow part; timing is separate)."""
    from slimtune.prune import LMStructuredConfig, prune_

    torch.set_num_threads(args.threads)
    base, tok = model_and_tokenizer()
    corpus = Corpus(tok, windows_=args.windows)
    calib = corpus.train_windows(args.calib)
    data = lm_data(calib, corpus.val)
    parity_windows = corpus.val[:2, :64]
    dense_ppl = corpus.ppl(base)
    rows: list[dict[str, Any]] = [{"name": "fp32", "perplexity": dense_ppl, "blocks": len(base.model.layers),
                                   "params": sum(p.numel() for p in base.parameters())}]  # fmt: skip
    rows[0]["bundle"] = str(export(base, tok, "fp32", parity_windows))
    grid = f"int4-g{args.group}-{'sym' if args.sym else 'asym'}"
    for k in [0, *args.drop, *(["student"] if args.student else [])]:
        model, started = copy.deepcopy(base), time.perf_counter()
        row: dict[str, Any] = {"name": grid if not k else f"drop{k}+{grid}"}
        if k == "student":  # a pruned + recovered model saved by lm_width_depth.py
            from slimtune.models.serialization import load_model

            model = load_model(args.student)
            row["name"], row["student"] = f"width-depth+recovery+{grid}", str(args.student)
            row["dropped_ppl"] = corpus.ppl(model)
        elif k:
            prune_(model, LMStructuredConfig(drop_layers=k, samples=args.calib), data=data)
            row["dropped_ppl"] = corpus.ppl(model)
            if args.recover_minutes > 0:
                row["recovery"] = recover(model, base, corpus, minutes=args.recover_minutes,
                                          windows_=args.recover_windows, lr=args.lr)  # fmt: skip
                row["recovered_ppl"] = corpus.ppl(model)
        row["params"] = sum(p.numel() for p in model.parameters())
        row["blocks"] = len(model.model.layers)
        int4_(model, calib, args)
        row["perplexity"] = corpus.ppl(model)
        row["prepare_s"] = time.perf_counter() - started
        folder = export(model, tok, row["name"], parity_windows)
        row["bundle"], row["parity"] = str(folder), json.loads((folder / "bundle.json").read_text())["parity"]
        rows.append(row)
        print(f"{row['name']}: ppl {row['perplexity']:.2f} ({100 * (row['perplexity'] / dense_ppl - 1):+.1f}%)",
              flush=True)  # fmt: skip
        del model
    for row in rows:
        row["perplexity_delta_pct"] = 100 * (row["perplexity"] / dense_ppl - 1)
    return {"model": "smollm2-135m", "commit": commit(), "settings": vars(args), "build_load_end": load(),
            "prompt": tok.encode(lb.PROMPT), "rows": rows}  # fmt: skip


def time_rows(out: dict[str, Any], args: Any) -> None:
    """ORT decode rounds over every bundle (``THREADS`` threads), each bundle in a fresh process of its own per
    round (``_isolated_timing``: in one process idle sessions' threads spin while the next is timed); ratios per
    round against fp32."""
    specs = {row["name"]: {"kind": "ort", "path": str(row["bundle"])} for row in out["rows"]}
    timing = isolated.time_isolated(specs, out["prompt"], new_tokens=args.new_tokens, rounds=args.rounds,
                                    threads=lb.THREADS)  # fmt: skip
    speed = {(r["runtime"], r["batch"]): r["decode_tokens_per_s_rounds"] for r in timing["rows"]}
    for row in out["rows"]:
        for b in (1, 8):
            ratios = [x / y for x, y in zip(speed[(row["name"], b)], speed[("fp32", b)], strict=True)]
            row[f"decode_b{b}_tok_s"] = statistics.median(speed[(row["name"], b)])
            row[f"decode_b{b}_vs_fp32"] = statistics.median(ratios)
            row[f"decode_b{b}_vs_fp32_spread"] = [min(ratios), max(ratios)]
        row["goal_met"] = row["decode_b1_vs_fp32"] >= GOAL_SPEED and row["perplexity_delta_pct"] <= GOAL_PPL
    out.update(threads=lb.THREADS, rounds=args.rounds, new_tokens=args.new_tokens, timing_commit=commit(),
               load_per_round=timing["load_per_round"], timing_method=timing["method"], env=collect())  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phase", choices=["build", "time", "all"], default="all",
                        help="build: prune, quantize, score, export; time: decode rounds (idle machine)")  # fmt: skip
    parser.add_argument("--drop", type=int, nargs="+", default=[2, 3, 4], help="blocks removed before int4")
    parser.add_argument("--windows", type=int, default=16, help="Tempest windows of 256 tokens for perplexity")
    parser.add_argument("--calib", type=int, default=32, help="train windows of 256 tokens (ShortGPT and GPTQ)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the build phase")
    parser.add_argument("--recover-minutes", type=float, default=0.0)
    parser.add_argument("--recover-windows", type=int, default=96)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--group", type=int, default=128, help="int4 group size (128: the faster MatMulNBits grid)")
    parser.add_argument("--sym", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--head-gptq", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--student", type=Path, default=None,
                        help="a pruned + recovered model saved by lm_width_depth.py: one more row")  # fmt: skip
    args = parser.parse_args()
    path = RESULTS / "lm_prune_int4.json"
    out = build(args) if args.phase != "time" else json.loads(path.read_text(encoding="utf-8"))
    if args.phase != "build":
        time_rows(out, args)
    RESULTS.mkdir(exist_ok=True)
    path.write_text(json.dumps(out, indent=2, default=str) + "\n", encoding="utf-8")
    (RESULTS / "lm_prune_int4.md").write_text(render(out), encoding="utf-8")
    print(render(out))


def render(out: dict[str, Any]) -> str:
    s = out["settings"]
    lines = [
        "# SmolLM2-135M: depth pruning + int4 (MatMulNBits) vs ORT fp32",
        "",
        f"Perplexity on The Tempest's first {s['windows']} × 256 tokens (PyTorch, fake-quant = the ONNX within its",
        f"parity check); int4: GPTQ (defaults) groups of {s.get('group', 32)} "
        f"{'symmetric' if s.get('sym', False) else 'asymmetric'} on {s['calib']} × 256 train-play tokens, the",
        f"tied embedding + lm_head {'by GPTQ on the final hidden states' if s.get('head_gptq') else 'RTN'} on the same "
        "grid (one GatherBlockQuantized/MatMulNBits table); blocks removed by",
        f"ShortGPT similarity on the same tokens; recovery {s['recover_minutes']:g} min. Decode: ONNX Runtime,",
        f"{out.get('threads', '-')} threads, {out.get('rounds', '-')} rounds "
        f"({out.get('timing_method', 'interleaved in one process')}), {out.get('new_tokens', '-')}"
        " new tokens; × = median of per-round ratios to fp32 [min, max]; load average per round",
        f"{out.get('load_per_round', '-')}. Commit {out['commit']} (timing: {out.get('timing_commit', '-')}).",
        "",
        "| model | blocks | params | perplexity | Δ | decode b1 tok/s | × fp32 b1 | decode b8 tok/s | × fp32 b8 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    timed = "decode_b1_vs_fp32" in out["rows"][-1]
    for r in out["rows"]:
        if not timed:
            lines.append(f"| {r['name']} | {r['blocks']} | {r['params'] / 1e6:.1f} M | {r['perplexity']:.2f} | "
                         f"{r['perplexity_delta_pct']:+.1f}% | - | - | - | - |")  # fmt: skip
            continue
        lo, hi = r["decode_b1_vs_fp32_spread"]
        lines.append(
            f"| {r['name']} | {r.get('blocks', 30)} | {r['params'] / 1e6:.1f} M | {r['perplexity']:.2f} | "
            f"{r['perplexity_delta_pct']:+.1f}% | {r['decode_b1_tok_s']:.1f} | ×{r['decode_b1_vs_fp32']:.2f} "
            f"[{lo:.2f}, {hi:.2f}] | {r['decode_b8_tok_s']:.1f} | ×{r['decode_b8_vs_fp32']:.2f} |"
        )
    if not timed:
        return "\n".join([*lines, "", "Decode not timed yet (run --phase time on an idle machine)."]) + "\n"
    met = [r for r in out["rows"] if r["goal_met"]]
    within = [r for r in out["rows"][1:] if r["perplexity_delta_pct"] <= GOAL_PPL]
    fast = [r for r in out["rows"][1:] if r["decode_b1_vs_fp32"] >= GOAL_SPEED]
    best = max(within, key=lambda r: r["decode_b1_vs_fp32"]) if within else None
    closest = min(fast, key=lambda r: r["perplexity_delta_pct"]) if fast else None
    verdict = (f"**met** by {', '.join(r['name'] for r in met)}" if met else "**not met** (" + "; ".join(
        [f"fastest within +{GOAL_PPL:.0f}%: {best['name']} ×{best['decode_b1_vs_fp32']:.2f}, "
         f"{best['perplexity_delta_pct']:+.1f}%" if best else f"no row within +{GOAL_PPL:.0f}%"]
        + ([f"best perplexity at ≥ {GOAL_SPEED:.0f}×: {closest['name']} ×{closest['decode_b1_vs_fp32']:.2f}, "
            f"{closest['perplexity_delta_pct']:+.1f}%"] if closest else [])) + ")")  # fmt: skip
    lines += ["", "## Goal (issue #21)", "",
              f"- prune + int4 ≥ {GOAL_SPEED:.0f}× ORT fp32 decode at batch 1 with ≤ +{GOAL_PPL:.0f}% perplexity: "
              f"{verdict}."]  # fmt: skip
    students = [f"{r['name']}: perplexity {r['dropped_ppl']:.2f} before int4" for r in out["rows"]
                if r.get("student")]  # fmt: skip
    if students:
        lines += ["", "The width + depth row is lm_width_depth.py's pruned and recovered student (lm_width_depth.md); "
                  + "; ".join(students) + "."]  # fmt: skip
    curves = [f"- {r['name']}: {curve_text(r['recovery'])}" for r in out["rows"] if r.get("recovery")]
    if curves:
        lines += ["", "Recovery curves (validation perplexity by training tokens):", "", *curves]
    dropped = [f"{r['name']}: {r['dropped_ppl']:.2f}"
               + (f" one-shot, {r['recovered_ppl']:.2f} recovered" if "recovered_ppl" in r else "")
               for r in out["rows"] if "dropped_ppl" in r and not r.get("student")]  # fmt: skip
    if dropped:
        lines += ["", "Perplexity after the blocks are removed, before int4: " + "; ".join(dropped) + "."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
