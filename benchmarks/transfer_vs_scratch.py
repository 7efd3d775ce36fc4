"""Transfer learning vs training from scratch, on this CPU.

    python benchmarks/transfer_vs_scratch.py           # the full run: about 2 h on 2 cores
    python benchmarks/transfer_vs_scratch.py --quick   # a 2-3 min smoke run on tiny slices; writes no results
    python benchmarks/transfer_vs_scratch.py --part vision   # one part; the other part's saved rows are kept

Text: all-MiniLM-L6-v2 (pretrained) on tweets-binary, fine-tuned four ways (linear probe, last 2 encoder
blocks, full, LoRA r=8 on query/value merged back), against transformer-small trained from scratch.
Vision: EfficientNet-Lite0 (ImageNet-pretrained; full fine-tune and linear probe) on a Fashion-MNIST slice
upsampled to 64×64, against resnet-small from scratch, with 1 %, 10 % and 100 % of the training slice.
Every run of one part gets the same optimizer-step budget. Reports test accuracy, macro-F1, trained
parameters and wall time; the full run writes benchmarks/results/transfer_vs_scratch.{json,md}.
The committed results were made part by part: text 48.2 min, vision 70.4 min (about 2 h in all).
Not collected by pytest.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from slimtune.data import DataSplits, Split, load
from slimtune.env import collect
from slimtune.evaluate.metrics import classification_metrics
from slimtune.models import build
from slimtune.models.inputs import load_data, load_start_model
from slimtune.recipe.schema import DataRef, ModelRef
from slimtune.train import Callback, LoopState, TrainConfig, predict
from slimtune.transfer import FinetuneConfig, LoRAConfig, finetune_

RESULTS = Path(__file__).resolve().parent / "results"


class CountTrainable(Callback):
    def on_fit_start(self, state: LoopState) -> None:
        self.count = sum(p.numel() for p in state.model.parameters() if p.requires_grad)


def epochs_for(steps: int, data: DataSplits, batch_size: int) -> int:
    """Epochs that give about ``steps`` optimizer steps (at least one epoch)."""
    return max(1, round(steps / max(1, -(-len(data.train) // batch_size))))


def run(name: str, model: nn.Module, data: DataSplits, cfg: FinetuneConfig, **info: Any) -> dict[str, Any]:
    count = CountTrainable()
    torch.manual_seed(cfg.train.seed)
    start = time.perf_counter()
    finetune_(model, data, cfg, callbacks=[count], progress=False)
    seconds = time.perf_counter() - start
    assert isinstance(data.test.x, torch.Tensor)
    pred = predict(model, data.test.x).argmax(1)
    metrics = classification_metrics(data.test.y.numpy(), pred.numpy(), num_classes=data.num_classes)
    steps = cfg.train.epochs * -(-len(data.train) // cfg.train.batch_size)  # the optimizer steps actually run
    row = {"method": name, **info, "train_examples": len(data.train), "epochs": cfg.train.epochs, "steps": steps}
    row |= {"test_accuracy": round(float(metrics["accuracy"]), 4), "f1_macro": round(float(metrics["f1_macro"]), 4)}
    row |= {"trained_params": count.count, "seconds": round(seconds, 1)}
    print(f"  {name} {info}: acc {row['test_accuracy']:.4f} ({row['seconds']} s)", flush=True)
    return row


def text_part(*, quick: bool, steps: int, only: set[str] | None = None) -> list[dict[str, Any]]:
    ref = DataRef(name="tweets-binary", limit=80 if quick else 10_000, max_length=16 if quick else 64)
    minilm, scratch = ModelRef(name="minilm-l6"), ModelRef(name="transformer-small")
    data, pre = load_data(ref, minilm)
    print(data.summary(), flush=True)
    majority = float((data.test.y == data.test.y.mode().values).float().mean())
    bs = 16 if quick else 32
    epochs = epochs_for(steps, data, bs)

    def train(lr: float, weight_decay: float = 0.0) -> TrainConfig:
        return TrainConfig(epochs=epochs, lr=lr, batch_size=bs, weight_decay=weight_decay)

    methods = {
        "linear probe": FinetuneConfig(freeze="linear-probe", train=train(1e-2)),
        "last 2 blocks": FinetuneConfig(freeze="all-but-last-2", train=train(1e-4)),
        "full": FinetuneConfig(train=train(5e-5, 0.01)),
        "LoRA r=8": FinetuneConfig(lora=LoRAConfig(r=8, alpha=16), train=train(1e-3)),
    }
    rows = []
    for name, cfg in methods.items():
        if only is not None and name not in only:
            continue
        model = load_start_model(minilm, data, pre)
        rows.append(run(name, model, data, cfg, arch="minilm-l6", majority=round(majority, 4)))
    if only is not None and not {"from scratch", "from scratch (long)"} & only:
        return rows
    data, pre = load_data(ref, scratch)
    if only is None or "from scratch" in only:
        model = load_start_model(replace(scratch, options={"dim": 128, "heads": 4, "layers": 2, "ffn": 256}), data, pre)
        cfg = FinetuneConfig(train=train(1e-3, 0.01))
        rows.append(run("from scratch", model, data, cfg, arch="transformer-small", majority=round(majority, 4)))
    # a fair budget for the small model: about the wall time of the full MiniLM fine-tune (~16 min here), best epoch
    # by validation accuracy (restore_best), so "pretrained beats scratch" is not just "scratch got 22 seconds"
    if only is None or "from scratch (long)" in only:
        model = load_start_model(replace(scratch, options={"dim": 128, "heads": 4, "layers": 2, "ffn": 256}), data, pre)
        cfg = FinetuneConfig(train=replace(train(1e-3, 0.01), epochs=2 if quick else 30))
        rows.append(run("from scratch (long)", model, data, cfg, arch="transformer-small", majority=round(majority, 4)))
    return rows


def upsample(data: DataSplits, size: int) -> DataSplits:
    def up(split: Split) -> Split:
        assert isinstance(split.x, torch.Tensor)
        x = torch.cat(
            [F.interpolate(split.x[i : i + 512], size=(size, size), mode="bilinear") for i in range(0, len(split), 512)]
        )
        return Split(x, split.y)

    return replace(data, train=up(data.train), val=up(data.val), test=up(data.test), input_shape=(1, size, size))


def vision_part(*, quick: bool, steps: int, only: set[str] | None = None) -> list[dict[str, Any]]:
    size = 32 if quick else 64
    data = upsample(load("fashion-mnist", seed=0, limit=150 if quick else 10_000), size)
    print(data.summary(), flush=True)
    rows, bs = [], 32
    for fraction in (0.01, 0.1, 1.0):
        n = max(data.num_classes, round(fraction * len(data.train)))
        # best-epoch selection on 250 validation images: small fractions train for many epochs, each one validated
        part = replace(data, train=data.train.take(n), val=data.val.take(250))
        epochs = min(epochs_for(steps, part, bs), 200)
        train = TrainConfig(epochs=epochs, lr=1e-3, batch_size=bs, weight_decay=0.01)
        info = {"fraction": fraction}
        for name, cfg in {
            "full": FinetuneConfig(train=train),
            "linear probe": FinetuneConfig(freeze="linear-probe", train=replace(train, lr=1e-2)),
        }.items():
            if only is not None and name not in only:
                continue
            model = build("efficientnet-lite0", input_shape=part.input_shape, num_classes=data.num_classes)
            rows.append(run(name, model, part, cfg, arch="efficientnet-lite0", **info))
        if only is not None and "from scratch" not in only:
            continue
        torch.manual_seed(0)
        model = build("resnet-small", input_shape=part.input_shape, num_classes=data.num_classes)
        rows.append(run("from scratch", model, part, FinetuneConfig(train=train), arch="resnet-small", **info))
    return rows


def table(rows: list[dict[str, Any]], keys: list[str]) -> str:
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(r.get(k, "")) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def render(payload: dict[str, Any]) -> str:
    keys = [
        "method",
        "arch",
        "train_examples",
        "epochs",
        "steps",
        "test_accuracy",
        "f1_macro",
        "trained_params",
        "seconds",
    ]
    md = ["# Transfer learning vs training from scratch\n"]
    text, vision = payload.get("text"), payload.get("vision")
    for title, part, cols in (
        ("Text: tweets-binary", text, keys),
        ("Vision: Fashion-MNIST slice (upsampled to 64×64)", vision, ["fraction", *keys]),
    ):
        if not part:
            continue
        rows = part["rows"]
        if "majority" in rows[0]:
            title += f" (majority class {rows[0]['majority']:.2%})"
        md += [
            f"## {title}\n",
            f"Generated by `python benchmarks/transfer_vs_scratch.py --part {part['name']}` "
            f"in {part['minutes']:.1f} min, "
            f"{part['threads']} torch thread(s), load average {part['load'][0]:.1f} → {part['load'][1]:.1f}; "
            f"target {part['steps']} optimizer steps per run, rounded to whole epochs: the steps column gives "
            "what each row actually ran (seconds are wall time on this shared 2-core machine).\n",
            table(rows, cols) + "\n",
        ]
        md += [f"{note}\n" for note in part.get("notes", [])]
        for rerun in part.get("reruns", []):
            md.insert(-1, f"Rerun later (load average {rerun['load'][0]:.1f} → {rerun['load'][1]:.1f}): "
                      f"{', '.join(rerun['methods'])}.\n")  # fmt: skip
    return "\n".join(md)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny slices, a few steps each; writes no results")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps per run (default 600; quick 4)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is robust on a shared machine)")
    parser.add_argument(
        "--part", choices=["text", "vision", "all"], default="all", help="run one part; the other's saved rows are kept"
    )
    parser.add_argument("--methods", default=None, help="comma-separated methods to (re)run; other saved rows are kept")
    args = parser.parse_args(argv)
    only = None if args.methods is None else {m.strip() for m in args.methods.split(",")}
    torch.set_num_threads(args.threads)
    steps = args.steps or (4 if args.quick else 600)
    out = RESULTS / "transfer_vs_scratch.json"
    payload: dict[str, Any] = {}
    for name, fn in (("text", text_part), ("vision", vision_part)):
        if args.part not in (name, "all"):
            continue
        load_before, start = os.getloadavg()[0], time.perf_counter()
        rows = fn(quick=args.quick, steps=steps, only=only)
        minutes = (time.perf_counter() - start) / 60
        load = [round(load_before, 1), round(os.getloadavg()[0], 1)]
        payload[name] = {"name": name, "rows": rows, "steps": steps, "minutes": round(minutes, 1)}
        payload[name] |= {"threads": args.threads, "load": load}
    if not args.quick and out.exists():  # read at the end: the other part may have been run meanwhile
        saved = json.loads(out.read_text())
        for name, part in payload.items():
            if only is not None and name in saved:  # a rerun of some methods: keep the other rows, in order
                new = {(r["method"], r.get("fraction")): r for r in part["rows"]}
                old = saved[name]["rows"]
                part["rows"] = [new.pop((r["method"], r.get("fraction")), r) for r in old] + list(new.values())
                part["minutes"] = saved[name]["minutes"]
                part["reruns"] = [*saved[name].get("reruns", []), {"methods": sorted(only), "load": part["load"]}]
                part["load"] = saved[name]["load"]
        payload = saved | payload
    md = render(payload)
    print(md)
    if not args.quick:
        RESULTS.mkdir(parents=True, exist_ok=True)
        payload["env"] = collect()
        out.write_text(json.dumps(payload, indent=2) + "\n")
        (RESULTS / "transfer_vs_scratch.md").write_text(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
