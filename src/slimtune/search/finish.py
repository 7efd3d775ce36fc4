"""The end of a search: careful ORT latency for the front, the choice, the parity-checked bundle of the
chosen candidate (the most accurate one when none meets the budget: a search never ends with nothing),
test-split accuracy, the plain-language outcome, ``search.json`` and ``search.html``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from slimtune._io import path_bytes, write_text
from slimtune.data.core import DataSplits
from slimtune.errors import ParityError, SlimtuneError
from slimtune.evaluate.report import human_bytes
from slimtune.search import strategy
from slimtune.search.pareto import search_page
from slimtune.search.runner import BEST, PAGE, WORK, Search
from slimtune.search.techniques import onnx_accuracy, ort_latencies, ort_latency, tensor_x

TEACHER, TEACHER_ONNX = "teacher", "model.fp32.onnx"  # its folder under work/ and its file


@dataclass
class SearchResult:
    """``chosen``: the record of the shipped candidate (its ``bundle_latency_ms`` measured by the runtime);
    ``met_budget``: whether it is within the budget on validation; ``message``: the outcome in words."""

    out: Path
    bundle: Path
    chosen: dict[str, Any]
    met_budget: bool
    message: str
    front: list[dict[str, Any]]
    candidates: list[dict[str, Any]]
    teacher: dict[str, Any]
    model: nn.Module
    evaluations: int

    def __str__(self) -> str:
        return self.message


def measure_teacher(teacher: nn.Module, data: DataSplits, folder: Path) -> dict[str, Any]:
    """The reference: the teacher exported to fp32 ONNX, measured like every candidate."""
    from slimtune.evaluate.macs import count_macs
    from slimtune.export.onnx import export_onnx

    x_test = tensor_x(data.test.x)
    path = export_onnx(teacher, x_test[:1], folder / TEACHER_ONNX)
    return {
        "val_accuracy": onnx_accuracy(path, tensor_x(data.val.x), data.val.y),
        "test_accuracy": onnx_accuracy(path, x_test, data.test.y),
        "bytes": path_bytes(path),
        "macs": int(count_macs(teacher, x_test[:1])),
        "latency_ms": ort_latency(path, x_test),  # timed again beside the front at the end
    }


def _measured_front(s: Search, pool: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The front, every member timed carefully (batch 1 and 8) **together with the teacher**, interleaved,
    each latency the teacher's times the member's paired per-round ratio to it (one run, one load). Timing
    can change the front, so repeat until the front is a set timed in one run; latencies carried over from an
    earlier run (a resumed search, an earlier repeat) never stand beside the teacher's: they are timed again."""
    x = tensor_x(s.data.test.x)
    teacher = s.state["teacher"]
    timed_together: set[str] = set()
    front = strategy.front(pool, s.config.objective)
    for _ in range(4):
        if {r["id"] for r in front} <= timed_together:
            break
        paths = {r["id"]: s.out / r["onnx"] for r in front}
        paths[TEACHER] = s.out / WORK / TEACHER / TEACHER_ONNX
        timed = ort_latencies(paths, x, reference=TEACHER)
        teacher["latency_ms"] = timed.pop(TEACHER)
        for r in front:
            lat = timed[r["id"]]
            r["latency_spread"] = {k.removeprefix("spread_"): lat.pop(k) for k in list(lat) if k.startswith("spread_")}
            r["latency_ms"] = lat
        timed_together = set(timed)
        s.save()
        front = strategy.front(pool, s.config.objective)
    return front


def _paired_pick(s: Search, front: list[dict[str, Any]], chosen: dict[str, Any]) -> dict[str, Any]:
    """Among the useful front members, the fastest by paired per-round ratios to the teacher (ties: the
    more accurate, then the smaller); the decision is kept in the state as ``latency_decision``."""
    from slimtune.search.latency_choice import paired_choice

    useful = [r for r in front if strategy.useful(r, s.reference, s.config, s.teacher_cost)]
    if len(useful) < 2:
        return chosen
    paths = {r["id"]: s.out / r["onnx"] for r in useful} | {TEACHER: s.out / WORK / TEACHER / TEACHER_ONNX}
    picked, summary = paired_choice(useful, paths, tensor_x(s.data.test.x), reference=TEACHER)
    s.state["latency_decision"] = summary
    return picked


def _model_of(s: Search, rec: dict[str, Any]) -> nn.Module:
    from slimtune.models import load_model

    model_dir = s.state["bases"][rec["base"]]["model_dir"]
    return s.teacher if model_dir is None else load_model(s.out / model_dir)


def _bundle(s: Search, rec: dict[str, Any], model: nn.Module) -> Path:
    from slimtune.export.bundle import export_bundle
    from slimtune.export.onnx import ExportConfig, check_parity, parity

    provenance = {"search": rec["name"], "config": rec["config"], "id": rec["id"]}
    if rec["config"]["precision"] == "fp32":  # exported again here and checked against PyTorch
        return export_bundle(model, s.out / BEST, data=s.data, force=True, provenance=provenance)
    x = tensor_x(s.data.test.x)
    report = parity(model, s.out / rec["onnx"], x, s.data.test.y)
    limits = ExportConfig()
    check_parity(
        report,
        what=f"{rec['name']} (int8)",
        max_abs_diff=None,
        min_argmax_agreement=limits.min_argmax_agreement,
        max_accuracy_drop=limits.max_accuracy_drop,
    )
    return export_bundle(
        model,
        s.out / BEST,
        data=s.data,
        onnx=s.out / rec["onnx"],
        parity_report=report,
        force=True,
        provenance=provenance,
    )


