from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from slimtune.errors import ConfigError, OutputExistsError
from slimtune.evaluate import Report
from slimtune.recipe import builtin_recipe, load_recipe, parse_recipe, run_recipe
from slimtune.testing import shrink_recipe


def tiny_demo(limit: int = 500) -> dict:
    """The built-in demo recipe on a small digits slice with short training."""
    return shrink_recipe(yaml.safe_load(builtin_recipe("demo").read_text()), limit=limit)


def test_builtin_demo_recipe_is_valid() -> None:
    recipe = load_recipe(builtin_recipe("demo"))
    assert [s.kind for s in recipe.stages] == ["train", "prune", "distill", "quantize"]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda r: r["stages"][0]["train"].update(epoch=3),
            r"stages\[1\] \(train\).train: unknown key 'epoch'",
        ),
        (lambda r: r["stages"][1].update(sparsity=1.5), r"sparsity must be in \[0, 1\), got 1.5"),
        (lambda r: r["stages"][1].update(method="magnitud"), r"unknown pruning method 'magnitud'"),
        (lambda r: r["stages"].append({"stage": "prnue"}), r"unknown stage 'prnue'.*did you mean 'prune'"),
        (lambda r: r.update(dataa={}), r"unknown key 'dataa'.*did you mean 'data'"),
        (lambda r: r["model"].update(name="mpl"), r"unknown model 'mpl'.*did you mean 'mlp'"),
        (lambda r: r["stages"][2]["kd"].update(temperature=-1), r"temperature must be > 0"),
        (lambda r: r["stages"][0]["train"].update(lr="fast"), r"lr: expected a number"),
    ],
)
def test_bad_recipes_fail_before_any_work(mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    raw = tiny_demo()
    mutate(raw)
    with pytest.raises(ConfigError, match=message) as info:
        parse_recipe(raw)
    assert "\n" not in str(info.value)


def test_demo_end_to_end_on_tiny_slice(tmp_path: Path) -> None:
    report = run_recipe(parse_recipe(tiny_demo()), tmp_path / "out")
    rows = {r.name: r for r in report.rows}
    assert list(rows) == ["teacher", "prune", "student", "int8-onnx"]
    assert rows["prune"].extra["sparsity"] >= 0.84
    assert rows["student"].params <= rows["teacher"].params / 4
    sizes = [r.bytes_on_disk for r in report.rows]
    assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) == 4
    assert rows["int8-onnx"].parity is not None and rows["int8-onnx"].parity["argmax_agreement"] >= 0.99
    for r in report.rows:
        assert 0 < r.metrics["accuracy"] <= 1 and r.latency_ms["batch1"] > 0 and r.macs > 0
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    stage = saved["stages"][0]
    for key in (
        "name",
        "artifact",
        "metrics",
        "params",
        "nonzero_params",
        "bytes_on_disk",
        "macs",
        "latency_ms",
    ):
        assert key in stage
    assert {"accuracy", "f1_macro"} <= set(stage["metrics"]) and {"batch1", "batch32"} <= set(stage["latency_ms"])
    assert "parity" in stage and saved["stages"][-1]["parity"]["argmax_agreement"] >= 0.99
    html = (tmp_path / "out" / "report.html").read_text()
    assert html.count("<svg") == 2
    assert not (tmp_path / "out" / "01-teacher" / "checkpoints").exists()
    # per-layer sparsity of the pruning stage and the int8 settings with their reason, in report.md and .html
    md = (tmp_path / "out" / "report.md").read_text()
    layers = rows["prune"].extra["layer_sparsity"]
    assert layers and min(layers.values()) > 0.5
    section = md.split("## Sparsity per layer")[1].split("\n## ")[0]
    for name, s in layers.items():
        assert f"| `{name}` | {rows['prune'].extra['layer_weights'][name]:,} |" in section and f"{s:.1%}" in section
    quant = rows["int8-onnx"].extra["quantization"]
    assert quant["reduce_range_reason"] in md.split("## Quantization settings")[1]
    assert "Sparsity per layer" in html and quant["reduce_range_reason"].split(";")[0] in html


def test_existing_output_is_not_overwritten_without_force(tmp_path: Path) -> None:
    out = tmp_path / "out"
    raw = tiny_demo()
    raw["stages"] = raw["stages"][:1]
    run_recipe(parse_recipe(raw), out)
    with pytest.raises(OutputExistsError, match="--force"):
        run_recipe(parse_recipe(raw), out)
    (out / "keep.txt").write_text("precious")  # the user's own file beside slimtune's outputs
    (out / "01-teacher" / "notes.txt").write_text("mine")  # and one inside a folder slimtune made
    (out / "01-teacher" / "model" / "spec.json").write_text("{}")  # slimtune's own file, now stale
    run_recipe(parse_recipe(raw), out, force=True)
    assert (out / "keep.txt").read_text() == "precious" and (out / "report.json").exists()
    assert (out / "01-teacher" / "notes.txt").read_text() == "mine"
    assert json.loads((out / "01-teacher" / "model" / "spec.json").read_text())["arch"]  # replaced


def test_resume_skips_finished_stages(tmp_path: Path) -> None:
    raw = tiny_demo()
    out = tmp_path / "out"
    first = run_recipe(parse_recipe({**raw, "stages": raw["stages"][:2]}), out)
    marker = out / "01-teacher" / "stage.json"
    stamp = marker.stat().st_mtime_ns
    full = run_recipe(parse_recipe(raw), out, resume=True)
    assert marker.stat().st_mtime_ns == stamp  # not re-run
    assert [r.name for r in full.rows] == ["teacher", "prune", "student", "int8-onnx"]
    assert full.rows[1].metrics == first.rows[1].metrics
    assert Report.load(out).rows[-1].name == "int8-onnx"


