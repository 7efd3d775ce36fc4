"""Causal-LM training on the one loop: next-token CE with -100 masks, NLL/perplexity validation, full and
LoRA fine-tuning, gradient accumulation and activation checkpointing."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from slimtune.data import DataSplits
from slimtune.data.core import Split
from slimtune.errors import ConfigError
from slimtune.testing.tiny_lm import markov_lm_data, tiny_gpt2, tiny_llama
from slimtune.train import Callback, LoopState, TrainConfig, fit
from slimtune.train.lm import IGNORE_INDEX, CausalLMTask, evaluate_lm, lm_loss
from slimtune.transfer import FinetuneConfig, LoRAConfig, finetune_


@pytest.fixture(scope="module")
def markov() -> DataSplits:
    return markov_lm_data(vocab=32, length=16, train=192, val=48, test=48)


def test_lm_loss_is_shifted_and_skips_masked_targets() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    labels = torch.randint(7, (2, 5))
    labels[0, 2] = labels[1, 4] = IGNORE_INDEX
    pairs = [(b, t) for b in range(2) for t in range(4) if labels[b, t + 1] != IGNORE_INDEX]
    by_hand = torch.stack([F.cross_entropy(logits[b, t], labels[b, t + 1]) for b, t in pairs]).mean()
    assert torch.allclose(lm_loss(logits, labels), by_hand)
    moved = logits.clone()
    moved[0, 1] += 5.0  # predicts the masked target labels[0, 2]: must not change the loss
    assert torch.allclose(lm_loss(moved, labels), by_hand)


def test_lm_fit_lowers_perplexity_and_keeps_the_lowest_nll(markov: DataSplits) -> None:
    model = tiny_llama(tied=False, init=0.02, vocab=32)
    before = evaluate_lm(model, markov.val)
    result = fit(model, markov, config=TrainConfig(epochs=3, batch_size=16, lr=3e-3, device="cpu"))
    after = evaluate_lm(model, markov.val)
    assert result.monitor == "val_loss"
    rows = result.history
    assert {"val_loss", "val_perplexity", "val_accuracy", "train_loss"} <= set(rows[0])
    assert result.best_value == min(r["val_loss"] for r in rows)
    assert after["perplexity"] < 0.6 * before["perplexity"]
    assert math.isclose(after["perplexity"], math.exp(after["loss"]), rel_tol=1e-9)
    assert after["loss"] == pytest.approx(result.best_value, rel=1e-5)  # the best epoch's weights are back
    assert after["accuracy"] > before["accuracy"]


def test_gpt2_trains_with_an_output_object(markov: DataSplits) -> None:
    model = tiny_gpt2(vocab=32, hidden=32, heads=2, init=0.02)
    before = evaluate_lm(model, markov.val)["loss"]
    fit(model, markov, config=TrainConfig(epochs=2, batch_size=16, lr=3e-3))
    assert evaluate_lm(model, markov.val)["loss"] < before - 0.3


def _masked(data: DataSplits) -> DataSplits:
    """Mask a different number of targets per window, so micro-batches hold different token counts."""
    y = data.train.y.clone()
    for i in range(len(y)):
        y[i, : 2 + (i % 7) * 2] = IGNORE_INDEX
    return DataSplits(**{**data.__dict__, "train": Split(data.train.x, y)})


def test_grad_accum_matches_the_whole_batch_token_weighted(markov: DataSplits) -> None:
    data = _masked(markov)
    states = []
    for accum in (1, 4):
        model = tiny_llama(tied=False, init=0.02, vocab=32, seed=1)
        cfg = TrainConfig(epochs=1, batch_size=32, lr=1e-3, grad_accum=accum, schedule="constant", restore_best=False)
        fit(model, data, config=cfg)
        states.append(model.state_dict())
    for k in states[0]:
        torch.testing.assert_close(states[0][k], states[1][k], atol=2e-5, rtol=1e-4)


def test_grad_accum_needs_room_in_the_batch() -> None:
    with pytest.raises(ConfigError, match="grad_accum"):
        TrainConfig(batch_size=4, grad_accum=8)


class _SeesCheckpointing(Callback):
    def __init__(self) -> None:
        self.flags: list[bool] = []

    def on_step_end(self, state: LoopState) -> None:
        self.flags.append(bool(state.model.is_activation_checkpointing))


class _CountsSavedActivations(CausalLMTask):
    """The LM task, counting the elements autograd keeps for the backward in each step."""

    def __init__(self) -> None:
        self.saved: list[int] = []

    def loss(self, model, x, y):
        count = [0]

        def pack(t: torch.Tensor) -> torch.Tensor:
            count[0] += t.numel()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = super().loss(model, x, y)
        self.saved.append(count[0])
        return out


def test_gradient_checkpointing_keeps_fewer_activations_same_updates(markov: DataSplits) -> None:
    states, saved = [], []
    for on in (False, True):
        model = tiny_llama(tied=False, init=0.02, vocab=32, seed=2)
        seen, task = _SeesCheckpointing(), _CountsSavedActivations()
        cfg = TrainConfig(epochs=1, batch_size=64, gradient_checkpointing=on)
        fit(model, markov, config=cfg, task=task, callbacks=[seen])
        assert set(seen.flags) == {on}
        assert not model.is_activation_checkpointing  # switched off again after fit
        states.append(model.state_dict())
        saved.append(max(task.saved))
    assert saved[1] < 0.3 * saved[0]
    for k in states[0]:
        torch.testing.assert_close(states[0][k], states[1][k], atol=1e-5, rtol=1e-4)


def test_gradient_checkpointing_on_a_model_that_cannot(digits: DataSplits) -> None:
    from slimtune.models import build

    model = build("mlp", input_shape=digits.input_shape, num_classes=10, hidden=[8])
    with pytest.raises(ConfigError, match="gradient_checkpointing: MLP cannot checkpoint"):
        fit(model, digits, config=TrainConfig(epochs=1, gradient_checkpointing=True))


def test_full_finetune_keeps_the_lm_head_shape(markov: DataSplits) -> None:
    model = tiny_llama(tied=False, init=0.02, vocab=32)
    before = evaluate_lm(model, markov.val)["loss"]
    finetune_(model, markov, FinetuneConfig(train=TrainConfig(epochs=1, batch_size=16, lr=3e-3)))
    assert model.lm_head.out_features == 32
    assert evaluate_lm(model, markov.val)["loss"] < before - 0.3


@pytest.mark.parametrize("make", [tiny_llama, tiny_gpt2], ids=["llama", "gpt2"])
def test_lora_finetune_merges_into_plain_weights(markov: DataSplits, make) -> None:
    model = make(vocab=32)
    head = model.lm_head.weight.detach().clone()
    embed = model.get_input_embeddings().weight.detach().clone()
    before_state = {k: v.clone() for k, v in model.state_dict().items()}
    before = evaluate_lm(model, markov.val)["loss"]
    cfg = FinetuneConfig(lora=LoRAConfig(r=4, alpha=8), train=TrainConfig(epochs=2, batch_size=16, lr=1e-2))
    finetune_(model, markov, cfg)
    after = evaluate_lm(model, markov.val)["loss"]
    assert after < before - 0.05
    assert set(model.state_dict()) == set(before_state)  # plain weights again: no adapter left
    assert not any("lora" in n for n, _ in model.named_modules())
    assert torch.equal(model.lm_head.weight, head) and torch.equal(model.get_input_embeddings().weight, embed)
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before_state[k])]
    assert changed and all(("q_proj" in k or "v_proj" in k or "c_attn" in k) for k in changed)


def test_causal_lm_task_rejects_a_classifier(digits: DataSplits) -> None:
    from slimtune.errors import UnsupportedModelError
    from slimtune.models import build

    model = build("mlp", input_shape=(4,), num_classes=3, hidden=[8])
    with pytest.raises(UnsupportedModelError, match="causal LM must return logits"):
        CausalLMTask().loss(model, torch.randn(2, 4), torch.zeros(2, 4, dtype=torch.long))


class _Wrapper(torch.nn.Module):
    """A causal LM inside a wrapper that returns plain logits (as a model registry might build it)."""

    def __init__(self, lm: torch.nn.Module) -> None:
        super().__init__()
        self.lm = lm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lm(x, use_cache=False).logits


def test_lora_and_freezing_find_a_wrapped_causal_lm(markov: DataSplits) -> None:
    from slimtune.transfer.anatomy import anatomy
    from slimtune.transfer.lora import lora_targets

    model = _Wrapper(tiny_llama(tied=False, init=0.02, vocab=32))
    anat = anatomy(model)
    assert anat.head == "lm.lm_head" and anat.blocks[0] == ["lm.model.embed_tokens"] and len(anat.blocks) == 3
    assert lora_targets(model) == [f"lm.model.layers.{i}.self_attn.{p}" for i in range(2) for p in ("q_proj", "v_proj")]
    before = evaluate_lm(model, markov.val)["loss"]
    cfg = FinetuneConfig(freeze="all-but-last-1", train=TrainConfig(epochs=1, batch_size=16, lr=3e-3))
    embed = model.lm.model.embed_tokens.weight.detach().clone()
    finetune_(model, markov, cfg)
    assert torch.equal(model.lm.model.embed_tokens.weight, embed)  # frozen block untouched
    assert evaluate_lm(model, markov.val)["loss"] < before
