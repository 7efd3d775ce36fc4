"""SmolLM2-135M SmoothQuant W8A8 vs plain int8 vs fp32 in ONNX Runtime: perplexity (of the ONNX files themselves),
b8 prefill and b1/b8 decode tokens/s, MB on disk.

Calibration: ``--calib`` windows of the Shakespeare train plays; α searched (grid ``--grid``) on the W8A8-simulated
perplexity of ``--val`` other train windows; perplexity reported on the first ``--eval`` test-play windows
(``--window`` tokens each), through ONNX Runtime. Bundles via ``export_lm_bundle`` (fp32 parity checked first).
Timing: ``lm_bench`` at batch 1 and 8, rounds interleaved, medians. Writes benchmarks/results/lm_smoothquant.{json,md}.
Run: ``PYTHONPATH=src python benchmarks/lm_smoothquant.py``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import shutil
import statistics
import subprocess
import time
from pathlib import Path

import torch

from slimtune.data.lm_data import load_text
from slimtune.evaluate.lm import perplexity
from slimtune.export.lm_bundle import export_lm_bundle
from slimtune.export.lm_onnx import LMExportConfig
from slimtune.models.lm import lm_tokenizer, load_lm
from slimtune.quantize.smoothquant import SmoothQuantConfig
from slimtune.quantize.smoothquant.api import smoothquant_lm_
from slimtune.recipe.lm import onnx_perplexity
from slimtune.runtime.lm_bench import lm_bench

BENCH = Path(__file__).resolve().parent
CACHE, RESULTS = BENCH / ".cache" / "smoothquant", BENCH / "results"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--window", type=int, default=128)
    ap.add_argument("--eval", type=int, default=6)
    ap.add_argument("--calib", type=int, default=8)
    ap.add_argument("--val", type=int, default=2)
    ap.add_argument("--grid", type=float, nargs="+", default=[0.5, 0.7, 0.8, 0.9])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--tag", default="", help="suffix of the results files (lm_smoothquant{tag}.json)")
    ap.add_argument("--reuse", action="store_true", help="reuse the fp32 bundle of an earlier run")
    ap.add_argument("--fast", action="store_true", help="skip the per-variant parity pass (loaded machine)")
    ap.add_argument("--variants", nargs="+", default=["plain-dynamic", "sq-dynamic", "sq-static"])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    base = load_lm("smollm2-135m")
    tok = lm_tokenizer(base)
    data = load_text("shakespeare", base, window=args.window, limit=max(args.eval, args.calib + args.val))
    test = data.test.take(args.eval)
    calib, val = data.train.x[: args.calib], data.train.x[args.calib : args.calib + args.val]
    check = LMExportConfig(greedy_tokens=8, prompts=2, windows=2, window_length=48,
                           min_fast_top1_agreement=0.0)  # fmt: skip  # int8 deviation measured, not gated
    windows = test.x[:2, :48]
    torch_ppl = perplexity(base, test, batch_size=4)["perplexity"]
    print(f"fp32 torch ppl {torch_ppl:.2f}", flush=True)
    bundles: dict[str, Path] = {}
    info: dict[str, dict] = {}
    t0 = time.perf_counter()
    fp32_dir = CACHE / "fp32"
    if args.reuse and (fp32_dir / "bundle.json").is_file():  # an earlier run's parity-checked fp32 bundle
        bundles["fp32"] = fp32_dir
    else:
        bundles["fp32"] = export_lm_bundle(base, tok.tokenizer, fp32_dir, windows=windows, config=check, force=True)
    info["fp32"] = {"seconds": time.perf_counter() - t0}
    best_alpha = None
    for variant in args.variants:
        smooth, mode = variant.startswith("sq"), variant.split("-")[1]
        model = copy.deepcopy(base)
        grid = tuple(args.grid) if smooth and best_alpha is None else ()
        alpha = best_alpha if best_alpha is not None else 0.5
        cfg = SmoothQuantConfig(smooth=smooth, alpha=alpha, alpha_grid=grid, mode=mode, samples=args.calib,
                                batch_size=4, search_windows=args.val)  # fmt: skip
        t0 = time.perf_counter()
        sq = smoothquant_lm_(model, cfg, calibration=calib, validation=val)
        if smooth and grid:
            best_alpha = sq["alpha"]
            print(f"alpha search (W8A8-simulated val ppl): {sq['search']} -> {best_alpha}", flush=True)
        if args.fast:  # no parity pass: fp32 export of the smoothed model, ORT int8, in the fp32 bundle's folder
            bundles[variant] = fast_bundle(model, fp32_dir, CACHE / variant, calib)
        else:
            bundles[variant] = export_lm_bundle(model, tok.tokenizer, CACHE / variant, windows=windows,
                                                config=check, force=True)  # fmt: skip
        info[variant] = {"seconds": time.perf_counter() - t0, **sq}
        print(f"{variant}: made in {info[variant]['seconds']:.0f} s", flush=True)
        del model
    ppl = {}
    for name, b in bundles.items():
        ppl[name] = onnx_perplexity(b / "model.onnx", test.x, test.y, threads=args.threads)["perplexity"]
        print(f"{name}: ORT ppl {ppl[name]:.2f}", flush=True)
    runs: dict[str, list[dict]] = {k: [] for k in bundles}
    for _ in range(args.rounds):
        for name, b in bundles.items():
            runs[name].append(lm_bench(b, batch_sizes=(1, 8), prompt_tokens=64, new_tokens=32, threads=args.threads,
                                       repeats=2))  # fmt: skip
    rows = []
    for name, b in bundles.items():
        parity = json.loads((b / "bundle.json").read_text())["parity"] if not (args.fast and name != "fp32") else {}
        row = {"variant": name, "perplexity": ppl[name], "delta_pct": 100 * (ppl[name] / ppl["fp32"] - 1),
               "mb": runs[name][0]["model_bytes"] / 1e6, "int8_top1": parity.get("int8", {}).get("top1_agreement"),
               "alpha": info[name].get("alpha")}  # fmt: skip
        for i, batch in enumerate((1, 8)):
            row[f"decode_b{batch}"] = statistics.median(r["rows"][i]["decode_tokens_per_s"] for r in runs[name])
            row[f"prefill_b{batch}"] = statistics.median(r["rows"][i]["prefill_tokens_per_s"] for r in runs[name])
        rows.append(row)
    fp = rows[0]
    for r in rows:
        for k in ("decode_b1", "decode_b8", "prefill_b8"):
            r[f"{k}_x"] = r[k] / fp[k]
    write(args, rows, info, torch_ppl)


def fast_bundle(model: torch.nn.Module, fp32_bundle: Path, out: Path, calib: torch.Tensor) -> Path:
    """The int8 file of ``model`` (smoothed) beside a copy of the fp32 bundle's manifest and tokenizer (no parity
    pass: the smoothing's fp32 exactness is tested in tests/quantize/test_smoothquant.py)."""
    from slimtune.export.lm_onnx import export_lm_onnx
    from slimtune.quantize.smoothquant.ort import quantize_lm_onnx

    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for name in ("bundle.json", "tokenizer.json"):
        shutil.copy(fp32_bundle / name, out / name)
    fp32 = export_lm_onnx(model, out / "fp32.onnx")
    sq = model.slimtune_smoothquant
    quantize_lm_onnx(fp32, out / "model.onnx", mode=sq["mode"], per_channel=sq["per_channel"],
                     reduce_range=sq["reduce_range"], calibration=calib[:8])  # fmt: skip
    fp32.unlink()
    return out


