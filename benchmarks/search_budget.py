"""Budget search (issue #7): the fastest model within 1 point of accuracy, against the fp32 PyTorch baseline.

    python benchmarks/search_budget.py              # resnet-small on Fashion-MNIST, then MiniLM-L6 on tweets-binary
    python benchmarks/search_budget.py --quick      # smoke run: 3,000 Fashion-MNIST examples, 2-minute budget
    python benchmarks/search_budget.py --only resnet

For each model: train (or load) the teacher, time it in PyTorch eager fp32 at batch 1 and 8, run
``slimtune.search`` with ``max_accuracy_drop=1.0, objective="latency"`` and a wall-clock budget, and report
the chosen bundle's latency and size ratios against that baseline, its test accuracy and the search's wall
time. Writes benchmarks/results/search_budget{,_quick}.{json,md}. (The INC / NNCF accuracy-aware
comparison the issue also asks for is not part of this script yet.)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimtune._io import path_bytes
from slimtune.data import DataSplits, load
from slimtune.models import build, save_model
from slimtune.search import SearchConfig, search
from slimtune.train import TrainConfig, fit, predict

BENCH = Path(__file__).resolve().parent
RESULTS, CACHE = BENCH / "results", BENCH / ".cache" / "search_budget"


def torch_latency_ms(model: nn.Module, x: torch.Tensor, batch: int, *, seconds: float = 1.0) -> float:
    model.eval()
    xb = torch.cat([x] * -(-batch // len(x)))[:batch]
    times: list[float] = []
    with torch.inference_mode():
        for _ in range(5):
            model(xb)
        deadline = time.perf_counter() + seconds
        while len(times) < 20 or time.perf_counter() < deadline:
            start = time.perf_counter()
            model(xb)
            times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def accuracy(model: nn.Module, data: DataSplits) -> float:
    assert isinstance(data.test.x, torch.Tensor)
    return float((predict(model, data.test.x).argmax(1) == data.test.y).float().mean())


def resnet_teacher(quick: bool) -> tuple[nn.Module, DataSplits]:
    data = load("fashion-mnist", seed=0, limit=3000 if quick else None)
    torch.manual_seed(0)
    model = build("resnet-small", input_shape=data.input_shape, num_classes=data.num_classes)
    fit(model, data, config=TrainConfig(epochs=1 if quick else 3, lr=3e-3, batch_size=128, seed=0), desc="teacher")
    return model, data


def minilm_teacher(quick: bool) -> tuple[nn.Module, DataSplits]:
    sys.path.insert(0, str(BENCH))
    from _minilm import finetuned_minilm  # the shared fine-tuned MiniLM-L6 (trained once, cached)

    return finetuned_minilm()


SETTINGS: dict[str, dict[str, Any]] = {
    "resnet": {
        "title": "resnet-small, Fashion-MNIST",
        "teacher": resnet_teacher,
        "budget": "30m",
        "space": {"techniques": ("prune", "student", "int8"), "student_widths": (0.5, 0.25), "batch_size": 128},
    },
    "minilm": {
        "title": "MiniLM-L6, tweets-binary",
        "teacher": minilm_teacher,
        "budget": "60m",
        "space": {
            "techniques": ("prune", "student", "int8"),
            "student_widths": (0.5,),
            "prune_ratios": (0.25, 0.5),
            "batch_size": 32,
            "lr": 5e-5,
            "full_epochs": 2,
        },
    },
}


def run(name: str, quick: bool) -> dict[str, Any]:
    setting = SETTINGS[name]
    teacher, data = setting["teacher"](quick)
    assert isinstance(data.test.x, torch.Tensor)
    base = {f"batch{b}": torch_latency_ms(teacher, data.test.x, b) for b in (1, 8)}
    base_bytes = path_bytes(save_model(teacher, CACHE / name / "teacher") / "model.safetensors")
    space = dict(setting["space"])
    if quick:
        space.update(full_epochs=2, proxy_epochs=1)
    config = SearchConfig(
        max_accuracy_drop=1.0, objective="latency", time_budget="2m" if quick else setting["budget"], **space
    )
    start = time.perf_counter()
    result = search(
        teacher,
        data,
        config=config,
        out=CACHE / name / "search",
        force=True,
        progress=lambda e: print(e.line, flush=True),
    )
    wall = time.perf_counter() - start
    chosen = result.chosen
    lat = chosen["bundle_latency_ms"]
    return {
        "setting": setting["title"],
        "teacher_test_accuracy_torch": accuracy(teacher, data),
        "teacher_torch_fp32_latency_ms": base,
        "teacher_bytes": base_bytes,
        "chosen": chosen["name"],
        "chosen_config": chosen["config"],
        "met_budget": result.met_budget,
        "message": result.message,
        "chosen_test_accuracy": chosen["test_accuracy"],
        "chosen_ort_latency_ms": lat,
        "latency_ratio_batch1": base["batch1"] / lat["batch1"],
        "latency_ratio_batch8": base["batch8"] / lat["batch8"],
        "size_ratio": base_bytes / chosen["bytes"],
        "search_wall_s": wall,
        "candidates": len(result.candidates),
        "front": [r["name"] for r in result.front],
    }


def markdown(rows: list[dict[str, Any]], *, quick: bool) -> str:
    lines = [
        f"# Budget search: fastest model within 1 pt{' (quick smoke run)' if quick else ''}",
        "",
        f"torch {torch.__version__}, {torch.get_num_threads()} threads. Baseline: the teacher in PyTorch eager fp32.",
        "",
        "| setting | chosen | test acc. (teacher) | latency ratio b1 / b8 | size ratio | search wall time |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['setting']} | {r['chosen']}{'' if r['met_budget'] else ' (budget not met)'} | "
            f"{100 * r['chosen_test_accuracy']:.2f}% ({100 * r['teacher_test_accuracy_torch']:.2f}%) | "
            f"{r['latency_ratio_batch1']:.2f}× / {r['latency_ratio_batch8']:.2f}× | {r['size_ratio']:.2f}× | "
            f"{r['search_wall_s'] / 60:.1f} min |"
        )
    lines += ["", *(f"- {r['setting']}: {r['message']}" for r in rows), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3,000 examples, 2-minute budget, resnet only")
    parser.add_argument("--only", choices=sorted(SETTINGS), help="run one setting")
    args = parser.parse_args(argv)
    names = [args.only] if args.only else (["resnet"] if args.quick else list(SETTINGS))
    rows = [run(name, args.quick) for name in names]
    stem = "search_budget_quick" if args.quick else "search_budget"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(rows, indent=2, default=str) + "\n")
    (RESULTS / f"{stem}.md").write_text(markdown(rows, quick=args.quick))
    print(markdown(rows, quick=args.quick))
    return 0


if __name__ == "__main__":
    sys.exit(main())
