"""Export coverage on the real built-in architectures: every compression variant × every architecture,
exported to ONNX (+ TorchScript for the torch ones) with its parity check.

    python benchmarks/export_coverage.py              # ~20-30 min on 2 cores
    python benchmarks/export_coverage.py --quick      # images only, small slices

Image models are trained briefly on a Fashion-MNIST slice, transformer-small on tweets-binary; MiniLM-L6
is the fine-tuned one of benchmarks/recipes/minilm_tweets_finetune.yaml when cached (skipped otherwise).
Writes benchmarks/results/export_coverage.{json,md}: a pass/fail table with the parity numbers.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from _provenance import Provenance, line
from torch import nn

from slimtune.data import load
from slimtune.data.core import DataSplits
from slimtune.export.coverage import VARIANTS, check_cell
from slimtune.models import build
from slimtune.models.inputs import tokenize_splits
from slimtune.train import TrainConfig, fit

RESULTS = Path(__file__).resolve().parent / "results"
IMAGE_ARCHS = ("mlp", "lenet-300-100", "lenet5", "resnet-small")


def models(quick: bool, only: str | None = None) -> list[tuple[str, nn.Module, DataSplits]]:
    out = []
    images = load("fashion-mnist", seed=0, limit=1200 if quick else 4000)
    if only == "efficientnet-lite0":  # ImageNet-pretrained; a short fine-tune on a smaller slice
        small = load("fashion-mnist", seed=0, limit=800)
        torch.manual_seed(0)
        m = build("efficientnet-lite0", input_shape=small.input_shape, num_classes=small.num_classes)
        fit(m, small, config=TrainConfig(epochs=1, lr=1e-3, batch_size=32), progress=False)
        return [("efficientnet-lite0", m, small)]
    for arch in IMAGE_ARCHS:
        torch.manual_seed(0)
        m = build(arch, input_shape=images.input_shape, num_classes=images.num_classes)
        fit(m, images, config=TrainConfig(epochs=2, lr=2e-3, batch_size=64), progress=False)
        out.append((arch, m, images))
    if quick:
        return out
    text, pre = tokenize_splits(load("tweets-binary", seed=0, limit=2000), max_length=64)
    torch.manual_seed(0)
    m = build("transformer-small", input_shape=text.input_shape, num_classes=2, vocab_size=pre["vocab_size"])
    fit(m, text, config=TrainConfig(epochs=2, lr=1e-3, batch_size=64), progress=False)
    out.append(("transformer-small", m, text))
    try:
        from _minilm import FINETUNED, finetuned_minilm

        if (FINETUNED / "spec.json").exists():
            minilm, data = finetuned_minilm()
            out.append(("minilm-l6 (fine-tuned)", minilm, _slice(data, 800)))
    except Exception as exc:  # the text extra may be missing: the table says so
        print(f"minilm skipped: {exc}", flush=True)
    return out


def _slice(data: DataSplits, n: int) -> DataSplits:
    from dataclasses import replace

    return replace(data, train=data.train.take(n), val=data.val.take(n // 4), test=data.test.take(n // 2))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", choices=["efficientnet-lite0"], help="run one more architecture, merged in")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(2)
    prov = Provenance(settings={"threads": 2, "quick": args.quick, "only": args.only})
    rows: list[dict[str, Any]] = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for arch, model, data in models(args.quick, args.only):
            for variant in VARIANTS.names():
                row = {"arch": arch, **check_cell(model, data, variant, Path(tmp) / arch / variant)}
                print(json.dumps(row), flush=True)
                rows.append(row)
    RESULTS.mkdir(exist_ok=True)
    name = "export_coverage_quick" if args.quick else "export_coverage"
    if args.only and (RESULTS / f"{name}.json").exists():  # merge with the earlier run's other architectures
        earlier = json.loads((RESULTS / f"{name}.json").read_text())["rows"]
        rows = [r for r in earlier if r["arch"] != args.only] + rows
    record = prov.finish()
    (RESULTS / f"{name}.json").write_text(json.dumps({"rows": rows, "provenance": record}, indent=2) + "\n")
    archs = list(dict.fromkeys(r["arch"] for r in rows))
    variants = VARIANTS.names()
    cell = {(r["arch"], r["variant"]): r for r in rows}

    def fmt(r: dict[str, Any]) -> str:
        if not r["ok"]:
            return f"FAIL: {r.get('error', '?')[:60]}"
        if r["precision"] == "fp32":
            ts = " +TS" if "torchscript_max_abs_diff" in r else ""
            return f"✓ Δ{r['max_abs_diff']:.0e}{ts}"
        raw = r.get("raw_agreement", r["agreement"])
        return f"✓ {100 * r['agreement']:.1f}% (raw {100 * raw:.1f}%)"

    passed = sum(r["ok"] for r in rows)
    lines = [
        "# Export coverage: every variant × every built-in architecture",
        "",
        f"{passed}/{len(rows)} cells pass (last run {(time.perf_counter() - start) / 60:.1f} min). fp32 cells: "
        "max |Δ logits| ONNX Runtime vs PyTorch (tolerance 1e-4), +TS = TorchScript export with parity too; "
        "int8 cells: argmax agreement with the PyTorch reference beyond near-ties (tolerance 99%), and in brackets "
        f"the raw agreement (every flip counted, near-ties included). {line(record)}",
        "",
        "| architecture | " + " | ".join(variants) + " |",
        "| --- |" + " --- |" * len(variants),
    ]
    for a in archs:
        lines.append(f"| {a} | " + " | ".join(fmt(cell[(a, v)]) for v in variants) + " |")
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if passed == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
