"""SmolLM2-135M: mixed precision under a bit budget vs uniform int4 with the same algorithm: perplexity and bytes.

Every variant quantizes the decoder-block Linears (lm_head and embedding stay fp32, as in lm_quantization.py).
Stored bits per weight count what MatMulNBits writes (4-bit container + one fp32 scale per group; symmetric: no
zero points), so int4 g64 is already 4.5 bits and int4 g32 5.0: the budget plans are compared with the uniform
grids of the same stored size. SmolLM2's width 576 is not a multiple of 128, so g64 is the int4 base grid.
Sensitivity: output KL per decoder block (granularity block) on ``--sens-windows`` train windows.
Perplexity of the PyTorch fake-quant model (what MatMulNBits at accuracy_level 0 computes) on the first ``--eval``
test-play windows; bytes are the packed MatMulNBits inputs (``quantized_bytes``).
Writes benchmarks/results/lm_mixed_precision.{json,md}. Run: ``PYTHONPATH=src python benchmarks/lm_mixed_precision.py``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import time
from pathlib import Path

import torch

from slimtune.data.lm_data import load_text
from slimtune.evaluate.lm import perplexity
from slimtune.export.lm_nbits import quantized_bytes
from slimtune.models.lm import load_lm
from slimtune.quantize.weight_only import GPTQConfig, RTNConfig, quantize_lm_
from slimtune.quantize.weight_only.mixed import BitsBudgetConfig, quantize_lm_mixed_

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--window", type=int, default=128)
    ap.add_argument("--eval", type=int, default=4)
    ap.add_argument("--calib", type=int, default=8)
    ap.add_argument("--sens-windows", type=int, default=1)
    ap.add_argument("--budgets", type=float, nargs="+", default=[4.75, 5.0])
    ap.add_argument("--methods", nargs="+", default=["rtn"])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    base = load_lm("smollm2-135m")
    data = load_text("shakespeare", base, window=args.window, limit=max(args.eval, args.calib))
    test, calib = data.test.x[: args.eval], data.train.x[: args.calib]
    ref = perplexity(base, test, batch_size=4)["perplexity"]
    rows: list[dict] = [{"variant": "fp32", "perplexity": ref, "delta_pct": 0.0}]
    print(f"fp32 ppl {ref:.2f}", flush=True)
    for method in args.methods:

        def config(group: int, method: str = method) -> RTNConfig | GPTQConfig:
            if method == "gptq":
                return GPTQConfig(bits=4, group_size=group, samples=args.calib, batch_size=4)
            return RTNConfig(bits=4, group_size=group)

        variants: list[tuple[str, RTNConfig | GPTQConfig, BitsBudgetConfig | None]] = [
            (f"{method} int4 g64 uniform", config(64), None),
            (f"{method} int4 g32 uniform", config(32), None),
            *((f"{method} int4 g64 + int8, budget {b:g}", config(64),
               BitsBudgetConfig(bits_budget=b, windows=args.sens_windows, granularity="block")) for b in args.budgets),
        ]  # fmt: skip
        sens_cache: dict[str, float] | None = None
        for name, cfg, budget in variants:
            model = copy.deepcopy(base)
            t0 = time.perf_counter()
            row: dict = {"variant": name, "method": method}
            if budget is None:
                quantize_lm_(model, cfg, calibration=calib)
            else:
                plan = quantize_lm_mixed_(model, cfg, budget, calibration=calib)
                sens_cache = plan["sensitivity"]
                blocks = sorted({n.rsplit(".", 2)[0] for n, b in plan["bits"].items() if b == 8})
                row.update(average_bits=plan["average_bits"], layers_per_bits=plan["layers_per_bits"], promoted=blocks)
            row["seconds"] = time.perf_counter() - t0
            qb = quantized_bytes(model)
            row.update(packed_mb=qb["packed"] / 1e6, fp32_mb=qb["fp32"] / 1e6,
                       stored_bits=8 * qb["packed"] / (qb["fp32"] / 4))  # fmt: skip
            ppl = perplexity(model, test, batch_size=4)["perplexity"]
            row.update(perplexity=ppl, delta_pct=100 * (ppl / ref - 1))
            rows.append(row)
            print(f"{name}: ppl {ppl:.2f} ({row['delta_pct']:+.1f}%), {row['packed_mb']:.1f} MB, "
                  f"{row['stored_bits']:.3f} bits, {row['seconds']:.0f} s", flush=True)  # fmt: skip
            del model
            write(args, rows, sens_cache)


def write(args: argparse.Namespace, rows: list[dict], sensitivity: dict[str, float] | None) -> None:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    setup = {**vars(args), "commit": commit, "load_average": os.getloadavg()}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "lm_mixed_precision.json").write_text(
        json.dumps({"setup": setup, "rows": rows, "block_sensitivity_kl": sensitivity}, indent=2, default=str)
    )
    lines = [
        "# SmolLM2-135M: mixed precision under a bit budget vs uniform int4 (decoder-block Linears)",
        "",
        f"Setup: {json.dumps(setup, default=str)}.",
        "Stored bits per weight = packed MatMulNBits bytes × 8 / weights (fp32 scale per group counted). "
        "Perplexity of the fake-quant model (= MatMulNBits at accuracy_level 0) on the test-play windows.",
        "",
        "| variant | stored bits / weight | MB (packed) | perplexity | Δ vs fp32 | layers per width | blocks at int8 |",
        "|---|---|---|---|---|---|---|",
        *(f"| {r['variant']} | {r.get('stored_bits', 32):.3f} | {r.get('packed_mb', r.get('fp32_mb', 0)):.1f} | "
          f"{r['perplexity']:.2f} | {r['delta_pct']:+.1f}% | {r.get('layers_per_bits', '-')} | "
          f"{', '.join(r.get('promoted', [])) or '-'} |" for r in rows),
    ]  # fmt: skip
    if sensitivity:
        top = sorted(sensitivity.items(), key=lambda kv: -kv[1])[:6]
        lines += ["", "Most sensitive blocks (KL when the block alone is int4 g64): "
                  + ", ".join(f"{k} {v:.4f}" for k, v in top)]  # fmt: skip
    (RESULTS / "lm_mixed_precision.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
