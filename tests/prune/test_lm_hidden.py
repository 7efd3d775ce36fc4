"""Hidden-size pruning (``lm-structured`` ``hidden_ratio``) on tiny Llama with GQA: channels that are zero in the
whole residual stream are the ones removed and the logits do not change (the RMSNorm rescale); the pruned model
saves, reloads, exports and generates identically; GPT-2 (LayerNorm) and a ratio that empties the stream are
refused in one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from slimtune.data.core import DataSplits, Split
from slimtune.errors import ConfigError, UnsupportedModelError
from slimtune.export.lm_bundle import export_lm
from slimtune.models import load_model, save_model
from slimtune.models.lm import tiny_llama as registered_llama
from slimtune.prune import LMStructuredConfig, prune_
from slimtune.testing.tiny_lm import tiny_gpt2, tiny_llama

TEXT = b"Full fathom five thy father lies; of his bones are coral made; those are pearls that were his eyes."
PROMPTS = [[72, 101, 108, 108, 111], [84, 104, 101, 32, 99, 97, 116]]


def text_data(n: int = 8, length: int = 32) -> DataSplits:
    data = torch.tensor(list(TEXT), dtype=torch.long)
    starts = torch.linspace(0, len(data) - length - 1, n).long()
    ids = torch.stack([data[s : s + length] for s in starts])
    split = Split(ids, ids.clone())
    return DataSplits(name="tempest", train=split, val=split, test=split, num_classes=257, label_names=[],
                      kind="lm", input_shape=(length,))  # type: ignore[arg-type]  # fmt: skip


def logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(text_data(2, 24).train.x).logits  # type: ignore[no-any-return]


def silent_channels(model: torch.nn.Module, channels: list[int]) -> torch.nn.Module:
    """Zero ``channels`` of the residual stream everywhere: the embedding and every writer (o_proj, down_proj)."""
    with torch.no_grad():
        model.model.embed_tokens.weight[:, channels] = 0
        for block in model.model.layers:
            block.self_attn.o_proj.weight[channels] = 0
            block.mlp.down_proj.weight[channels] = 0
    return model


@pytest.mark.parametrize("tied", [True, False])
def test_silent_hidden_channels_are_removed_without_changing_logits(tied: bool) -> None:
    model = silent_channels(tiny_llama(tied=tied, layers=2), [5, 40, 41, 63])
    before, emb = logits(model), model.model.embed_tokens.weight.detach().clone()
    prune_(model, LMStructuredConfig(hidden_ratio=4 / 64, samples=8), data=text_data())
    keep = [c for c in range(64) if c not in (5, 40, 41, 63)]
    assert model.config.hidden_size == 60 and model.config.head_dim == 16
    assert torch.equal(model.model.embed_tokens.weight, emb[:, keep])
    assert model.lm_head.weight.shape == (model.config.vocab_size, 60)
    assert (model.lm_head.weight is model.model.embed_tokens.weight) == tied
    torch.testing.assert_close(logits(model), before, rtol=1e-4, atol=1e-4)  # only the norms' eps differs


def test_hidden_pruned_model_saves_reloads_exports_and_generates_identically(tmp_path: Path) -> None:
    model = registered_llama(layers=2)
    prune_(model, LMStructuredConfig(hidden_ratio=0.25, ffn_ratio=0.25, samples=8), data=text_data())
    assert model.config.hidden_size == 48
    folder = save_model(model, tmp_path / "m")
    again = load_model(folder)
    torch.testing.assert_close(logits(again), logits(model), rtol=0, atol=0)
    ids = torch.tensor([PROMPTS[0]])
    with torch.no_grad():
        a = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False)
        b = again.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False)
    assert torch.equal(a, b)
    report = export_lm(again, tmp_path / "m.onnx", prompts=PROMPTS)
    assert report["greedy_identical"] and report["max_abs_diff"] < 1e-4


def test_hidden_ratio_refusals_are_one_line() -> None:
    with pytest.raises(UnsupportedModelError, match="hidden_ratio") as exc:
        prune_(tiny_gpt2(), LMStructuredConfig(hidden_ratio=0.25, samples=8), data=text_data())
    assert "\n" not in str(exc.value)
    with pytest.raises(ConfigError, match="would remove every hidden channel"):
        prune_(tiny_llama(), LMStructuredConfig(hidden_ratio=1.0, samples=8), data=text_data())