def test_resume_refuses_a_different_recipe(tmp_path: Path) -> None:
    raw = tiny_demo()
    raw["stages"] = raw["stages"][:1]
    run_recipe(parse_recipe(raw), tmp_path / "out")
    raw["stages"][0]["train"]["lr"] = 0.01
    with pytest.raises(ConfigError, match="stage '01-teacher' was run with other options"):
        run_recipe(parse_recipe(raw), tmp_path / "out", resume=True)
    raw["data"]["seed"] = 7
    with pytest.raises(ConfigError, match="different 'data' section"):
        run_recipe(parse_recipe(raw), tmp_path / "out", resume=True)


def test_prune_then_qat_keeps_sparsity_in_the_int8_graph(tmp_path: Path) -> None:
    import numpy as np
    import onnx
    from onnx import numpy_helper

    raw = tiny_demo()
    raw["stages"] = [
        raw["stages"][0],
        raw["stages"][1],
        {"stage": "qat", "label": "qat", "train": {"epochs": 2, "lr": 0.0005, "batch_size": 32}},
    ]
    report = run_recipe(parse_recipe(raw), tmp_path / "out")
    assert [r.name for r in report.rows] == ["teacher", "prune", "qat"]
    qat = report.rows[-1]
    assert qat.parity is not None and qat.parity["argmax_agreement_beyond_ties"] >= 0.99
    graph = onnx.load(str(tmp_path / "out" / "03-qat" / "model.int8.onnx")).graph
    int8 = [numpy_helper.to_array(t) for t in graph.initializer if t.data_type == onnx.TensorProto.INT8]
    weights = [w for w in int8 if w.ndim == 2]
    zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.size for w in weights)
    assert weights and zeros >= 0.84 and np.isfinite(zeros)


def test_structured_prune_stage_shrinks_params_and_file_alike(tmp_path: Path) -> None:
    from slimtune.models import load_model

    raw = tiny_demo()
    raw["model"] = {"name": "resnet-small", "options": {"widths": [32, 64], "blocks": 2}}
    raw["stages"] = [
        {"stage": "train", "label": "dense", "train": {"epochs": 2, "batch_size": 32}},
        {"stage": "prune", "method": "structured", "ratio": 0.5, "targets": ["channels", "layers"],
         "layers_ratio": 0.5, "recovery": {"epochs": 1, "batch_size": 32}},
    ]  # fmt: skip
    report = run_recipe(parse_recipe(raw), tmp_path / "out")
    dense, pruned = report.rows
    model = load_model(tmp_path / "out" / "02-prune" / "model")
    assert pruned.params == sum(p.numel() for p in model.parameters()) < 0.6 * dense.params
    assert pruned.macs < 0.6 * dense.macs
    weights = [(tmp_path / "out" / d / "model" / "model.safetensors").stat().st_size for d in ("01-dense", "02-prune")]
    assert weights[1] / weights[0] <= pruned.params / dense.params + 0.02  # the weights file shrinks as much
    assert pruned.bytes_on_disk < dense.bytes_on_disk  # the folder too (its small spec.json is not proportional)


def test_prune_recovery_and_qat_can_distil_from_the_model_before_them(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Pruning + distillation + QAT in one recipe without losing sparsity: the recovery and the QAT steps are
    distilled from a frozen copy of the model as it entered each stage, with the zeros held."""
    import slimtune.distill.task as task_module

    calls: list[tuple[int, float]] = []
    real = task_module.kd_loss

    def counting(s, t, y, config):  # type: ignore[no-untyped-def]
        calls.append((len(s), float((s - t).abs().mean())))
        return real(s, t, y, config)

    monkeypatch.setattr(task_module, "kd_loss", counting)
    raw = tiny_demo()
    raw["stages"] = [
        raw["stages"][0],
        {**raw["stages"][1], "kd": {"temperature": 2.0, "alpha": 0.5}},
        {"stage": "qat", "label": "qat", "train": {"epochs": 1, "lr": 0.0005, "batch_size": 32}, "kd": {}},
    ]
    report = run_recipe(parse_recipe(raw), tmp_path / "out")
    prune, qat = report.rows[1], report.rows[2]
    assert prune.extra["sparsity"] >= 0.84 and qat.parity is not None
    steps = [c for c in calls if c[0] > 1]
    assert len(steps) >= 2 and all(d > 0 for _, d in steps)  # the teacher is a copy, not the student itself
    from slimtune.models import load_model

    pruned = load_model(tmp_path / "out" / "02-prune" / "model")
    zeros = sum(int((p == 0).sum()) for n, p in pruned.named_parameters() if n.endswith("weight"))
    assert zeros / sum(p.numel() for n, p in pruned.named_parameters() if n.endswith("weight")) >= 0.84


def test_kd_in_a_prune_stage_needs_recovery() -> None:
    raw = tiny_demo()
    raw["stages"][1].pop("recovery", None)
    raw["stages"][1]["kd"] = {"temperature": 4}
    with pytest.raises(ConfigError, match=r"kd: distillation runs during recovery; add recovery"):
        parse_recipe(raw)
    raw["stages"][1]["recovery"] = {"epochs": 1}
    raw["stages"][1]["kd"] = {"method": "sofft"}
    with pytest.raises(ConfigError, match="sofft"):
        parse_recipe(raw)
