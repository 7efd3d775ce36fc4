"""Distilled MiniLM: a 3-layer student cut from the fine-tuned 6-layer MiniLM-L6 (tweets-binary), distilled.

    python benchmarks/minilm_distill.py                    # ~30 min on 2 cores (+15 min if the fine-tune isn't cached)
    python benchmarks/minilm_distill.py --with-baseline    # also the same student fine-tuned without KD (+15 min)

The student keeps the teacher's embeddings and encoder layers 0, 2 and 4 (as DistilBERT keeps every other
layer) and is trained on the teacher's logits (mixed KD: α·CE + (1 − α)·T²·KL, T = 2; teacher logits cached
once). Reports test accuracy retained vs the teacher and measured latency (batch 1 and 8, sequence 64,
2 threads; PyTorch eager and ONNX Runtime fp32, interleaved in one process). Anchor: DistilBERT keeps 97% of
BERT-base at 1.6× speed. Writes benchmarks/results/minilm_distill.{json,md}.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from _minilm import CACHE, RESULTS, SEQ, accuracy, finetuned_minilm, interleaved_latency
from _provenance import Provenance, line
from torch import nn

from slimtune.distill import KDConfig, distill_, student_from_teacher
from slimtune.export import export_onnx, ort_session
from slimtune.models import load_model, save_model
from slimtune.train import TrainConfig, fit

TRAIN = TrainConfig(epochs=2, lr=1e-4, batch_size=32, weight_decay=0.01, seed=0)
KD = KDConfig(temperature=2.0, alpha=0.5)
LAYERS = (0, 2, 4)
OUT = CACHE / "minilm-distill"


def trained(name: str, make: Callable[[], nn.Module], train: Callable[[nn.Module], Any]) -> tuple[nn.Module, float]:
    """A cached trained student (resumable: the loop checkpoints every epoch) and its training seconds."""
    folder = OUT / name
    if (folder / "model" / "spec.json").exists():
        return load_model(folder / "model"), json.loads((folder / "seconds.json").read_text())["seconds"]
    model = make()
    start = time.perf_counter()
    train(model)
    seconds = time.perf_counter() - start
    save_model(model, folder / "model")
    (folder / "seconds.json").write_text(json.dumps({"seconds": seconds}))
    return model, seconds


def runner(model: nn.Module | None, session: Any, x: torch.Tensor) -> Callable[[int], Callable[[], Any]]:
    def make(b: int) -> Callable[[], Any]:
        batch = x[:b]
        if model is not None:

            def run() -> Any:
                with torch.inference_mode():
                    return model(batch)

            return run
        feed = {session.get_inputs()[0].name: batch.numpy()}
        return lambda: session.run(None, feed)

    return make


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--with-baseline", action="store_true", help="also fine-tune the student without KD")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    prov = Provenance(settings={"threads": 2, "with_baseline": args.with_baseline})
    teacher, data = finetuned_minilm()
    assert isinstance(data.test.x, torch.Tensor)

    def cut() -> nn.Module:
        return student_from_teacher(copy.deepcopy(teacher), layers=LAYERS)

    def kd(m: nn.Module) -> Any:
        return distill_(m, teacher=teacher, data=data, config=KD, train=TRAIN, cache=OUT / "teacher-logits.safetensors",
                        checkpoint_dir=OUT / "kd-ckpt", resume=True)  # fmt: skip

    models: dict[str, nn.Module] = {"teacher (6 layers)": teacher}
    seconds: dict[str, float] = {}
    models["student (3 layers, KD)"], seconds["student (3 layers, KD)"] = trained("kd", cut, kd)
    if args.with_baseline:
        name = "student (3 layers, no KD)"
        models[name], seconds[name] = trained(
            "plain", cut, lambda m: fit(m, data, config=TRAIN, checkpoint_dir=OUT / "plain-ckpt", resume=True)
        )
    x = data.test.x[:8, :SEQ]
    rows: dict[str, dict[str, Any]] = {}
    runners = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, model) in enumerate(models.items()):
            model.eval()
            rows[name] = {"accuracy": accuracy(model, data.test.x, data.test.y),
                          "params": sum(p.numel() for p in model.parameters()),
                          "train_seconds": round(seconds.get(name, 0))}  # fmt: skip
            session = ort_session(export_onnx(model, x[:1], Path(tmp) / f"{i}.onnx"), threads=2)
            runners[f"{name} / torch"] = runner(model, None, x)
            runners[f"{name} / ort"] = runner(None, session, x)
        lat = interleaved_latency(runners, batches=(1, 8), rounds=5, repeats=10)
    t = "teacher (6 layers)"
    for name, row in rows.items():
        row["retained"] = row["accuracy"] / rows[t]["accuracy"]
        for rt in ("torch", "ort"):
            for b in ("b1", "b8"):
                row[f"{rt}_{b}_ms"] = lat[f"{name} / {rt}"][b]
                row[f"{rt}_{b}_speedup"] = lat[f"{t} / {rt}"][b] / lat[f"{name} / {rt}"][b]
    out = {"rows": rows, "train": TRAIN.to_dict(), "kd": KD.to_dict(), "layers": list(LAYERS), "seq": SEQ,
           "test_examples": len(data.test.y), "threads": torch.get_num_threads(),
           "provenance": prov.finish()}  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "minilm_distill.json").write_text(json.dumps(out, indent=2) + "\n")
    lines = [
        "# Distilled MiniLM (tweets-binary): 3-layer student from the fine-tuned 6-layer MiniLM-L6",
        "",
        f"Student = teacher's embeddings + encoder layers {list(LAYERS)} + head, distilled {TRAIN.epochs} epochs "
        f"(mixed KD, T = {KD.temperature}, α = {KD.alpha}, lr {TRAIN.lr}, teacher logits cached). Test set "
        f"{len(data.test.y)} tweets; latency at sequence {SEQ}, {torch.get_num_threads()} threads, medians of 5 "
        f"interleaved rounds in one process. Anchor: DistilBERT keeps 97% at 1.6× speed. {line(out['provenance'])}",
        "",
        "| model | accuracy | retained | params | torch b1 (ms) | torch b8 (ms) | ORT b1 (ms) | ORT b8 (ms) | train |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {100 * r['accuracy']:.2f}% | {100 * r['retained']:.1f}% | {r['params'] / 1e6:.1f}M | "
            f"{r['torch_b1_ms']:.1f} (×{r['torch_b1_speedup']:.2f}) | {r['torch_b8_ms']:.1f} "
            f"(×{r['torch_b8_speedup']:.2f}) | {r['ort_b1_ms']:.1f} (×{r['ort_b1_speedup']:.2f}) | "
            f"{r['ort_b8_ms']:.1f} (×{r['ort_b8_speedup']:.2f}) | {r['train_seconds'] / 60:.0f} min |"
        )
    (RESULTS / "minilm_distill.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