def _ratios(rec: dict[str, Any], teacher: dict[str, Any]) -> str:
    lat, t_lat = (rec.get("latency_ms") or {}).get("batch1"), teacher["latency_ms"]["batch1"]
    parts = []
    if lat:
        parts.append(f"{lat:.3g} ms at batch 1 ({t_lat / lat:.2f}× the teacher's speed in ONNX Runtime)")
    parts.append(f"{human_bytes(rec['bytes'])} ({teacher['bytes'] / max(1, rec['bytes']):.2f}× smaller)")
    parts.append(f"{rec['macs']:,} MACs ({teacher['macs'] / max(1, rec['macs']):.2f}× fewer)")
    return ", ".join(parts)


def _message(s: Search, rec: dict[str, Any], met: bool) -> str:
    teacher, drop = s.state["teacher"], s.config.max_accuracy_drop
    val = strategy.points_drop(rec["val_accuracy"], teacher["val_accuracy"])
    test = strategy.points_drop(rec["test_accuracy"], teacher["test_accuracy"])
    where = (
        f"validation {100 * rec['val_accuracy']:.2f}% ({-val:+.2f} pt), test {100 * rec['test_accuracy']:.2f}% "
        f"({-test:+.2f} pt)"
    )
    if not met:
        within = [r for r in s.evaluated() if strategy.feasible(r["val_accuracy"], s.reference, s.config)]
        what = f"stayed within {drop:g} pt"
        if within:
            what = f"within {drop:g} pt has a lower {s.config.objective} than the teacher itself"
        return (
            f"no candidate {what}; saved the most accurate compressed candidate ({rec['name']}: {where}) and the front"
        )
    text = f"chosen {rec['name']} within {drop:g} pt: {where}; {_ratios(rec, teacher)}"
    if test > drop + strategy.EPS:
        text += f" (note: on the test split it is {test:.2f} pt below the teacher, over the budget)"
    return text


def leader_note(leading: dict[str, Any] | None, chosen: dict[str, Any]) -> str:
    """When the final pick is not the candidate the progress lines last showed as leading, say so and why."""
    if leading is None or leading["id"] == chosen["id"]:
        return ""
    return (
        f" (the progress lines' provisional leader was {leading['name']}: it was ranked on proxy-epoch accuracy "
        "and quick timing; the final pick re-times the front together after full recovery)"
    )


def finalise(s: Search) -> SearchResult:
    """Choose, bundle, measure and write the outputs of a search whose work is done (or out of time)."""
    from slimtune.runtime.bench import bench

    current = [  # measured on its base's latest model (older ONNX files of a base are deleted)
        r
        for r in s.records.values()
        if r.get("val_accuracy") is not None and r["epochs"] == s.state["bases"][r["base"]]["epochs"]
    ]
    pool = [r for r in current if r["status"] not in ("pruned-early", "failed", "parity-failed")]
    pool = pool or [r for r in current if r["status"] == "pruned-early"]  # all hopeless: the best still ships
    leading, _ = strategy.choose(s.evaluated(), s.reference, s.config, s.teacher_cost)  # the progress lines' pick
    while True:
        if not pool:
            reasons = sorted({r.get("reason", "not run") for r in s.records.values()})
            raise SlimtuneError(f"the search produced no usable candidate ({'; '.join(reasons)[:300]})")
        front = _measured_front(s, pool)
        chosen, met = strategy.choose(front, s.reference, s.config, s.teacher_cost)
        assert chosen is not None
        if met and s.config.objective == "latency":
            chosen = _paired_pick(s, front, chosen)
        model = _model_of(s, chosen)
        try:
            bundle = _bundle(s, chosen, model)
            break
        except ParityError as exc:  # not shippable: the next best takes its place
            chosen["status"], chosen["reason"] = "parity-failed", str(exc)
            pool = [r for r in pool if r["id"] != chosen["id"]]
    x, y = tensor_x(s.data.test.x), s.data.test.y
    front_ids, pool_ids = {r["id"] for r in front}, {r["id"] for r in pool}
    for r in s.records.values():
        if r["id"] in front_ids:
            r["status"] = "chosen" if r["id"] == chosen["id"] else "front"
            r["test_accuracy"] = onnx_accuracy(s.out / r["onnx"], x, y)
        elif r["id"] in pool_ids and r["status"] != "pruned-early":
            r["status"] = "dominated"
        elif not r["evaluations"] and r["status"] == "pending":
            r["status"], r["reason"] = "not-run", "time budget spent" if s.out_of_time() else "not reached"
    from slimtune.runtime.bundle import read_manifest

    chosen["test_accuracy"] = onnx_accuracy(read_manifest(bundle).file("model"), x, y)
    timed = bench(bundle, batch_sizes=(1, 8), seconds=0.2)
    chosen["bundle_latency_ms"] = {f"batch{row['batch']}": row["p50_ms"] for row in timed["rows"]}
    message = _message(s, chosen, met) + leader_note(leading, chosen)
    warning = (s.state.get("latency_decision") or {}).get("warning")
    if warning:
        message += f" ({warning})"
    s.state["outcome"] = {
        "chosen": chosen["id"],
        "name": chosen["name"],
        "met_budget": met,
        "message": message,
        "front": sorted(front_ids),
        "bundle": BEST,
    }
    s.save()
    write_text(s.out / PAGE, search_page(s.state))
    return SearchResult(
        out=s.out,
        bundle=bundle,
        chosen=chosen,
        met_budget=met,
        message=message,
        front=[r for r in s.state["candidates"] if r["id"] in front_ids],
        candidates=list(s.state["candidates"]),
        teacher=s.state["teacher"],
        model=model,
        evaluations=s.evaluations,
    )
