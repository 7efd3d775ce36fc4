"""Latency-aware structured pruning (HALP-style table) vs MAC-driven pruning vs Torch-Pruning, resnet-small on
Fashion-MNIST, 3 recovery epochs, 3 seeds (issue #22, Deliver 5).

    python benchmarks/latency_aware_pruning.py            # ~60-90 min on 2 idle cores
    python benchmarks/latency_aware_pruning.py --quick    # smoke run: 2k examples, 1 epoch, 1 seed

One dense model (3 epochs, seed 0, cached under benchmarks/.cache/latency_aware/). The latency table is measured
once for ONNX Runtime at batch 32, 2 threads (saved beside the results). Per MAC target (1/2, 1/4):
*mac*: slimtune's default (bisection to the MAC budget, NCHWc channel blocks); *table@macs*: the same MAC budget,
units chosen by the table (importance lost per ms saved); *table@latency*: ``target_latency`` equal to the MAC
fraction (per MAC 1.0 asked); *torch-pruning*: MetaPruner, L1, bisected to the MAC target. Each pruned model is
recovered for ``EPOCHS`` epochs (LR 3e-3) with 3 seeds; accuracy is mean ± std over the seeds. ORT latency of
each recovered model is timed in 5 interleaved rounds in one process (paired with the dense model);
predicted vs measured latency is recorded for the table rows. Writes results/latency_aware_pruning.{json,md}.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from _provenance import commit
from structured_vs_torch_pruning import ort_latency_ms, torch_pruning
from torch import nn

from slimtune.data import load
from slimtune.errors import ConfigError
from slimtune.evaluate import count_macs
from slimtune.export import export_onnx, ort_session
from slimtune.models import build
from slimtune.prune import prune_summarized_
from slimtune.prune.structured import StructuredPruneConfig
from slimtune.prune.structured.latency import LatencyTable, measure_latency_table
from slimtune.train import TrainConfig, fit, predict

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
CACHE = BENCH / ".cache" / "latency_aware"
TARGETS = (0.5, 0.25)
THREADS = 2
BLOCK: dict[str, Any] = {"targets": ("channels", "layers"), "layers_ratio": 0.5}


def dense_model(data: Any, epochs: int, quick: bool) -> nn.Module:
    torch.manual_seed(0)
    model = build("resnet-small", input_shape=data.input_shape, num_classes=10)
    path = CACHE / f"dense-{epochs}{'-quick' if quick else ''}.pt"
    if path.exists():
        model.load_state_dict(torch.load(path, weights_only=True))
        return model
    fit(model, data, config=TrainConfig(epochs=epochs, lr=3e-3, batch_size=128, seed=0))
    CACHE.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return model


def pruned_models(
    dense: nn.Module, data: Any, table: Path, skipped: dict[str, str], only: set[str] | None = None
) -> dict[str, nn.Module]:
    x1 = data.test.x[:1]
    out: dict[str, nn.Module] = {}
    for keep in TARGETS:
        table_options = {
            "importance": "l1",
            "latency_table": str(table),
            "latency_batch": 32,
            "latency_threads": THREADS,
        }
        configs = {
            f"mac@{keep}": StructuredPruneConfig(target_macs=keep, importance="l1"),
            f"table@macs{keep}": StructuredPruneConfig(target_macs=keep, **table_options),
            f"table@latency{keep}": StructuredPruneConfig(target_latency=keep, **table_options),
            # depth and width: the one removable residual block goes first, then channels to the MAC target
            f"mac+block@{keep}": StructuredPruneConfig(target_macs=keep, importance="l1", **BLOCK),
            f"table@macs+block{keep}": StructuredPruneConfig(target_macs=keep, **BLOCK, **table_options),
        }
        for name, config in configs.items():
            if only is not None and name not in only:
                continue
            m = copy.deepcopy(dense)
            try:
                result = prune_summarized_(m, config, data=data)
            except ConfigError as exc:  # e.g. a latency target the table says no width reaches
                print(f"{name}: {exc}", flush=True)
                skipped[name] = str(exc)
                continue
            m.slimtune_predicted = result.record.get("latency_ms_predicted")  # type: ignore[assignment]
            out[name] = m
        if only is None or f"torch-pruning@{keep}" in only:
            out[f"torch-pruning@{keep}"] = torch_pruning(dense, x1, keep)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2k examples, 1 epoch, 1 seed: a smoke run")
    ap.add_argument("--epochs", type=int, default=3, help="recovery epochs per pruned model (default 3)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--render", action="store_true", help="only rewrite the Markdown from the saved JSON")
    ap.add_argument("--only", help="comma-separated rows to (re)run, merged into the saved JSON; the saved table "
                    "is reused and each row's speedup is paired with the dense model timed in this run")  # fmt: skip
    args = ap.parse_args()
    if args.render:
        name = "latency_aware_pruning" + ("_quick" if args.quick else "")
        (RESULTS / f"{name}.md").write_text(render(json.loads((RESULTS / f"{name}.json").read_text())) + "\n")
        return 0
    torch.set_num_threads(THREADS)
    epochs, seeds = (1, 1) if args.quick else (args.epochs, args.seeds)
    data = load("fashion-mnist", seed=0, limit=2000 if args.quick else None)
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    dense = dense_model(data, 1 if args.quick else 3, args.quick)
    x1, x32 = data.test.x[:1], data.test.x[:32]
    table_path = RESULTS / ("latency_table_resnet_small.json" if not args.quick else ".latency_table_quick.json")
    only = set(args.only.split(",")) if args.only else None
    if only is None:
        table = measure_latency_table(dense, x1, batch=32, threads=THREADS, step=8)
        table.save(table_path)
    else:
        table = LatencyTable.load(table_path)
    skipped: dict[str, str] = {}
    candidates = pruned_models(dense, data, table_path, skipped, only)
    dense_macs = count_macs(dense, x1)
    rows: dict[str, dict[str, Any]] = {"dense": {"accuracy": [float((predict(dense, data.test.x).argmax(1) ==
                                                                      data.test.y).float().mean())]}}  # fmt: skip
    recovered: dict[str, nn.Module] = {"dense": dense}
    for name, model in candidates.items():
        accs = []
        for seed in range(seeds):
            m = copy.deepcopy(model)
            fit(m, data, config=TrainConfig(epochs=epochs, lr=3e-3, batch_size=128, seed=seed + 1))
            accs.append(float((predict(m, data.test.x).argmax(1) == data.test.y).float().mean()))
            if seed == 0:
                recovered[name] = m
        rows[name] = {"accuracy": accs, "predicted_ms": getattr(model, "slimtune_predicted", None)}
        print(name, accs, flush=True)
    sessions = {n: ort_session(export_onnx(m, x1, CACHE / f"{i}.onnx"), threads=THREADS)
                for i, (n, m) in enumerate(recovered.items())}  # fmt: skip
    lat: dict[str, list[float]] = {n: [] for n in sessions}
    ratios: dict[str, list[float]] = {n: [] for n in sessions}
    for _ in range(5):  # interleaved rounds; each model's speedup is paired with the dense timing of its round
        dense_ms = ort_latency_ms(sessions["dense"], x32, 30)
        for n, s in sessions.items():
            ms = dense_ms if n == "dense" else ort_latency_ms(s, x32, 30)
            lat[n].append(ms)
            ratios[n].append(dense_ms / ms)
    for n, m in recovered.items():
        macs = count_macs(m, x1)
        r = rows[n]
        r.update(macs=macs, macs_reduction=dense_macs / macs, params=sum(p.numel() for p in m.parameters()),
                 ort_b32_ms=statistics.median(lat[n]), ort_speedup_b32=statistics.median(ratios[n]),
                 speedup_spread=(max(ratios[n]) - min(ratios[n])) / statistics.median(ratios[n]))  # fmt: skip
        r["per_mac"] = r["ort_speedup_b32"] / r["macs_reduction"]
        r["mean"], r["std"] = statistics.mean(r["accuracy"]), statistics.pstdev(r["accuracy"])
    out = {"rows": rows, "commit": commit(), "threads": THREADS, "recovery_epochs": epochs, "seeds": seeds,
           "quick": args.quick, "load_average_before": load_before, "load_average_after": os.getloadavg()[0],
           "seconds": round(time.perf_counter() - started), "table": str(table_path.name),
           "table_model_ms": table.model_ms, "table_calibration": table.calibration, "skipped": skipped}  # fmt: skip
    name = "latency_aware_pruning" + ("_quick" if args.quick else "")
    if only is not None:  # merge: the saved run's rows stay, these rows (and this run's record) are added
        saved = json.loads((RESULTS / f"{name}.json").read_text())
        run = {k: out[k] for k in ("commit", "load_average_before", "load_average_after", "seconds")}
        for n in rows:
            if n != "dense":
                saved["rows"][n] = {**rows[n], "run": {**run, "dense_ort_b32_ms": rows["dense"]["ort_b32_ms"]}}
        saved.setdefault("skipped", {}).update(skipped)
        saved.setdefault("added_runs", []).append({**run, "rows": sorted(n for n in rows if n != "dense")})
        out = saved
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(out, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(render(out) + "\n")
    print(render(out))
    return 0


def render(out: dict[str, Any]) -> str:
    rows = out["rows"]
    lines = [
        "# Latency-aware structured pruning (resnet-small, Fashion-MNIST, ONNX Runtime b32)",
        "",
        f"Recovery {out['recovery_epochs']} epochs (LR 3e-3) × {out['seeds']} seeds; accuracy mean ± std; ORT "
        f"{out['threads']} threads, b32, 5 interleaved rounds, speedup paired per round with the dense model "
        f"(spread = (max − min) / median of the paired ratios); load average {out['load_average_before']:.1f} → "
        f"{out['load_average_after']:.1f}; commit {out['commit'][:7]}; {out['seconds']} s. *per MAC* = ORT "
        "speedup ÷ MAC reduction (goal ≥ 0.9). *predicted*: the table's calibrated prediction (ms) before → after.",
        "",
        "| model | accuracy | params | MACs ↓ | ORT b32 ms | speedup | spread | per MAC | predicted ms |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for n, r in rows.items():
        p = r.get("predicted_ms")
        pred = f"{p['before']:.2f} → {p['after']:.2f}" if p else ""
        lines.append(
            f"| {n} | {100 * r['mean']:.2f} ± {100 * r['std']:.2f}% | {r['params']:,} | ×{r['macs_reduction']:.2f} "
            f"| {r['ort_b32_ms']:.2f} | ×{r['ort_speedup_b32']:.2f} | {r['speedup_spread']:.2f} | "
            f"{r['per_mac']:.2f} | {pred} |"
        )
    notes = [f"- {n}: not built: {why}" for n, why in out.get("skipped", {}).items()]
    for run in out.get("added_runs", []):
        notes.append(
            f"- {', '.join(run['rows'])}: added by a later run (`--only`, commit {run['commit'][:7]}, load "
            f"{run['load_average_before']:.1f} → {run['load_average_after']:.1f}, {run['seconds']} s), the same "
            "cached dense model and saved table; their speedups are paired with the dense model timed in that run"
        )
    if out.get("note"):
        notes.append(f"- Note: {out['note']}")
    notes += [f"- {a}" for a in out.get("analysis", [])]
    lines += ["", *notes] if notes else []
    lines += ["", "## Goal check (one model ≥ 0.9 per MAC and ≥ Torch-Pruning's mean accuracy)", ""]
    for keep in TARGETS:
        tp = rows[f"torch-pruning@{keep}"]
        ours = {n: r for n, r in rows.items() if n.endswith(str(keep)) and not n.startswith("torch")}
        both = [n for n, r in ours.items() if r["per_mac"] >= 0.9 and r["mean"] >= tp["mean"]]
        lines.append(
            f"- **{keep} of the MACs**: Torch-Pruning {100 * tp['mean']:.2f}% ({tp['per_mac']:.2f} per MAC); "
            + "; ".join(f"{n} {100 * r['mean']:.2f}% ({r['per_mac']:.2f} per MAC)" for n, r in ours.items())
            + f". **{'met by ' + ', '.join(both) if both else 'not met'}**."
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