def write(args: argparse.Namespace, rows: list[dict], info: dict, torch_ppl: float) -> None:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    setup = {**vars(args), "commit": commit, "load_average": os.getloadavg(), "cpu": platform.processor(),
             "torch_fp32_perplexity": torch_ppl}  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    result = {"setup": setup, "rows": rows, "info": info}
    (RESULTS / f"lm_smoothquant{args.tag}.json").write_text(json.dumps(result, indent=2, default=str))
    sq = [r for r in rows if r["variant"].startswith("sq")]
    best = min(sq, key=lambda r: r["perplexity"]) if sq else None
    plain = {r["variant"].split("-")[1]: r for r in rows if r["variant"].startswith("plain")}
    goals = []
    if best is not None:
        ok = best["delta_pct"] <= 2.0
        goals.append(f"- SmoothQuant W8A8 ≤ +2% perplexity: **{'met' if ok else 'not met'}** ({best['variant']}: "
                     f"{best['delta_pct']:+.2f}%)")  # fmt: skip
        fast = max(sq, key=lambda r: r["prefill_b8_x"])
        goals.append(f"- faster than fp32 at batch-8 prefill: **{'met' if fast['prefill_b8_x'] > 1 else 'not met'}** "
                     f"({fast['variant']}: ×{fast['prefill_b8_x']:.2f})")  # fmt: skip
        for r in sq:
            p = plain.get(r["variant"].split("-")[1])
            if p is not None:
                goals.append(f"- {r['variant']} vs {p['variant']}: perplexity {r['delta_pct']:+.2f}% vs "
                             f"{p['delta_pct']:+.2f}% (vs fp32 ONNX)")  # fmt: skip
    lines = [
        "# SmolLM2-135M: SmoothQuant W8A8 vs plain int8 vs fp32 in ONNX Runtime",
        "",
        f"Setup: {json.dumps(setup, default=str)}.",
        "Perplexity of each ONNX file on the test-play windows; α searched on held-out train windows (W8A8 "
        "simulated in PyTorch). Speed: `lm_bench`, 64-token prompts, 32 new tokens, medians of interleaved rounds.",
        "",
        "| variant | α | ppl | Δ vs fp32 | MB | int8 top-1 vs torch | decode b1 tok/s (×) | decode b8 (×) | "
        "prefill b8 (×) |",
        "|---|---|---|---|---|---|---|---|---|",
        *(f"| {r['variant']} | {r['alpha'] if r['alpha'] is not None else '-'} | {r['perplexity']:.2f} | "
          f"{r['delta_pct']:+.2f}% | {r['mb']:.1f} | "
          f"{'-' if r['int8_top1'] is None else format(r['int8_top1'], '.1%')} | {r['decode_b1']:.1f} "
          f"(×{r['decode_b1_x']:.2f}) | {r['decode_b8']:.1f} (×{r['decode_b8_x']:.2f}) | {r['prefill_b8']:.0f} "
          f"(×{r['prefill_b8_x']:.2f}) |" for r in rows),
        "",
        "Goals:",
        *goals,
        "",
        "α search (W8A8-simulated perplexity on held-out train windows): "
        + "; ".join(f"{k}: {json.dumps(v['search'])}" for k, v in info.items() if "search" in v),
    ]  # fmt: skip
    (RESULTS / f"lm_smoothquant{args.tag}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
