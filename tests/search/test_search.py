"""Budget search end to end on digits: a tiny MLP teacher, a small space, a few seconds per search."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from slimtune.data import DataSplits, load
from slimtune.models import build
from slimtune.runtime import Predictor
from slimtune.search import ProgressEvent, SearchConfig, build_space, search
from slimtune.train.loop import TrainConfig, fit

STATUSES = {"chosen", "front", "dominated", "pruned-early", "failed", "parity-failed", "not-run"}
SMALL = {
    "prune_ratios": (0.5,), "student_widths": (0.5,), "sparsities": (0.8,), "int8": ("dynamic",),
    "proxy_epochs": 1, "full_epochs": 4, "lr": 1e-2, "objective": "size",
}  # fmt: skip


@pytest.fixture(scope="module")
def data() -> DataSplits:
    return load("digits", seed=0)  # 1,797 real digits: 180 validation and 359 test examples


@pytest.fixture(scope="module")
def teacher(data: DataSplits) -> nn.Module:
    torch.manual_seed(0)
    model = build("mlp", input_shape=data.input_shape, num_classes=data.num_classes, hidden=[64, 64])
    fit(model, data, config=TrainConfig(epochs=10, lr=1e-2), progress=False)
    return model


def bundle_accuracy(path: Path, data: DataSplits) -> float:
    predictor = Predictor(path)
    assert isinstance(data.test.x, torch.Tensor)
    return float((predictor.logits(data.test.x.numpy()).argmax(1) == data.test.y.numpy()).mean())


def test_small_search_ships_a_bundle_within_budget(tmp_path: Path, teacher: nn.Module, data: DataSplits) -> None:
    config = SearchConfig(max_accuracy_drop=2.0, time_budget="90s", **SMALL)
    lines: list[str] = []
    result = search(teacher, data, config=config, out=tmp_path, progress=lambda e: lines.append(e.line))
    assert result.met_budget and result.message.startswith(f"chosen {result.chosen['name']} within 2 pt")
    # the chosen bundle meets the budget on the test split, measured by the runtime that will serve it
    teacher_test = result.teacher["test_accuracy"]
    assert 100 * (teacher_test - bundle_accuracy(result.bundle, data)) <= 2.0
    assert result.chosen["test_accuracy"] == pytest.approx(bundle_accuracy(result.bundle, data))
    assert result.chosen["bytes"] < result.teacher["bytes"]  # objective: size
    # its ONNX Runtime latency is measured (candidate file and the shipped bundle), batch 1 and 8
    assert set(result.chosen["latency_ms"]) == {"batch1", "batch8"} and min(result.chosen["latency_ms"].values()) > 0
    assert result.chosen["bundle_latency_ms"]["batch1"] > 0
    manifest = json.loads((result.bundle / "bundle.json").read_text())
    assert manifest["provenance"]["search"] == result.chosen["name"] and manifest["parity"]
    # search.json lists every candidate with its config, accuracy, bytes, MACs, time and status
    saved = json.loads((tmp_path / "search.json").read_text())
    assert [r["id"] for r in saved["candidates"]] == [c.id for c in build_space(config)]
    for r in saved["candidates"]:
        assert r["status"] in STATUSES and r["config"]["precision"] in ("fp32", "int8-dynamic")
        assert {"val_accuracy", "bytes", "macs", "seconds", "epochs"} <= set(r), r["name"]
    assert [r["status"] for r in saved["candidates"]].count("chosen") == 1
    front = [r for r in saved["candidates"] if r["status"] in ("front", "chosen")]
    assert front and all(r.get("latency_ms") and r.get("test_accuracy") is not None for r in front)
    assert max(r["epochs"] for r in saved["candidates"]) == config.full_epochs  # the front got full recovery
    assert saved["outcome"]["message"] == result.message
    # the Pareto page: two plots, the chosen point marked, each point's config in its hover text
    page = (tmp_path / "search.html").read_text()
    assert page.count("<svg") == 2 and 'stroke="#dc2626" stroke-width="3"' in page
    assert result.chosen["name"] in page and "&quot;precision&quot;: &quot;" in page
    # progress: one line per evaluation with candidates done/total, the best so far and the time left
    assert lines and all(
        "candidates measured" in ln and "leading so far (provisional):" in ln and "s left" in ln for ln in lines
    )


def test_impossible_budget_says_so_and_still_saves_the_best(
    tmp_path: Path, teacher: nn.Module, data: DataSplits
) -> None:
    config = SearchConfig(
        max_accuracy_drop=0.0, objective="size", techniques=("prune", "student"), prune_ratios=(0.75,),
        student_widths=(0.25,), proxy_epochs=1, full_epochs=1, lr=1e-3,
    )  # fmt: skip
    result = search(teacher, data, config=config, out=tmp_path)
    saved = json.loads((tmp_path / "search.json").read_text())
    reference = saved["teacher"]["val_accuracy"]
    accuracies = [r["val_accuracy"] for r in saved["candidates"]]
    assert accuracies and max(accuracies) < reference  # truly impossible: every candidate is strictly worse
    assert not result.met_budget
    assert result.message.startswith("no candidate stayed within 0 pt; saved the most accurate compressed candidate (")
    assert result.message.endswith(") and the front")
    assert result.chosen["val_accuracy"] == max(accuracies) and result.chosen["status"] == "chosen"
    assert (tmp_path / "best" / "bundle.json").is_file() and (tmp_path / "search.html").is_file()
    assert len(Predictor(result.bundle).predict(Predictor(result.bundle).example_inputs(3))) == 3


class Killed(Exception):
    pass


def test_killed_and_resumed_does_not_repeat_finished_work(tmp_path: Path, teacher: nn.Module, data: DataSplits) -> None:
    config = SearchConfig(max_accuracy_drop=2.0, **SMALL)
    runs: list[list[tuple[str, int]]] = []

    def killed_after(n: int) -> Any:
        runs.append([])

        def hook(event: ProgressEvent) -> None:
            runs[-1].append((event.base, event.epochs))
            if len(runs[-1]) == n:
                raise Killed

        return hook

    with pytest.raises(Killed):  # killed during the cheap proxies
        search(teacher, data, config=config, out=tmp_path / "s", progress=killed_after(2))
    saved = json.loads((tmp_path / "s" / "search.json").read_text())
    assert sum(len(r["evaluations"]) > 0 for r in saved["candidates"]) >= 2  # written as each finished
    with pytest.raises(Exception, match="already holds a search"):
        search(teacher, data, config=config, out=tmp_path / "s")
    with pytest.raises(Killed):  # killed again, during successive halving
        search(teacher, data, config=config, out=tmp_path / "s", resume=True, progress=killed_after(3))
    resumed = search(teacher, data, config=config, out=tmp_path / "s", resume=True, progress=killed_after(99))
    assert resumed.evaluations == len(runs[-1])
    done = [step for run in runs for step in run]
    assert len(done) == len(set(done))  # no evaluation ran twice
    whole: list[tuple[str, int]] = []
    fresh = search(
        teacher, data, config=config, out=tmp_path / "w", progress=lambda e: whole.append((e.base, e.epochs))
    )
    assert sorted(done) == sorted(whole) and len(whole) > 5  # the very work of an uninterrupted search
    assert any(epochs > config.proxy_epochs for _, epochs in runs[1])  # the second kill came after the proxies
    assert resumed.chosen["id"] == fresh.chosen["id"]
    assert resumed.chosen["val_accuracy"] == pytest.approx(fresh.chosen["val_accuracy"])
    again = search(teacher, data, config=config, out=tmp_path / "s", resume=True)
    assert again.evaluations == 0  # a finished search resumed only finalises


def test_resuming_with_other_options_is_refused(tmp_path: Path, teacher: nn.Module, data: DataSplits) -> None:
    from slimtune.errors import ConfigError

    config = SearchConfig(techniques=("int8",), objective="size")
    search(teacher, data, config=config, out=tmp_path)
    with pytest.raises(ConfigError, match="started with other search options"):
        search(teacher, data, config=SearchConfig(techniques=("int8",), objective="macs"), out=tmp_path, resume=True)


def test_time_budget_stops_new_work_and_still_ships(tmp_path: Path, teacher: nn.Module, data: DataSplits) -> None:
    config = SearchConfig(max_accuracy_drop=5.0, time_budget=0.001, **SMALL)
    result = search(teacher, data, config=config, out=tmp_path)
    assert result.evaluations == 1  # the first evaluation always runs: a search never ends with nothing
    statuses = [r["status"] for r in result.candidates]
    assert statuses.count("not-run") == len(statuses) - 1
    assert all(r.get("reason") == "time budget spent" for r in result.candidates if r["status"] == "not-run")
    assert (result.bundle / "bundle.json").is_file()


def test_progress_events_carry_numbers(tmp_path: Path, teacher: nn.Module, data: DataSplits) -> None:
    events: list[ProgressEvent] = []
    search(teacher, data, config=SearchConfig(techniques=("int8",)), out=tmp_path, progress=events.append)
    assert [(e.done, e.total, e.evaluations) for e in events] == [(3, 3, 1)]  # dynamic, static, mixed
    assert events[0].time_left_s is None and "no time limit" in events[0].line


def test_mixed_precision_keeps_the_most_sensitive_layer_fp32(
    tmp_path: Path, teacher: nn.Module, data: DataSplits
) -> None:
    config = SearchConfig(techniques=("int8",), int8=("mixed",), objective="size", max_accuracy_drop=5.0)
    result = search(teacher, data, config=config, out=tmp_path)
    assert result.chosen["name"] == "teacher+int8-mixed" and len(result.chosen["fp32_layers"]) == 1
    manifest = json.loads((result.bundle / "bundle.json").read_text())
    assert manifest["precision"] == "int8" and result.chosen["bytes"] < result.teacher["bytes"]


def test_teacher_is_given_back_trainable(tmp_path: Path, teacher: nn.Module, data: DataSplits) -> None:
    search(teacher, data, config=SearchConfig(techniques=("student",), student_widths=(0.5,), full_epochs=1,
                                              objective="macs"), out=tmp_path)  # fmt: skip
    assert all(p.requires_grad for p in teacher.parameters())
    x: Any = data.test.x
    assert np.isfinite(teacher(x[:2]).detach().numpy()).all()


def test_students_can_be_pruned_too(tmp_path: Path, teacher: nn.Module, data: DataSplits) -> None:
    config = SearchConfig(techniques=("prune", "student"), prune_ratios=(0.5,), student_widths=(0.5,),
                          combine_ratios=(0.5,), full_epochs=2, objective="macs", max_accuracy_drop=50.0)  # fmt: skip
    result = search(teacher, data, config=config, out=tmp_path)
    by_name = {r["name"]: r for r in result.candidates}
    assert set(by_name) == {"prune-0.5", "student-0.5", "student-0.5-prune-0.5"}
    macs = {n: r["macs"] for n, r in by_name.items()}
    assert macs["student-0.5-prune-0.5"] < macs["student-0.5"] and macs["student-0.5-prune-0.5"] < macs["prune-0.5"]
    assert result.chosen["name"] == "student-0.5-prune-0.5"  # the cheapest on MACs, with a generous budget
