"""Latency of the front is timed interleaved with the teacher, so a load change cannot decide a ratio."""

from __future__ import annotations

import itertools
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from slimtune.search import techniques


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


class FakeSession:
    """A model costing ``cost_ms`` per example, slowed ×3 while the fake machine is "busy" (its first
    0.35 s): a sequential timing would see the first model 3× slower than it is."""

    def __init__(self, clock: FakeClock, cost_ms: float, calls: list[str], name: str) -> None:
        self.clock, self.cost_ms, self.calls, self.name = clock, cost_ms, calls, name

    def get_inputs(self) -> list[Any]:
        return [SimpleNamespace(name="input")]

    def run(self, _outputs: Any, feed: dict[str, np.ndarray]) -> None:
        load = 3.0 if self.clock.now < 0.35 else 1.0
        self.clock.now += load * self.cost_ms * len(feed["input"]) / 1000
        self.calls.append(self.name)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> tuple[FakeClock, list[str]]:
    clock, calls = FakeClock(), []
    costs = {"fast.onnx": 1.0, "slow.onnx": 2.0}
    monkeypatch.setattr(techniques, "time", clock)
    monkeypatch.setattr(
        "slimtune.export.onnx.ort_session",
        lambda path, threads=None: FakeSession(clock, costs[Path(path).name], calls, Path(path).stem),
    )
    return clock, calls


def test_models_are_timed_interleaved_so_their_ratio_survives_a_load_change(
    fake: tuple[FakeClock, list[str]],
) -> None:
    _, calls = fake
    x = torch.zeros(4, 3)
    out = techniques.ort_latencies(
        {"a": Path("fast.onnx"), "b": Path("slow.onnx")}, x, batch_sizes=(1, 8), budget_s=0.3
    )
    assert set(out) == {"a", "b"} and set(out["a"]) == {"batch1", "batch8"}
    assert out["b"]["batch1"] / out["a"]["batch1"] == pytest.approx(2.0)
    assert out["b"]["batch8"] / out["a"]["batch8"] == pytest.approx(2.0)
    assert out["a"]["batch8"] == pytest.approx(8.0)  # the median is taken after the busy spell
    switches = sum(1 for p, q in itertools.pairwise(calls) if p != q)
    assert switches >= 2 * 15  # every round visits both models, for each batch size


def test_paired_ratios_against_a_reference_cancel_each_rounds_load(
    monkeypatch: pytest.MonkeyPatch, fake: tuple[FakeClock, list[str]]
) -> None:
    """With a reference, a model's latency is the reference's median times its median per-round ratio: a load
    that changes between rounds (the fake clock's busy spell) cancels inside each round's ratio."""
    x = torch.zeros(4, 3)
    paths = {"ref": Path("slow.onnx"), "a": Path("fast.onnx")}
    out = techniques.ort_latencies(paths, x, batch_sizes=(1,), budget_s=0.3, reference="ref")
    assert out["a"]["batch1"] == pytest.approx(out["ref"]["batch1"] / 2)
    assert out["a"]["spread_batch1"] >= 0 and "spread_batch1" not in out["ref"]


def test_one_after_another_the_load_decides_which_is_faster(fake: tuple[FakeClock, list[str]]) -> None:
    """Why the front is timed together: timed alone, each model sees its own load."""
    x = torch.zeros(2, 3)
    fast = techniques.ort_latency(Path("fast.onnx"), x, batch_sizes=(1,))["batch1"]
    slow = techniques.ort_latency(Path("slow.onnx"), x, batch_sizes=(1,))["batch1"]
    assert fast == pytest.approx(3.0)  # busy spell
    assert slow == pytest.approx(2.0) and slow < fast  # the 2x slower model "wins"


def test_the_front_is_timed_again_beside_the_teacher_even_if_it_carries_old_latencies(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A resumed search brings latencies from another run (another load): the shipped ratio to the
    teacher must come from one timing of the teacher and the whole final front."""
    from slimtune.search import finish

    now = {"batch1": 10.0, "batch8": 80.0}  # today's load: every model timed here sees it
    runs: list[set[str]] = []

    def fake_latencies(paths: dict[str, Path], x: torch.Tensor, reference: str) -> dict[str, dict[str, float]]:
        assert reference == "teacher"
        runs.append(set(paths))
        scale = {"teacher": 2.0, "a": 1.0, "b": 0.5}
        return {k: {b: v * scale[k] for b, v in now.items()} for k in paths}

    monkeypatch.setattr(finish, "ort_latencies", fake_latencies)
    stale = {"batch1": 1.0, "batch8": 8.0}  # measured on an idle machine yesterday
    pool = [
        {"id": "a", "onnx": "a.onnx", "val_accuracy": 0.9, "latency_ms": dict(stale)},
        {"id": "b", "onnx": "b.onnx", "val_accuracy": 0.8, "latency_ms": {"batch1": 0.5, "batch8": 4.0}},
    ]
    s = SimpleNamespace(
        data=SimpleNamespace(test=SimpleNamespace(x=torch.zeros(2, 3))),
        state={"teacher": {"latency_ms": {"batch1": 5.0, "batch8": 40.0}}},
        out=Path("/nonexistent"),
        config=SimpleNamespace(objective="latency"),
        save=lambda: None,
    )
    front = finish._measured_front(s, pool)  # type: ignore[arg-type]
    assert runs == [{"a", "b", "teacher"}]
    teacher = s.state["teacher"]["latency_ms"]["batch1"]
    assert {r["id"]: teacher / r["latency_ms"]["batch1"] for r in front} == {"a": 2.0, "b": 4.0}
