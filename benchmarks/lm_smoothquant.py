"""SmolLM2-135M SmoothQuant W8A8 vs plain int8 vs fp32 in ONNX Runtime: perplexity (of the ONNX files themselves),
b8 prefill and b1/b8 decode tokens/s, MB on disk.

Variants are named by their parts: ``plain`` (no smoothing) or ``sq`` (global α, searched once on ``--grid``),
``layer`` (``alpha_scope: layer``, α per smoothing group on ``--grid``), ``auto`` (``fallback: auto``,
budget ``--budget``, or ``b<percent>``: ``b1`` is +1%), ``fb<N>`` (``fallback: N``), ``pct`` / ``ent`` (static
percentile / entropy ranges), and
the mode last: ``dynamic`` or ``static``. Calibration: ``--calib`` Shakespeare train-play windows; α, the fallback
ranking and ``auto`` use ``--val`` other train windows; perplexity on the first ``--eval`` test-play windows
(``--window`` tokens each, the same slice for every row), through ONNX Runtime.

Two phases, so the timings are taken together: ``--phase quality`` builds every int8 file and measures its
perplexity (torch and ORT at ``--quality-threads``, fine under load), writing the JSON; ``--phase speed`` then times
every file of that JSON with ``lm_bench`` at batch 1 and 8, ``--rounds`` rounds interleaved (medians), and writes
the JSON and Markdown. Run: ``PYTHONPATH=src python benchmarks/lm_smoothquant.py --phase quality`` then
``... --phase speed --threads 2``.
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
from typing import Any

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
VARIANTS = ["plain-dynamic", "sq-dynamic", "sq-layer-dynamic", "sq-layer-auto-dynamic"]


def options(variant: str, args: argparse.Namespace, alpha: float | None) -> dict[str, Any]:
    """The SmoothQuantConfig options of a variant name (see the module docstring)."""
    parts = variant.split("-")
    opts: dict[str, Any] = {"smooth": parts[0] == "sq", "mode": parts[-1], "samples": args.calib, "batch_size": 4,
                            "search_windows": args.val, "fallback_windows": min(2, args.val)}  # fmt: skip
    if "layer" in parts:
        opts.update(alpha_scope="layer", alpha_grid=tuple(args.grid))
    elif opts["smooth"]:
        opts.update(alpha=alpha or 0.5, alpha_grid=() if alpha is not None else tuple(args.grid))
    if "auto" in parts:
        opts.update(fallback="auto", fallback_budget=args.budget)
    for p in parts:
        if p.startswith("fb") and p[2:].isdigit():
            opts["fallback"] = int(p[2:])
        if p.startswith("b") and p[1:].replace(".", "", 1).isdigit():  # b1 = fallback: auto within +1%
            opts["fallback_budget"] = float(p[1:]) / 100
    opts["calibrate"] = {"pct": "percentile", "ent": "entropy"}.get(next((p for p in parts if p in ("pct", "ent")), ""),
                                                                   "minmax")  # fmt: skip
    return opts


def quality(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.quality_threads)
    base = load_lm("smollm2-135m")
    tok = lm_tokenizer(base)
    data = load_text("shakespeare", base, window=args.window, limit=max(args.eval, args.calib + args.val))
    test = data.test.take(args.eval)
    calib, val = data.train.x[: args.calib], data.train.x[args.calib : args.calib + args.val]
    check = LMExportConfig(greedy_tokens=8, prompts=2, windows=2, window_length=48, min_fast_top1_agreement=0.0)
    t0 = time.perf_counter()
    torch_ppl = perplexity(base, test, batch_size=4)["perplexity"]
    print(f"fp32 torch ppl {torch_ppl:.3f} ({time.perf_counter() - t0:.0f} s)", flush=True)
    fp32_dir = CACHE / "fp32"
    if not (args.reuse and (fp32_dir / "bundle.json").is_file()):
        export_lm_bundle(base, tok.tokenizer, fp32_dir, windows=test.x[:2, :48], config=check, force=True)
    rows: dict[str, dict[str, Any]] = {"fp32": {"variant": "fp32", "bundle": str(fp32_dir), "alpha": None}}
    path = RESULTS / f"lm_smoothquant{args.tag}.json"
    earlier = json.loads(path.read_text()) if args.append and path.is_file() else None
    if earlier is not None:  # add rows to an earlier run on the same windows
        same = all(earlier["setup"][k] == getattr(args, k) for k in ("window", "eval", "calib", "val"))
        if not same:
            raise SystemExit("--append: the earlier run used other windows; give its --window/--eval/--calib/--val")
        rows = {r["variant"]: r for r in earlier["rows"] if r["variant"] not in args.variants}
    global_alpha: float | None = next((r["alpha"] for r in rows.values() if r["variant"] == "sq-dynamic"), None)
    for variant in args.variants:
        model = copy.deepcopy(base)
        cfg = SmoothQuantConfig(**options(variant, args, global_alpha))
        t0 = time.perf_counter()
        info = smoothquant_lm_(model, cfg, calibration=calib, validation=val)
        if cfg.smooth and cfg.alpha_scope == "global" and cfg.alpha_grid:
            global_alpha = info["alpha"]
            print(f"alpha search (W8A8-simulated val ppl): {info['search']} -> {global_alpha}", flush=True)
        out = int8_bundle(model, fp32_dir, CACHE / variant, calib)
        info["seconds"] = time.perf_counter() - t0
        rows[variant] = {"variant": variant, "bundle": str(out), "alpha": info.get("alpha"), "config": cfg.to_dict(),
                         "info": {k: v for k, v in info.items() if k != "block_errors"}}  # fmt: skip
        print(f"{variant}: made in {info['seconds']:.0f} s; fallback {info.get('fallback', [])}", flush=True)
        del model
    for name, row in rows.items():
        if "perplexity" in row:
            continue
        t0 = time.perf_counter()
        row["perplexity"] = onnx_perplexity(Path(row["bundle"]) / "model.onnx", test.x, test.y,
                                            threads=args.quality_threads)["perplexity"]  # fmt: skip
        row["delta_pct"] = 100 * (row["perplexity"] / rows["fp32"]["perplexity"] - 1)
        print(f"{name}: ORT ppl {row['perplexity']:.3f} ({row['delta_pct']:+.2f}%, {time.perf_counter() - t0:.0f} s)",
              flush=True)  # fmt: skip
    setup = {**(earlier["setup"] if earlier else {}), **vars(args), "variants": [r for r in rows if r != "fp32"]}
    setup.update(commit=_commit(), load_average_quality=os.getloadavg(), cpu=platform.processor(),
                 torch_fp32_perplexity=torch_ppl, eval_tokens=int(test.x.numel()))  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    path.write_text(json.dumps({"setup": setup, "rows": list(rows.values())}, indent=2, default=str))
    write_md(args.tag)


def int8_bundle(model: torch.nn.Module, fp32_bundle: Path, out: Path, calib: torch.Tensor) -> Path:
    """The int8 file of ``model`` (smoothed, with its fallback) beside a copy of the fp32 bundle's manifest and
    tokenizer (no parity pass: the smoothing's fp32 exactness is tested in tests/quantize/)."""
    from slimtune.export.lm_onnx import export_lm_onnx
    from slimtune.quantize.smoothquant.ort import fallback_nodes, quantize_lm_onnx

    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for name in ("bundle.json", "tokenizer.json"):
        shutil.copy(fp32_bundle / name, out / name)
    fp32 = export_lm_onnx(model, out / "fp32.onnx")
    sq = model.slimtune_smoothquant
    quantize_lm_onnx(fp32, out / "model.onnx", mode=sq["mode"], per_channel=sq["per_channel"],
                     reduce_range=sq["reduce_range"], calibration=calib[:8], calibrate=sq["calibrate"],
                     exclude=fallback_nodes(model, fp32, sq["fallback"]))  # fmt: skip
    fp32.unlink()
    fp32.with_name(f"{fp32.name}.data").unlink(missing_ok=True)
    return out


def speed(args: argparse.Namespace) -> None:
    path = RESULTS / f"lm_smoothquant{args.tag}.json"
    result = json.loads(path.read_text())
    rows = [r for r in result["rows"] if r["variant"] not in args.skip_speed]
    load_before = os.getloadavg()
    runs: dict[str, list[dict]] = {r["variant"]: [] for r in rows}
    for _ in range(args.rounds):
        for r in rows:
            runs[r["variant"]].append(lm_bench(r["bundle"], batch_sizes=(1, 8), prompt_tokens=64, new_tokens=32,
                                               threads=args.threads, repeats=2))  # fmt: skip
    for r in rows:
        got = runs[r["variant"]]
        r["mb"] = got[0]["model_bytes"] / 1e6
        for i, batch in enumerate((1, 8)):
            r[f"decode_b{batch}"] = statistics.median(x["rows"][i]["decode_tokens_per_s"] for x in got)
            r[f"prefill_b{batch}"] = statistics.median(x["rows"][i]["prefill_tokens_per_s"] for x in got)
    for r in rows:
        for k in ("decode_b1", "decode_b8", "prefill_b8"):
            r[f"{k}_x"] = r[k] / rows[0][k]
    result["setup"].update(speed_threads=args.threads, rounds=args.rounds, speed_commit=_commit(),
                           load_average_speed=[load_before, os.getloadavg()])  # fmt: skip
    path.write_text(json.dumps(result, indent=2, default=str))
    write_md(args.tag)


def _commit() -> str:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()


def write_md(tag: str) -> None:
    from lm_smoothquant_md import markdown  # the sibling module (a script's folder is first on sys.path)

    result = json.loads((RESULTS / f"lm_smoothquant{tag}.json").read_text())
    text = markdown(result)
    (RESULTS / f"lm_smoothquant{tag}.md").write_text(text)
    print(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--phase", choices=["quality", "speed"], required=True)
    ap.add_argument("--window", type=int, default=256)
    ap.add_argument("--eval", type=int, default=16)
    ap.add_argument("--calib", type=int, default=8)
    ap.add_argument("--val", type=int, default=4)
    ap.add_argument("--grid", type=float, nargs="+", default=[0.5, 0.6, 0.7, 0.8, 0.9])
    ap.add_argument("--budget", type=float, default=0.015, help="fallback: auto's simulated-perplexity budget")
    ap.add_argument("--quality-threads", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2, help="ORT threads of the speed phase")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tag", default="", help="suffix of the results files (lm_smoothquant{tag}.json)")
    ap.add_argument("--reuse", action="store_true", help="reuse the fp32 bundle of an earlier run")
    ap.add_argument("--variants", nargs="+", default=VARIANTS)
    ap.add_argument("--skip-speed", nargs="*", default=[], help="variants the speed phase does not time")
    ap.add_argument("--append", action="store_true", help="add the variants to the earlier JSON (same windows)")
    args = ap.parse_args()
    quality(args) if args.phase == "quality" else speed(args)


if __name__ == "__main__":
    main()
