"""The search's final latency pick by paired ratios on injected noisy timings: repeated picks (same
candidates, fresh noise each time, as repeated searches see) choose the same model; candidates within the
tie band go to the more accurate, then the smaller one, never to whichever the noise favoured."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from slimtune.search.latency_choice import paired_choice


def _records(**latency: float) -> tuple[list[dict[str, Any]], dict[str, float]]:
    recs = [
        {"id": "int8-static", "val_accuracy": 0.95, "bytes": 30_000},
        {"id": "pruned", "val_accuracy": 0.95, "bytes": 60_000},
        {"id": "student", "val_accuracy": 0.96, "bytes": 80_000},
    ]
    return recs, {"teacher": 1.0, **latency}


def _pick(costs: dict[str, float], recs: list[dict[str, Any]], seed: int, noise: float = 0.1) -> tuple[str, dict]:
    rng = random.Random(seed)

    def timer(paths: dict[str, Path], x: torch.Tensor) -> Any:
        assert set(paths) == set(costs)

        def time_round(keys: Sequence[str]) -> dict[str, float]:
            load = rng.choice([0.6, 1.0, 1.0, 2.0, 3.5])  # the machine's load changes between rounds
            return {k: costs[k] * load * (1 + rng.uniform(-noise, noise)) for k in keys}

        return time_round

    paths = {k: Path(f"{k}.onnx") for k in costs}
    chosen, summary = paired_choice(recs, paths, torch.zeros(2, 3), reference="teacher", timer=timer)
    return chosen["id"], summary


def test_repeated_picks_choose_the_truly_fastest() -> None:
    recs, costs = _records(**{"int8-static": 0.62, "pruned": 0.70, "student": 0.80})
    picks = {_pick(costs, recs, seed)[0] for seed in range(12)}
    assert picks == {"int8-static"}
    _, summary = _pick(costs, recs, 0)
    ratio = summary["ratio_to_reference"]["int8-static"]
    assert ratio["low"] <= ratio["median"] <= ratio["high"] and abs(ratio["median"] - 0.62) < 0.05
    assert summary["rounds"] >= 15 and summary["band"] == 0.03


def test_candidates_within_the_tie_band_go_to_the_more_accurate_then_smaller() -> None:
    recs, costs = _records(**{"int8-static": 0.70, "pruned": 0.695, "student": 0.705})  # within ±1%
    picks = [_pick(costs, recs, seed, noise=0.02) for seed in range(12)]
    assert {p for p, _ in picks} == {"student"}  # the most accurate, whichever the noise made fastest
    assert all(set(s["ties"]) == {"int8-static", "pruned"} for _, s in picks)
    recs[2]["val_accuracy"] = 0.95  # all equally accurate: the smallest file
    assert {_pick(costs, recs, seed, noise=0.02)[0] for seed in range(12)} == {"int8-static"}


def test_real_onnx_runtime_rounds(tmp_path: Path) -> None:
    """The default timer runs real ONNX Runtime sessions: the small MLP wins on speed although the wide one
    is listed first (it claims the smaller file), so it had to be measured faster."""
    from slimtune.export import export_onnx
    from slimtune.models import build

    x = torch.rand(4, 16)
    paths = {}
    for name, hidden in (("teacher", [256, 256]), ("small", [8]), ("wide", [512, 512])):
        model = build("mlp", input_shape=(16,), num_classes=3, hidden=hidden).eval()
        paths[name] = export_onnx(model, x[:1], tmp_path / f"{name}.onnx")
    recs = [{"id": "wide", "val_accuracy": 0.9, "bytes": 1}, {"id": "small", "val_accuracy": 0.9, "bytes": 2}]
    chosen, summary = paired_choice(recs, paths, x, reference="teacher", rounds=5, max_rounds=10)
    assert chosen["id"] == "small" and 5 <= summary["rounds"] <= 10
    assert summary["ratio_to_reference"]["small"]["median"] < 1
