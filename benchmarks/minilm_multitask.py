"""Multi-task learning: tweets-binary + tweets-3 on one MiniLM-L6 trunk vs two single-task fine-tunes.

    python benchmarks/minilm_multitask.py        # ~45 min on 2 cores (reuses the cached tweets-binary fine-tune)

Both tasks start from the pretrained all-MiniLM-L6-v2 with the same budget (2 epochs, lr 5e-5, batch 32 per
task, seed 0; the multi-task step takes one batch of each task, uncertainty weighting of Kendall et al.).
The two datasets are label views of one tweet corpus, so each task's training split is filtered of the
other task's test tweets (no test tweet is ever trained on). Reports test accuracy per task and the
parameters needed to serve both tasks. Writes
benchmarks/results/minilm_multitask.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import torch
from _minilm import CACHE, RESULTS, accuracy, finetuned_minilm

from slimtune.models import load_model, save_model
from slimtune.models.inputs import load_data, load_start_model
from slimtune.recipe.schema import DataRef, ModelRef
from slimtune.train import TrainConfig, fit
from slimtune.transfer import MultiTaskConfig, TaskSpec, export_task, fit_multitask, multitask_model

TRAIN = TrainConfig(epochs=2, lr=5e-5, batch_size=32, weight_decay=0.01, seed=0)
MINILM = ModelRef(name="minilm-l6")
OUT = CACHE / "minilm-multitask"


def task_data(name: str) -> tuple[Any, dict[str, Any]]:
    return load_data(DataRef(name=name, seed=0, limit=10000, max_length=64), MINILM)


def without(data: Any, test_x: torch.Tensor) -> Any:
    """``data`` whose training split holds none of the rows of ``test_x`` (another task's test tweets)."""
    from dataclasses import replace

    from slimtune.data.core import Split

    banned = {tuple(row.tolist()) for row in test_x}
    keep = torch.tensor([tuple(row.tolist()) not in banned for row in data.train.x])
    return replace(data, train=Split(data.train.x[keep], data.train.y[keep]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--render", action="store_true", help="only rewrite the Markdown from the saved JSON")
    args = parser.parse_args(argv)
    if args.render:
        return render()
    torch.set_num_threads(args.threads)
    binary_model, binary = finetuned_minilm()  # single-task tweets-binary, same budget (the shared fine-tune)
    three, pre3 = task_data("tweets-3")
    single3_dir = OUT / "single-tweets-3"
    seconds: dict[str, float] = {}
    if (single3_dir / "spec.json").exists():
        single3 = load_model(single3_dir)
    else:
        single3 = load_start_model(MINILM, three, pre3)
        start = time.perf_counter()
        fit(
            single3,
            without(three, binary.test.x),
            config=TRAIN,
            checkpoint_dir=OUT / "single3-ckpt",
            resume=True,
            desc="tweets-3",
        )
        seconds["single tweets-3"] = time.perf_counter() - start
        save_model(single3, single3_dir)
    tasks = [TaskSpec("binary", without(binary, three.test.x)), TaskSpec("three", without(three, binary.test.x))]
    start = time.perf_counter()
    mt = multitask_model(load_start_model(MINILM, binary, {}), tasks, weighting="uncertainty")
    result = fit_multitask(mt, tasks, MultiTaskConfig(weighting="uncertainty", train=TRAIN),
                           checkpoint_dir=OUT / "mt-ckpt", resume=True)  # fmt: skip
    seconds["multi-task"] = time.perf_counter() - start
    assert isinstance(binary.test.x, torch.Tensor) and isinstance(three.test.x, torch.Tensor)
    rows = {
        "single-task models": {
            "tweets-binary": accuracy(binary_model, binary.test.x, binary.test.y),
            "tweets-3": accuracy(single3, three.test.x, three.test.y),
            "params": sum(p.numel() for m in (binary_model, single3) for p in m.parameters()),
        },
        "one multi-task trunk": {
            "tweets-binary": accuracy(export_task(mt, "binary"), binary.test.x, binary.test.y),
            "tweets-3": accuracy(export_task(mt, "three"), three.test.x, three.test.y),
            "params": sum(p.numel() for p in mt.parameters()),
        },
    }
    out = {"rows": rows, "train": TRAIN.to_dict(), "task_weights": result.task_weights, "seconds": seconds,
           "test_examples": {"tweets-binary": len(binary.test.y), "tweets-3": len(three.test.y)},
           "threads": args.threads}  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "minilm_multitask.json").write_text(json.dumps(out, indent=2) + "\n")
    return render()


def render() -> int:
    out = json.loads((RESULTS / "minilm_multitask.json").read_text())
    rows, train = out["rows"], out["train"]
    weights = {k: round(v, 3) for k, v in out["task_weights"].items()}
    minutes = {k: f"{v / 60:.0f} min" for k, v in out["seconds"].items()}
    lines = [
        "# Multi-task MiniLM-L6: tweets-binary + tweets-3 on one trunk vs two fine-tunes",
        "",
        f"Same budget for every model: {train['epochs']} epochs, lr {train['lr']}, batch {train['batch_size']} per "
        f"task, from the pretrained all-MiniLM-L6-v2; the multi-task step takes one batch of each task, uncertainty "
        f"weighting (Kendall et al.; final weights {json.dumps(weights)}). Each task's training split is filtered of "
        f"the other task's test tweets. Test examples: {json.dumps(out['test_examples'])}. {out.get('threads', 2)} "
        f"torch threads; wall time of the runs made here: {json.dumps(minutes)} (the tweets-binary fine-tune is the "
        "shared cached one).",
        "",
        "| setup | tweets-binary | tweets-3 | params to serve both |",
        "| --- | --- | --- | --- |",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {100 * r['tweets-binary']:.2f}% | {100 * r['tweets-3']:.2f}% | {r['params'] / 1e6:.1f}M |"
        )
    single, multi = rows["single-task models"], rows["one multi-task trunk"]
    lines += [
        "",
        f"One trunk serves both tasks with {single['params'] / multi['params']:.2f}x fewer parameters; accuracy "
        f"vs the single-task models: tweets-binary {100 * (multi['tweets-binary'] - single['tweets-binary']):+.2f} "
        f"pt, tweets-3 {100 * (multi['tweets-3'] - single['tweets-3']):+.2f} pt.",
    ]
    if out.get("note"):
        lines += ["", out["note"]]
    (RESULTS / "minilm_multitask.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
