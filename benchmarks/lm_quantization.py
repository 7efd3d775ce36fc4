"""Weight-only quantization of SmolLM2-135M: perplexity change per algorithm on grids the model was not stored on
(int4 symmetric groups of 64, int3 asymmetric groups of 64; 128 does not divide its width 576), and quantization
wall time.

Perplexity on the first ``--eval`` windows of the Shakespeare test plays (``--window`` tokens each), calibration
from the train plays (``--calib`` windows). Writes benchmarks/results/lm_quantization.{json,md}.
Run: ``PYTHONPATH=src python benchmarks/lm_quantization.py [--threads 2]``.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch

from slimtune.data.lm_data import load_text
from slimtune.evaluate.lm import perplexity
from slimtune.models.lm import load_lm
from slimtune.quantize.weight_only import AWQConfig, GPTQConfig, HQQConfig, RTNConfig, quantize_lm_

OUT = Path(__file__).parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--window", type=int, default=256)
    ap.add_argument("--eval", type=int, default=8)
    ap.add_argument("--calib", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--grids", nargs="+", default=["int4-g64-sym", "int3-g64-asym"])
    ap.add_argument("--methods", nargs="+", default=["rtn", "gptq", "awq", "hqq", "gptq-act-order"])
    ap.add_argument("--awq-grid", type=int, default=20)
    ap.add_argument("--awq-batch", type=int, default=4, help="AWQ scores its grid on the first batch of this size")
    ap.add_argument("--append", action="store_true", help="add rows to the results already written")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    base = load_lm("smollm2-135m")
    data = load_text("shakespeare", base, window=args.window, limit=max(args.eval, args.calib))
    test, calib = data.test.x[: args.eval], data.train.x[: args.calib]
    ref = perplexity(base, test, batch_size=4)["perplexity"]
    rows = [{"method": "fp32", "grid": "-", "perplexity": ref, "delta_pct": 0.0, "seconds": 0.0}]
    if args.append and (OUT / "lm_quantization.json").is_file():
        rows = json.loads((OUT / "lm_quantization.json").read_text())["rows"]
    print(f"fp32 ppl {ref:.2f}", flush=True)
    for grid in args.grids:
        bits, group, sym = int(grid[3]), int(grid.split("-g")[1].split("-")[0]), grid.endswith("-sym")
        common = {"bits": bits, "group_size": group, "symmetric": sym}
        configs = {
            "rtn": RTNConfig(**common),
            "gptq": GPTQConfig(**common, samples=args.calib, batch_size=4),
            "awq": AWQConfig(**common, samples=args.calib, batch_size=args.awq_batch, grid=args.awq_grid),
            "hqq": HQQConfig(**common),
            "gptq-act-order": GPTQConfig(**common, samples=args.calib, batch_size=4, act_order=True),
        }
        for name, cfg in ((k, v) for k, v in configs.items() if k in args.methods):
            model = copy.deepcopy(base)
            t0 = time.perf_counter()
            quantize_lm_(model, cfg, calibration=calib)
            secs = time.perf_counter() - t0
            ppl = perplexity(model, test, batch_size=4)["perplexity"]
            rows.append({"method": name, "grid": grid, "perplexity": ppl, "delta_pct": 100 * (ppl / ref - 1),
                         "seconds": secs, "options": cfg.to_dict()})  # fmt: skip
            print(f"{grid} {name}: ppl {ppl:.2f} ({100 * (ppl / ref - 1):+.1f}%), {secs:.1f} s", flush=True)
            del model
            write(args, test, calib, rows)  # after every row: a long run that is stopped keeps what it measured


def write(args: argparse.Namespace, test: torch.Tensor, calib: torch.Tensor, rows: list[dict]) -> None:
    setup = {"model": "smollm2-135m", "eval_tokens": int(test.numel()), "calib_tokens": int(calib.numel()),
             "window": args.window, "threads": args.threads}  # fmt: skip
    OUT.mkdir(exist_ok=True)
    (OUT / "lm_quantization.json").write_text(json.dumps({"setup": setup, "rows": rows}, indent=2))
    lines = [
        "# Weight-only quantization of SmolLM2-135M (Shakespeare test plays)",
        "",
        f"Setup: {json.dumps(setup)}. Perplexity of the first windows of the test plays; lower is better.",
        "",
        "| grid | method | perplexity | Δ vs fp32 | quantize s |",
        "|---|---|---|---|---|",
        *(f"| {r['grid']} | {r['method']} | {r['perplexity']:.2f} | {r['delta_pct']:+.1f}% | {r['seconds']:.1f} |"
          for r in rows),
    ]  # fmt: skip
    (OUT / "lm_quantization.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
