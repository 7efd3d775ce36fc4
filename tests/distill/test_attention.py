"""Attention-map transfer on transformer-small and a tiny random-init BERT."""

from __future__ import annotations

import math
from typing import Any, Literal

import pytest
import torch

from slimtune.distill import AttentionKDConfig, DistillationTask, SoftKDConfig, attention_layers, attention_probs
from slimtune.distill.attention import AttentionTerm, default_layer_map
from slimtune.errors import ConfigError, UnsupportedModelError
from slimtune.models import build
from slimtune.models.transformer import SelfAttention
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
    term: Any = wrapped.terms[0]  # type: ignore[index]
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
    assert wrapped.unwrap() is student  # type: ignore[operator]


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
    teacher.model.set_attn_implementation("eager")  # type: ignore[operator,union-attr]
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


class _OneAttention(torch.nn.Module):
    """One transformer-small attention layer on a 2-d model dim with q = q_scale·I, k = I and no biases."""

    def __init__(self, heads: int, q_scale: float) -> None:
        super().__init__()
        self.attn = SelfAttention(2, heads, 2 // heads)
        with torch.no_grad():
            for lin, scale in ((self.attn.q, q_scale), (self.attn.k, 1.0)):
                lin.weight.copy_(scale * torch.eye(2))
                lin.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(x, torch.zeros(x.shape[:2], dtype=torch.bool))


X = [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]  # 3 tokens


def _softmax(row: list[float]) -> list[float]:
    e = [math.exp(v) for v in row]
    return [v / sum(e) for v in e]


def _maps(head_dims: list[list[int]], scale: float) -> list[list[float]]:
    """Attention map (3 × 3) averaged over heads; a head sees the dims it lists, scores q·k / √head_dim."""
    maps = []
    for dims in head_dims:
        dot = [
            [sum(X[i][d] * X[j][d] for d in dims) * scale / math.sqrt(len(dims)) for j in range(3)] for i in range(3)
        ]
        maps.append([_softmax(row) for row in dot])
    return [[sum(m[i][j] for m in maps) / len(maps) for j in range(3)] for i in range(3)]


def _attention_loss(student: torch.nn.Module, teacher: torch.nn.Module, loss: Literal["mse", "kl"]) -> float:
    term = AttentionTerm(AttentionKDConfig(loss=loss), student, teacher)
    term.capturing = True
    with torch.no_grad():
        student(torch.tensor([X]))
        teacher(torch.tensor([X]))
        return float(term.loss())


def test_attention_losses_match_hand_computed_values() -> None:
    s = _maps([[0, 1]], 1.0)  # one head over both dims, q = k = I
    t = _maps([[0, 1]], 2.0)  # the teacher's q doubled: sharper maps
    student, teacher = _OneAttention(1, 1.0), _OneAttention(1, 2.0)
    mse = sum((s[i][j] - t[i][j]) ** 2 for i in range(3) for j in range(3)) / 9  # mean over all 9 entries
    assert _attention_loss(student, teacher, "mse") == pytest.approx(mse, rel=1e-5)
    # KL(teacher ‖ student) summed over the keys, averaged over the 3 query rows
    kl = sum(t[i][j] * math.log(t[i][j] / s[i][j]) for i in range(3) for j in range(3)) / 3
    reverse = sum(s[i][j] * math.log(s[i][j] / t[i][j]) for i in range(3) for j in range(3)) / 3
    assert abs(kl - reverse) > 1e-3 * kl  # the value pins the direction
    assert _attention_loss(student, teacher, "kl") == pytest.approx(kl, rel=1e-5)
    # a 2-head teacher (each head one dim) against the 1-head student: the teacher's maps averaged over heads
    two = _maps([[0], [1]], 1.0)
    mse2 = sum((s[i][j] - two[i][j]) ** 2 for i in range(3) for j in range(3)) / 9
    assert _attention_loss(student, _OneAttention(2, 1.0), "mse") == pytest.approx(mse2, rel=1e-5)
