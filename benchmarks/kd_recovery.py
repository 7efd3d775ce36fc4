"""Recovery and QAT distilled from the model before the stage vs plain cross-entropy, same budget (Fashion-MNIST).

    python benchmarks/kd_recovery.py            # ~15 min on 1 thread; --quick: a smoke run

What the recipe option ``kd: {temperature: 4, alpha: 0.5}`` of the ``prune`` stage's recovery and of the ``qat``
stage buys: each case starts from the same trained model, is compressed the same way, then gets the same
training budget either with cross-entropy on the labels or with α·CE + (1 − α)·T²·KL from a frozen copy of the
model as it was before the stage (zeros held in both). Cases: LeNet-300-100 (10 epochs, LR 3e-3) pruned to 95%
by global magnitude + 3 recovery epochs; that pruned model + 4-bit QAT (1 epoch); resnet-small (3 epochs)
structured to half its MACs + 1 recovery epoch. Recovery seeds 0 and 1, mean reported. Writes
benchmarks/results/kd_recovery{,_quick}.{json,md}.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimtune.data import DataSplits, load
from slimtune.distill import KDConfig, distill_
from slimtune.env import collect
from slimtune.evaluate import sparsity
from slimtune.models import build
from slimtune.prune import MagnitudePruneConfig, MaskCallback, masks_from_zeros, prune_
from slimtune.prune.structured import StructuredPruneConfig
from slimtune.quantize import QATCallback, QATConfig, prepare_qat_
from slimtune.train import TrainConfig, fit, predict

RESULTS = Path(__file__).resolve().parent / "results"
KD = KDConfig(temperature=4.0, alpha=0.5)
SEEDS = (0, 1)


def accuracy(model: nn.Module, data: DataSplits) -> float:
    assert isinstance(data.test.x, torch.Tensor)
    return float((predict(model, data.test.x).argmax(1) == data.test.y).float().mean())


def trained(arch: str, data: DataSplits, cfg: TrainConfig) -> nn.Module:
    torch.manual_seed(0)
    model = build(arch, input_shape=data.input_shape, num_classes=data.num_classes)
    fit(model, data, config=cfg, desc=arch, progress=False)
    return model


def recover(
    model: nn.Module, teacher: nn.Module | None, data: DataSplits, cfg: TrainConfig, callbacks: list[Any]
) -> None:
    if teacher is None:
        fit(model, data, config=cfg, callbacks=callbacks, desc="ce", progress=False)
    else:
        distill_(model, teacher=teacher, data=data, config=KD, train=cfg, callbacks=callbacks, progress=False)


def compare(
    name: str, start: nn.Module, data: DataSplits, cfg: TrainConfig, prepare: Callable[[nn.Module], list[Any]]
) -> dict[str, Any]:
    """``start`` is the model before the stage (the teacher); ``prepare`` compresses a copy, returns callbacks."""
    out: dict[str, Any] = {"case": name, "before": round(accuracy(start, data), 4)}
    for method in ("ce", "kd"):
        accs, t0 = [], time.perf_counter()
        for seed in SEEDS:
            model = copy.deepcopy(start)
            callbacks = prepare(model)
            out["compressed"] = round(accuracy(model, data), 4)
            recover(model, start if method == "kd" else None, data, TrainConfig(**{**cfg.to_dict(), "seed": seed}),
                    callbacks)  # fmt: skip
            accs.append(accuracy(model, data))
            out["sparsity"] = round(sparsity(model), 4)
        out[method] = [round(a, 4) for a in accs]
        out[f"{method}_seconds"] = round(time.perf_counter() - t0, 1)
    out["delta_points"] = round(100 * (statistics.mean(out["kd"]) - statistics.mean(out["ce"])), 2)
    print(json.dumps(out), flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3,000 examples, 1 epoch per run (smoke run)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--render", action="store_true", help="only rewrite the Markdown from the saved JSON")
    args = parser.parse_args(argv)
    if args.render:
        payload = json.loads((RESULTS / "kd_recovery.json").read_text())
        (RESULTS / "kd_recovery.md").write_text(markdown(payload))
        return 0
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    data = load("fashion-mnist", seed=0, limit=3000 if args.quick else None)
    ep = (lambda n: 1) if args.quick else (lambda n: n)
    mlp = trained("lenet-300-100", data, TrainConfig(epochs=ep(10), lr=3e-3, batch_size=128))

    def magnitude(model: nn.Module) -> list[Any]:
        prune_(model, MagnitudePruneConfig(sparsity=0.95, scope="global"))
        return [MaskCallback(masks_from_zeros(model))]

    rows = [compare("lenet-300-100, magnitude 95% + 3 epochs", mlp, data,
                    TrainConfig(epochs=ep(3), lr=1e-3, batch_size=128), magnitude)]  # fmt: skip
    sparse = copy.deepcopy(mlp)
    held = magnitude(sparse)
    fit(sparse, data, config=TrainConfig(epochs=ep(3), lr=1e-3, batch_size=128), callbacks=held, progress=False)
    qat = QATConfig(bits=4)
    assert isinstance(data.train.x, torch.Tensor)

    def quantize(model: nn.Module) -> list[Any]:
        prepare_qat_(model, qat, calibration=data.train.x[:256])
        return [QATCallback(qat), MaskCallback(masks_from_zeros(model))]

    rows.append(compare("the 95%-sparse LeNet-300-100 + 4-bit QAT, 1 epoch", sparse, data,
                        TrainConfig(epochs=1, lr=1e-4, batch_size=128), quantize))  # fmt: skip
    cnn = trained("resnet-small", data, TrainConfig(epochs=ep(3), lr=3e-3, batch_size=128))

    def structured(model: nn.Module) -> list[Any]:
        prune_(model, StructuredPruneConfig(target_macs=0.5, importance="l1"), data=data)
        return []

    rows.append(compare("resnet-small, structured to 1/2 the MACs + 1 epoch", cnn, data,
                        TrainConfig(epochs=1, lr=1e-3, batch_size=128), structured))  # fmt: skip
    env = collect()
    env["torch_threads"] = args.threads
    payload = {"rows": rows, "kd": KD.to_dict(), "seeds": list(SEEDS), "quick": args.quick,
               "wall_minutes": round((time.perf_counter() - started) / 60, 1), "env": env}  # fmt: skip
    stem = "kd_recovery_quick" if args.quick else "kd_recovery"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(payload, indent=2) + "\n")
    (RESULTS / f"{stem}.md").write_text(markdown(payload))
    print((RESULTS / f"{stem}.md").read_text())
    return 0


def markdown(payload: dict[str, Any]) -> str:
    pct = lambda v: f"{100 * v:.2f}%"  # noqa: E731
    lines = [
        "# Recovery and QAT distilled from the model before the stage vs cross-entropy\n",
        f"Generated by `python benchmarks/kd_recovery.py{' --quick' if payload['quick'] else ''}` in "
        f"{payload['wall_minutes']} min ({payload['env']['torch_threads']} torch thread, torch "
        f"{payload['env']['packages']['torch']}). Fashion-MNIST test split; the same compressed model and training "
        f"budget either way; KD: α·CE + (1 − α)·T²·KL, T = {payload['kd']['temperature']:g}, "
        f"α = {payload['kd']['alpha']}, teacher = a frozen copy of the model before the stage (what a recipe's "
        f"`kd:` option does); recovery seeds {', '.join(map(str, payload['seeds']))}, mean ± spread.\n",
        "| case | before | after compression | cross-entropy | KD from before | Δ KD − CE (pt) | sparsity after |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in payload["rows"]:
        ce, kd = r["ce"], r["kd"]
        sparse = f"{r['sparsity']:.1%}" if r["sparsity"] >= 0.01 else "— (structured: dense, smaller)"
        lines.append(
            f"| {r['case']} | {pct(r['before'])} | {pct(r['compressed'])} | {pct(statistics.mean(ce))} "
            f"({pct(min(ce))}–{pct(max(ce))}) | {pct(statistics.mean(kd))} ({pct(min(kd))}–{pct(max(kd))}) | "
            f"{r['delta_points']:+.2f} | {sparse} |"
        )
    helped = [r["case"] for r in payload["rows"] if r["delta_points"] > 0.1]
    lines.append(
        "\nKD beat cross-entropy by more than 0.1 pt in "
        f"{len(helped)} of {len(payload['rows'])} cases{': ' + '; '.join(helped) if helped else ''}. "
        "It is an option, not the default: measure it on your model.\n"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
