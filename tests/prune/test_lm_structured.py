"""GQA-aware structured pruning of tiny Llama (4 query / 2 KV heads) and GPT-2: zero-importance KV groups, query
heads, FFN channels and blocks removed leave the logits unchanged; the pruned models (layers of different widths)
save, reload, export and generate identically; impossible ratios and head groups are refused in one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from slimtune.data.core import DataSplits, Split
from slimtune.errors import ConfigError
from slimtune.export.lm_bundle import export_lm
from slimtune.models import load_model, save_model
from slimtune.models.lm import tiny_gpt2 as registered_gpt2
from slimtune.models.lm import tiny_llama as registered_llama
from slimtune.models.lm_layers import layer_shapes
from slimtune.prune import LMStructuredConfig, prune_
from slimtune.testing.tiny_lm import tiny_gpt2, tiny_llama

TEXT = (
    "Our revels now are ended. These our actors, as I foretold you, were all spirits and are melted into air, "
    "into thin air: and, like the baseless fabric of this vision, the cloud-capp'd towers, the gorgeous palaces, "
    "the solemn temples, the great globe itself, yea, all which it inherit, shall dissolve and, like this "
    "insubstantial pageant faded, leave not a rack behind. We are such stuff as dreams are made on."
)
PROMPTS = [[72, 101, 108, 108, 111], [84, 104, 101, 32, 99, 97, 116]]


def text_data(n: int = 8, length: int = 32) -> DataSplits:
    data = torch.tensor(list(TEXT.encode()), dtype=torch.long)
    starts = torch.linspace(0, len(data) - length - 1, n).long()
    ids = torch.stack([data[s : s + length] for s in starts])
    split = Split(ids, ids.clone())
    return DataSplits(name="tempest", train=split, val=split, test=split, num_classes=257, label_names=[],
                      kind="lm", input_shape=(length,))  # type: ignore[arg-type]  # fmt: skip


def logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(text_data(2, 24).train.x).logits  # type: ignore[no-any-return]


def zero_llama(*, registered: bool = False) -> torch.nn.Module:
    """Layer 0: KV group 1 (query heads 2, 3) writes nothing; layer 1: query head 1 (of group 0) writes nothing and 32
    FFN channels are dead; layer 2 returns its input (a block that does nothing)."""
    model = registered_llama(layers=3) if registered else tiny_llama(layers=3)
    d = 16
    with torch.no_grad():
        layers = model.model.layers
        layers[0].self_attn.o_proj.weight[:, 2 * d : 4 * d] = 0
        layers[1].self_attn.o_proj.weight[:, 1 * d : 2 * d] = 0
        layers[1].mlp.down_proj.weight[:, 96:] = 0
        layers[2].self_attn.o_proj.weight.zero_()
        layers[2].mlp.down_proj.weight.zero_()
    return model


def test_zero_importance_groups_channels_and_blocks_are_removed_without_changing_logits(tmp_path: Path) -> None:
    model = zero_llama()
    before = logits(model)
    cfg = LMStructuredConfig(heads_ratio=1 / 6, ffn_ratio=32 / 384, drop_layers=1, samples=8)
    prune_(model, cfg, data=text_data())
    shapes = layer_shapes(model)
    assert [(s["heads"], s["kv_heads"], s["ffn"]) for s in shapes] == [(2, 1, 128), (4, 2, 96)]
    torch.testing.assert_close(logits(model), before, rtol=1e-5, atol=1e-5)
    # query heads inside a group: half of every group goes; in layer 1 exactly the two silent heads (1 and 3)
    model = zero_llama()
    prune_(model, LMStructuredConfig(query_ratio=0.5, scope="layer", samples=8), data=text_data())
    assert [(s["heads"], s["kv_heads"]) for s in layer_shapes(model)] == [(2, 2)] * 3
    model = zero_llama()
    with torch.no_grad():  # make query head 3 (group 1) of layer 1 write nothing too, and prune only layer 1's
        model.model.layers[1].self_attn.o_proj.weight[:, 48:64] = 0
    layer1 = model.model.layers[1]
    prune_(model, LMStructuredConfig(query_ratio=0.5, scope="layer", samples=8), data=text_data())
    assert layer1.self_attn.num_key_value_groups == 1
    model2 = zero_llama()
    with torch.no_grad():
        model2.model.layers[1].self_attn.o_proj.weight[:, 48:64] = 0
    kept = model.model.layers[1].self_attn.q_proj.weight
    torch.testing.assert_close(kept, model2.model.layers[1].self_attn.q_proj.weight[[*range(0, 16), *range(32, 48)]])


def test_pruned_models_save_reload_export_and_generate_identically(tmp_path: Path) -> None:
    for make, cfg in (
        (
            lambda: zero_llama(registered=True),
            LMStructuredConfig(heads_ratio=1 / 6, ffn_ratio=32 / 384, drop_layers=1, samples=8),
        ),
        (
            lambda: registered_gpt2(layers=3),
            LMStructuredConfig(heads_ratio=0.25, ffn_ratio=0.3, drop_layers=1, samples=8),
        ),
    ):
        model = make()
        prune_(model, cfg, data=text_data())
        shapes = layer_shapes(model)
        assert len(shapes) == 2 and shapes[0] != shapes[1]  # layers of different widths
        folder = save_model(model, tmp_path / f"m{len(list(tmp_path.iterdir()))}")
        again = load_model(folder)
        assert layer_shapes(again) == shapes
        torch.testing.assert_close(logits(again), logits(model), rtol=0, atol=0)
        ids = torch.tensor([PROMPTS[0]])
        with torch.no_grad():
            a = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False)
            b = again.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False)
        assert torch.equal(a, b)
        report = export_lm(again, tmp_path / f"m{len(list(tmp_path.iterdir()))}.onnx", prompts=PROMPTS)
        assert report["greedy_identical"] and report["max_abs_diff"] < 1e-4


def test_impossible_ratios_and_head_groups_are_one_line() -> None:
    data = text_data()
    cases = [
        (tiny_llama(), LMStructuredConfig(heads_ratio=1.0, scope="layer"), "would remove every heads unit of layer 0"),
        (tiny_llama(), LMStructuredConfig(heads_ratio=1.0), "would remove every heads unit of a layer"),
        (tiny_llama(), LMStructuredConfig(query_ratio=1.0), "would remove every query head of a KV group"),
        (tiny_llama(), LMStructuredConfig(ffn_ratio=1.0, scope="layer"), "would remove every ffn unit of layer 0"),
        (tiny_gpt2(), LMStructuredConfig(ffn_ratio=1.0), "would remove every ffn unit of a layer"),
        (tiny_llama(layers=2), LMStructuredConfig(drop_layers=2), "would remove every layer"),
        (tiny_gpt2(), LMStructuredConfig(heads_ratio=0.5, head_group=3), "has 4 heads, not divisible by head_group 3"),
        (tiny_llama(), LMStructuredConfig(heads_ratio=0.5, head_group=3), "head_group must be 2"),
        (tiny_gpt2(), LMStructuredConfig(query_ratio=0.5), "query_ratio needs grouped-query attention"),
    ]
    for model, cfg, message in cases:
        with pytest.raises(ConfigError, match=message) as exc:
            prune_(model, cfg, data=data)
        assert "\n" not in str(exc.value)


def test_recipe_prune_stage_runs_lm_structured_with_recovery(tmp_path: Path) -> None:
    from slimtune.recipe.stages import STAGES, Context
    from slimtune.testing.tiny_lm import markov_lm_data

    stage = STAGES.get("prune")
    raw = {"method": "lm-structured", "heads_ratio": 0.25, "ffn_ratio": 0.25, "drop_layers": 1, "samples": 8,
           "recovery": {"epochs": 1, "batch_size": 8}}  # fmt: skip
    cfg = stage.parse(raw, where="stages[0]")
    ctx = Context(data=markov_lm_data(vocab=32, length=128, train=8, val=2, test=2), model=registered_llama(layers=3))
    result = stage.run(ctx, cfg, tmp_path)
    record = result.extra["prune"]
    assert record["method"] == "lm-structured" and record["params_after"] < record["params_before"]
    assert len(record["layers"]) == 2 and load_model(result.artifact) is not None
    with pytest.raises(ConfigError, match="heads_ratio must be in"):
        stage.parse({"method": "lm-structured", "heads_ratio": 1.5}, where="stages[0]")


def test_global_scope_compares_layers_by_relative_importance() -> None:
    from slimtune.prune.lm_structured import _drop_lowest

    # layer 1's activations are 100x layer 0's (deeper layers see a larger residual stream): ranked raw, layer 0
    # would lose all but one channel; relative to each layer's mean, the least important of each go
    g = torch.Generator().manual_seed(0)
    shallow, deep = torch.rand(16, generator=g) + 0.5, 100 * (torch.rand(16, generator=g) + 0.5)
    drops = _drop_lowest([shallow, deep], 0.5, "global", "ffn")
    assert sum(len(d) for d in drops) == 16 and 4 <= len(drops[0]) <= 12
    assert set(drops[0]) == set(torch.argsort(shallow)[: len(drops[0])].tolist())
