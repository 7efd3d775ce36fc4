"""Every structured pruning run says, per group, what was cut and what stayed whole and why: in the log
(``slimtune.prune``), in ``StructuredResult``, in the recipe report and in the model card."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from slimtune.prune import StructuredPruneConfig, prune_, prune_summarized_, structured_prune


def bert(heads: int) -> nn.Module:
    tf = pytest.importorskip("transformers")
    from slimtune.models import hf

    config = tf.BertConfig(
        hidden_size=8 * heads, num_hidden_layers=2, num_attention_heads=heads, intermediate_size=64,
        vocab_size=100, max_position_embeddings=32, num_labels=2,
    )  # fmt: skip
    torch.manual_seed(0)
    return hf.from_spec({"hf_config": config.to_dict(), "input_shape": [12], "options": {"pad_id": 0}})


def test_round_to_larger_than_the_head_count_is_said(caplog: pytest.LogCaptureFixture) -> None:
    model, x = bert(6), torch.randint(1, 100, (2, 12))
    with caplog.at_level(logging.INFO, logger="slimtune.prune"):
        prune_(model, StructuredPruneConfig(ratio=0.5, round_to=8, targets=("heads", "ffn")), example_inputs=x)
    lines = caplog.messages
    assert "model.bert.encoder.layer.0.attention.self heads: kept 6/6 — round_to 8 exceeds its 6 heads" in lines
    assert "model.bert.encoder.layer.1.intermediate.dense FFN units: kept 32/64" in lines
    assert "model.bert.pooler.dense neurons: not targeted, kept 48/48 — 'neurons' is not in targets" in lines
    assert "model.classifier neurons: frozen, kept 2/2 — it is the model's output" not in lines  # not 'neurons'
    assert "model.classifier outputs: frozen, kept 2/2 — it is the model's output" in lines
    assert lines[0].startswith("structured pruning (ratio 0.5): MACs ") and "2 groups cut" in lines[0]


class Gated(nn.Module):
    """conv1 feeds a matmul (not traceable), conv2 an FFN-like pair that can be cut, fc the output."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2, self.conv3 = nn.Conv2d(3, 8, 1), nn.Conv2d(3, 8, 1), nn.Conv2d(8, 4, 1)
        self.fc = nn.Linear(8 + 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.conv1(x).flatten(2)
        gram = (a @ a.transpose(1, 2)).mean(2)  # (B, 8)
        return self.fc(torch.cat([gram, self.conv3(self.conv2(x).relu()).mean((2, 3))], 1))


def test_every_reason_to_stay_whole_is_given() -> None:
    x = torch.randn(2, 3, 6, 6)
    torch.manual_seed(0)
    result = structured_prune(Gated(), StructuredPruneConfig(ratio=0.5, channel_round_to=1), example_inputs=x)
    why = {(o.group, o.status): o.reason for o in result.outcomes}
    assert why[("conv1", "frozen")] == "op 'matmul' uses it"
    assert why[("conv2", "cut")] == "" and why[("conv3", "cut")] == ""
    torch.manual_seed(0)
    config = StructuredPruneConfig(ratio=0.2, exclude=("conv2",), channel_round_to=1)
    lines = structured_prune(Gated(), config, example_inputs=x).lines()
    assert "conv2 channels: excluded, kept 8/8 — exclude pattern 'conv2'" in lines
    assert "conv3 channels: kept 4/4 — ratio 0.2 of 4 channels is less than one unit" in lines
    torch.manual_seed(0)
    result = structured_prune(
        Gated(), StructuredPruneConfig(ratio=0.6, min_keep=6, channel_round_to=1), example_inputs=x
    )
    assert "conv2 channels: kept 6/8 — min_keep 6" in result.lines()
    assert "conv3 channels: kept 4/4 — min_keep 6" in result.lines()
    torch.manual_seed(0)
    result = structured_prune(Gated(), StructuredPruneConfig(ratio=0.5, channel_round_to=3), example_inputs=x)
    assert "conv2 channels: kept 6/8 — 4 rounded up to a multiple of 3 (channel_round_to 3)" in result.lines()


def test_summary_carries_options_macs_and_groups() -> None:
    x = torch.randn(2, 3, 6, 6)
    torch.manual_seed(0)
    done = prune_summarized_(Gated(), StructuredPruneConfig(ratio=0.5, channel_round_to=1), example_inputs=x)
    assert done.record["method"] == "structured" and done.record["targets"] == ["neurons", "channels", "heads", "ffn"]
    assert done.record["macs_after"] < done.record["macs_before"]
    assert done.record["macs_kept"] == round(done.record["macs_after"] / done.record["macs_before"], 4)
    assert (done.record["groups_cut"], done.record["groups_whole"]) == (2, 2)
    assert {g["group"]: g["status"] for g in done.groups} == {
        "conv1": "frozen",
        "conv2": "cut",
        "conv3": "cut",
        "fc": "frozen",
    }
    assert json.loads(json.dumps(done.record)) == done.record  # JSON as is
    from slimtune.prune import MagnitudePruneConfig

    sparse = prune_summarized_(Gated(), MagnitudePruneConfig(sparsity=0.5))
    assert sparse.record["method"] == "magnitude" and sparse.record["sparsity"] == 0.5 and not sparse.groups


def test_recipe_report_and_model_card_describe_the_structured_stage(tmp_path: Path) -> None:
    from slimtune.export.model_card import _stage_detail
    from slimtune.recipe import builtin_recipe, parse_recipe, run_recipe
    from slimtune.testing import shrink_recipe

    raw = shrink_recipe(yaml.safe_load(builtin_recipe("demo").read_text()), limit=300)
    raw["model"] = {"name": "lenet5"}
    raw["stages"] = [
        {"stage": "train", "label": "dense", "train": {"epochs": 1, "batch_size": 64}},
        {"stage": "prune", "method": "structured", "ratio": 0.5, "targets": ["channels"], "channel_round_to": 1},
    ]
    report = run_recipe(parse_recipe(raw), tmp_path / "out")
    extra = report.rows[1].extra
    assert extra["prune"]["ratio"] == 0.5 and extra["prune"]["targets"] == ["channels"]
    assert extra["prune"]["macs_after"] < extra["prune"]["macs_before"]
    assert any(g["status"] == "cut" for g in extra["prune_groups"])
    md = (tmp_path / "out" / "report.md").read_text()
    assert "## Structured pruning" in md and "ratio 0.5; targets channels; MACs " in md
    assert "| `classifier.5` | outputs | 10/10 | frozen | it is the model's output |" in md
    assert "<h2>Structured pruning</h2>" in (tmp_path / "out" / "report.html").read_text()
    card = _stage_detail(json.loads(json.dumps(extra)))
    assert '"ratio": 0.5' in card and '"targets": ["channels"]' in card and "macs" in card
    assert '"sparsity": 0.0' not in card
