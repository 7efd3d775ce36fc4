"""Attention-map transfer on transformer-small and a tiny random-init BERT."""

from __future__ import annotations

import pytest
import torch

from slimtune.distill import AttentionKDConfig, DistillationTask, SoftKDConfig, attention_layers, attention_probs
from slimtune.distill.attention import default_layer_map
from slimtune.errors import ConfigError, UnsupportedModelError
from slimtune.models import build
from slimtune.testing.tiny import tiny
from slimtune.train import TrainConfig, fit

ARCHS = ["transformer-small", "tiny-bert"]


def _teacher_student(arch: str) -> tuple[torch.nn.Module, torch.nn.Module, torch.Tensor, torch.Tensor]:
    if arch == "tiny-bert":
        pytest.importorskip("transformers")
    teacher, data = tiny(arch, seed=0)
    student, _ = tiny(arch, seed=1)
    assert isinstance(data.train.x, torch.Tensor)
    return teacher, student, data.train.x, data.train.y


def _attention_gap(task: DistillationTask, wrapped: torch.nn.Module, x: torch.Tensor) -> float:
    term = wrapped.terms[0]  # type: ignore[index]
    wrapped.eval()
    with torch.no_grad():
        task.loss(wrapped, x, torch.zeros(len(x), dtype=torch.long))
    wrapped.train()
    return float(term.loss())


@pytest.mark.parametrize("arch", ARCHS)
def test_attention_transfer_pulls_student_maps_to_teacher(arch: str) -> None:
    teacher, student, x, _ = _teacher_student(arch)
    config = AttentionKDConfig(loss="kl", weight=10.0)
    task = DistillationTask(teacher, SoftKDConfig(), hints=[config])
    wrapped = task.wrap(student, x[:2])
    before = _attention_gap(task, wrapped, x)
    data = tiny(arch)[1]
    fit(wrapped, data, config=TrainConfig(epochs=4, lr=3e-3, batch_size=16), task=task)
    assert _attention_gap(task, wrapped, x) < 0.7 * before
    assert wrapped.unwrap() is student


@pytest.mark.parametrize("arch", ARCHS)
def test_probabilities_are_distributions_with_padding_masked(arch: str) -> None:
    teacher, _, x, _ = _teacher_student(arch)
    padded = x[x[:, -1] == 0][:4]  # the tiny text data pads half its rows' final 4 tokens
    assert len(padded) == 4
    seen: dict[str, torch.Tensor] = {}
    layer = attention_layers(teacher)[0]
    handle = layer.register_forward_hook(lambda m, a, k, o: seen.update(p=attention_probs(m, a, k)), with_kwargs=True)
    teacher.eval()
    teacher(padded)
    handle.remove()
    p = seen["p"]
    assert p.shape[-2:] == (x.shape[1], x.shape[1])
    torch.testing.assert_close(p.sum(-1), torch.ones(p.shape[:-1]))
    assert float(p[..., (padded == 0)[0]].max()) < 1e-6  # no attention to padding keys


def test_bert_probabilities_match_eager_attention_weights() -> None:
    teacher, _, x, _ = _teacher_student("tiny-bert")
    teacher.model.set_attn_implementation("eager")  # type: ignore[operator]
    seen: dict[str, torch.Tensor] = {}

    def hook(m: torch.nn.Module, a: tuple, k: dict, o: tuple) -> None:  # type: ignore[type-arg]
        seen.update(ours=attention_probs(m, a, k), eager=o[1])

    handle = attention_layers(teacher)[1].register_forward_hook(hook, with_kwargs=True)
    teacher.eval()
    teacher(x[x[:, -1] == 0][:3])
    handle.remove()
    torch.testing.assert_close(seen["ours"], seen["eager"])


def test_layer_mapping_defaults_and_errors() -> None:
    assert default_layer_map(3, 6) == {0: 1, 1: 3, 2: 5}
    assert default_layer_map(2, 2) == {0: 0, 1: 1}
    teacher, student, x, _ = _teacher_student("transformer-small")
    with pytest.raises(ConfigError, match=r"layer pair 0 → 5 is out of range.*teacher 2") as info:
        DistillationTask(teacher, hints=[AttentionKDConfig(layers={0: 5})]).wrap(student, x[:2])
    assert "\n" not in str(info.value)
    assert AttentionKDConfig.from_dict({"layers": {"0": "1"}}).layers == {0: 1}
    mlp = build("mlp", input_shape=(4,), num_classes=2, hidden=[4])
    with pytest.raises(UnsupportedModelError, match="feature"):
        DistillationTask(mlp, hints=[AttentionKDConfig()]).wrap(mlp, torch.zeros(2, 4))
