"""Shared by the MiniLM benchmarks: the fine-tuned MiniLM-L6 on tweets-binary and its tokenized data.

The fine-tuned model is produced once by benchmarks/recipes/minilm_tweets_finetune.yaml (10-15 min on
2 cores) into benchmarks/.cache/minilm-tweets and reused by every MiniLM benchmark.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimtune.data.core import DataSplits
from slimtune.models import load_model
from slimtune.models.inputs import load_data
from slimtune.recipe import load_recipe
from slimtune.recipe.runner import run_recipe

BENCH = Path(__file__).resolve().parent
CACHE = BENCH / ".cache"
RESULTS = BENCH / "results"
RECIPE = BENCH / "recipes" / "minilm_tweets_finetune.yaml"
FINETUNED = CACHE / "minilm-tweets" / "01-finetune" / "model"
SEQ = 64


def finetuned_minilm() -> tuple[nn.Module, DataSplits]:
    """The fine-tuned MiniLM (trained first if the cache is empty) and the recipe's tokenized splits."""
    recipe = load_recipe(RECIPE)
    if not (FINETUNED / "spec.json").exists():
        print(f"fine-tuning MiniLM first ({RECIPE.name}, 10-15 min on 2 cores)...", flush=True)
        run_recipe(recipe, FINETUNED.parents[1], resume=True, log=lambda m: print(m, flush=True))
    model = load_model(FINETUNED)
    data, _ = load_data(recipe.data, recipe.model)
    model.eval()
    return model, data


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 64) -> float:
    model.eval()
    hits = 0
    with torch.inference_mode():
        for i in range(0, len(x), batch_size):
            hits += int((model(x[i : i + batch_size]).argmax(-1) == y[i : i + batch_size]).sum())
    return hits / len(y)


def median_ms(run: Callable[[], Any], *, repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


Runner = Callable[[int], Callable[[], Any]]


def torch_runner(model: nn.Module, x: torch.Tensor) -> Runner:
    """``runner(b)``: a zero-argument call running ``model`` on the first ``b`` rows of ``x``."""

    def make(b: int) -> Callable[[], Any]:
        batch = x[:b]

        def run() -> Any:
            with torch.inference_mode():
                return model(batch)

        return run

    return make


def ort_runner(session: Any, x: torch.Tensor) -> Runner:
    """``runner(b)``: a zero-argument call running the ONNX Runtime ``session`` on the first ``b`` rows of ``x``."""
    name = session.get_inputs()[0].name

    def make(b: int) -> Callable[[], Any]:
        feed = {name: x[:b].numpy()}
        return lambda: session.run(None, feed)

    return make


def interleaved_latency(
    runners: dict[str, Callable[[int], Callable[[], Any]]],
    *,
    batches: tuple[int, ...],
    rounds: int,
    repeats: int,
    per_round: dict[str, dict[str, list[float]]] | None = None,
) -> dict[str, dict[str, float]]:
    """Median latency (ms) per runner and batch size; rounds interleave runners so load drifts hit all alike.

    ``runners[name](batch_size)`` returns a zero-argument callable running one batch of that size.
    ``per_round``, when given, receives every round's time (``per_round[name]["b8"][i]``) for paired ratios.
    """
    calls = {name: {b: make(b) for b in batches} for name, make in runners.items()}
    times: dict[str, dict[str, list[float]]] = {n: {f"b{b}": [] for b in batches} for n in runners}
    for _ in range(rounds):
        for name in runners:
            for b in batches:
                times[name][f"b{b}"].append(median_ms(calls[name][b], repeats=repeats))
    if per_round is not None:
        per_round.update(times)
    return {n: {k: statistics.median(v) for k, v in per.items()} for n, per in times.items()}


def paired_ratio(per_round: dict[str, dict[str, list[float]]], ref: str, name: str, batch: str) -> dict[str, float]:
    """``ref``'s time over ``name``'s, round by round (> 1: ``name`` is faster): median, min and max, and
    slimtune's paired verdict on ``name`` against ``ref`` (faster / slower / tie within 3% / unsure)."""
    from slimtune.evaluate.paired import verdict

    r = [a / b for a, b in zip(per_round[ref][batch], per_round[name][batch], strict=True)]
    v = verdict([1 / x for x in r], band=0.03) if name != ref else "tie"
    return {"median": statistics.median(r), "min": min(r), "max": max(r), "verdict": v}
