"""Wanda and SparseGPT on tiny Llama (GQA) and GPT-2 fed real text bytes: exact sparsity and N:M patterns,
SparseGPT's layer error below magnitude's, zeros held through fine-tuning and mask-aware GPTQ int4, sparse
storage on disk, and one-line refusals (an N:M pattern that does not tile a layer, too little calibration)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from slimtune.data.core import DataSplits, Split
from slimtune.errors import ConfigError, DataError
from slimtune.models import save_model
from slimtune.models.blocks import BlockContext, calibration_pass, linear_weight
from slimtune.prune import MaskCallback, SparseGPTConfig, WandaConfig, masks_from_zeros, prune_
from slimtune.prune.lm_sparse_math import row_keep, sparsegpt
from slimtune.quantize.weight_only import GPTQConfig, quantize_lm_, quantized_layers
from slimtune.quantize.weight_only.api import block_targets
from slimtune.quantize.weight_only.gptq import HessianStats
from slimtune.testing.tiny_lm import tiny_gpt2, tiny_llama

TEXT = (
    "Our revels now are ended. These our actors, as I foretold you, were all spirits and are melted into air, "
    "into thin air: and, like the baseless fabric of this vision, the cloud-capp'd towers, the gorgeous palaces, "
    "the solemn temples, the great globe itself, yea, all which it inherit, shall dissolve and, like this "
    "insubstantial pageant faded, leave not a rack behind. We are such stuff as dreams are made on, and our "
    "little life is rounded with a sleep. Full fathom five thy father lies; of his bones are coral made."
)


def text_ids(n: int = 8, length: int = 48) -> torch.Tensor:
    data = torch.tensor(list(TEXT.encode()), dtype=torch.long)
    starts = torch.linspace(0, len(data) - length - 1, n).long()
    return torch.stack([data[s : s + length] for s in starts])


def text_data(n: int = 8, length: int = 48) -> DataSplits:
    ids = text_ids(n, length)
    split = Split(ids, ids.clone())
    return DataSplits(name="tempest", train=split, val=split, test=split, num_classes=257, label_names=[], kind="lm",  # type: ignore[arg-type]
                      input_shape=(length,))  # fmt: skip


def zeros_of(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: linear_weight(m) == 0 for n, m in block_targets(model).items()}


@pytest.mark.parametrize("make", [tiny_llama, tiny_gpt2], ids=["llama", "gpt2"])
@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_exact_sparsity_and_nm_patterns(make, method: str) -> None:  # type: ignore[no-untyped-def]
    cls = WandaConfig if method == "wanda" else SparseGPTConfig
    data = text_data()
    for options in ({"sparsity": 0.6}, {"pattern": "2:4"}, {"pattern": "4:8"}):
        model = make()
        prune_(model, cls(samples=8, **options), data=data)  # type: ignore[arg-type]
        for name, zero in zeros_of(model).items():
            out, width = zero.shape
            if "pattern" in options:
                n, m = (int(v) for v in str(options["pattern"]).split(":"))
                per_group = zero.reshape(out, width // m, m).sum(-1)
                assert bool((per_group == n).all()), (name, options)
            elif method == "wanda":  # ranked within each output row: every row has exactly int(0.6 * in) zeros
                assert bool((zero.sum(1) == int(0.6 * width)).all()), name
            else:  # SparseGPT drops exactly int(0.6 * out * cols) per 128-column block
                expected = sum(int(0.6 * out * min(128, width - i)) for i in range(0, width, 128))
                assert int(zero.sum()) == expected, name
        with torch.no_grad():
            assert torch.isfinite(model(text_ids(2, 16)).logits).all()


class Collect:
    def __init__(self) -> None:
        self.x: dict[tuple[int, str], list[torch.Tensor]] = {}
        self.block = 0

    def observe(self, name: str, layer: nn.Module, x: torch.Tensor) -> None:
        self.x.setdefault((self.block, name), []).append(x)

    def compress_block(self, ctx: BlockContext, targets: dict[str, nn.Module]) -> None:
        self.block += 1


def test_sparsegpt_layer_error_is_below_magnitude_on_real_layers() -> None:
    model = tiny_llama(hidden=128)
    rec = Collect()
    calibration_pass(model, text_ids(), rec, progress=False)
    for key in ((1, "self_attn.q_proj"), (1, "mlp.down_proj"), (0, "self_attn.o_proj")):
        x = torch.cat(rec.x[key])
        w = linear_weight(model.model.layers[key[0]].get_submodule(key[1])).float()
        stats = HessianStats(x.shape[1])
        stats.add(x)
        for n, m in ((0, 0), (2, 4)):
            mag = w * row_keep(w.abs(), sparsity=0.5, n=n, m=m)
            sp, keep = sparsegpt(w, stats.h, sparsity=0.5, n=n, m=m)
            assert bool(((sp == 0) == ~keep).all())
            err_m = float(((x @ (w - mag).t()) ** 2).sum())
            err_s = float(((x @ (w - sp).t()) ** 2).sum())
            assert err_s < 0.8 * err_m, (key, n, err_s, err_m)


@pytest.mark.parametrize("make", [tiny_llama, tiny_gpt2], ids=["llama", "gpt2"])
def test_zeros_survive_fine_tuning_and_mask_aware_gptq(make) -> None:  # type: ignore[no-untyped-def]
    from slimtune.train.loop import TrainConfig, fit

    model, data = make(), text_data(16, 32)
    prune_(model, SparseGPTConfig(pattern="2:4", samples=8), data=data)
    zeros = zeros_of(model)
    before = {n: linear_weight(m).clone() for n, m in block_targets(model).items()}
    fit(model, data, config=TrainConfig(epochs=1, batch_size=8, lr=1e-3, seed=0), callbacks=[MaskCallback(
        masks_from_zeros(model))], progress=False)  # fmt: skip
    after = zeros_of(model)
    for name, zero in zeros.items():
        assert bool((after[name] == zero).all()), name  # the same zeros, no more, no fewer
        assert not torch.equal(linear_weight(block_targets(model)[name]), before[name])  # it did train
    quantize_lm_(model, GPTQConfig(bits=4, group_size=32, symmetric=False, samples=8), calibration=data.train.x)
    for name, (layer, qw) in quantized_layers(model).items():
        zero = zeros[name]
        assert bool((linear_weight(layer)[zero] == 0).all()), name
        z = qw.zeros.repeat_interleave(qw.group_size, dim=1)
        assert bool((qw.codes.float()[zero] == z[zero]).all()), name  # the ONNX codes dequantize to exact 0


def test_sparse_model_file_shrinks(tmp_path: Path) -> None:
    dense = tiny_llama(hidden=128)
    sparse = copy.deepcopy(dense)
    prune_(sparse, WandaConfig(sparsity=0.7, samples=8), data=text_data())
    a, b = save_model(dense, tmp_path / "dense"), save_model(sparse, tmp_path / "sparse")
    size = {p: sum(f.stat().st_size for f in Path(p).rglob("*") if f.is_file()) for p in (a, b)}
    assert size[b] < 0.8 * size[a], size


def test_bad_patterns_and_too_little_calibration_are_one_line() -> None:
    with pytest.raises(ConfigError, match=r"needs input widths divisible by 4, but layer '.*' has 30") as exc:
        prune_(tiny_llama(hidden=30, heads=1, kv_heads=1), WandaConfig(pattern="2:4", samples=4), data=text_data())
    assert "\n" not in str(exc.value)
    with pytest.raises(DataError, match="has 8 windows but 32 samples were requested"):
        prune_(tiny_llama(), SparseGPTConfig(sparsity=0.5), data=text_data())
    with pytest.raises(DataError, match=r"has 64 tokens, fewer than the widest layer input \(128\)"):
        prune_(tiny_llama(), SparseGPTConfig(samples=4), data=text_data(4, 16))
    with pytest.raises(ConfigError, match="pattern must be N:M zeros per M columns"):
        SparseGPTConfig.from_dict({"pattern": 124})  # what YAML makes of an unquoted 2:4
    with pytest.raises(ConfigError, match="give sparsity or pattern, not both"):
        WandaConfig(sparsity=0.5, pattern="2:4")


def test_recipe_prune_stage_sparsegpt_on_text_holds_zeros_through_recovery(tmp_path: Path) -> None:
    from slimtune.recipe.stages import STAGES, Context
    from slimtune.testing.tiny_lm import markov_lm_data

    stage = STAGES.get("prune")
    raw = {"method": "sparsegpt", "pattern": "2:4", "samples": 8, "recovery": {"epochs": 1, "batch_size": 8}}
    cfg = stage.parse(raw, where="stages[0]")
    ctx = Context(data=markov_lm_data(vocab=32, length=16, train=16, val=4, test=4), model=tiny_llama(vocab=32))
    result = stage.run(ctx, cfg, tmp_path)
    assert result.extra["prune"]["method"] == "sparsegpt" and result.extra["prune"]["sparsity"] == 0.5
    for name, zero in zeros_of(ctx.model).items():
        out, width = zero.shape
        assert bool((zero.reshape(out, width // 4, 4).sum(-1) == 2).all()), name
    with pytest.raises(ConfigError, match="pattern must be N:M"):
        stage.parse({"method": "wanda", "pattern": 124}, where="stages[0]")


def test_owl_gives_blocks_different_ratios_that_average_the_target() -> None:
    from slimtune.prune.api import prune_summarized_
    from slimtune.prune.lm_sparse import owl_ratios

    assert owl_ratios([0.01, 0.03, 0.02], target=0.6, lam=0.1) == pytest.approx([0.7, 0.5, 0.6])
    model = tiny_llama(layers=3)
    with torch.no_grad():  # block 1 gets strong outlier input channels
        model.model.layers[1].input_layernorm.weight[:4] = 30.0
    done = prune_summarized_(model, WandaConfig(sparsity=0.6, samples=8, owl=True, owl_lambda=0.1), data=text_data())
    ratios = done.record["block_sparsity"]
    assert ratios[1] == min(ratios) and max(ratios) - min(ratios) == pytest.approx(0.2)
    assert sum(ratios) / 3 == pytest.approx(0.6)
    for i, block in enumerate(model.model.layers):  # each block's rows hold exactly its own ratio
        w = block.self_attn.q_proj.weight
        assert bool(((w == 0).sum(1) == int(ratios[i] * w.shape[1])).all())
    with pytest.raises(ConfigError, match="owl sets unstructured per-block ratios"):
        SparseGPTConfig(pattern="2:4", owl=True)
