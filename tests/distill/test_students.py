"""Students cut from their teacher: output shape kept, weights copied, saved and reloaded exactly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from slimtune.distill import AttentionKDConfig, StudentConfig, distill_, student_from_teacher
from slimtune.errors import ConfigError, UnsupportedModelError
from slimtune.models import build, load_model, save_model
from slimtune.recipe.stages import Context, DistillStage
from slimtune.testing.tiny import tiny
from slimtune.train import TrainConfig, predict


def _deep(arch: str) -> tuple[torch.nn.Module, torch.Tensor]:
    """A 4-layer tiny transformer / BERT teacher and its inputs."""
    if arch == "tiny-bert":
        pytest.importorskip("transformers")
        from transformers import BertConfig

        from slimtune.models.hf import from_spec

        cfg = BertConfig(  # type: ignore[call-arg]
            vocab_size=60, hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=32, num_labels=2, pad_token_id=0,
        )  # fmt: skip
        model: torch.nn.Module = from_spec({"hf_config": cfg.to_dict(), "input_shape": [12], "options": {"pad_id": 0}})
        _, data = tiny("tiny-bert")
    else:
        _, data = tiny("transformer-small")
        model = build("transformer-small", input_shape=(12,), num_classes=2, vocab_size=60, dim=32, layers=4, ffn=64)
    assert isinstance(data.test.x, torch.Tensor)
    return model, data.test.x


@pytest.mark.parametrize("arch", ["transformer-small", "tiny-bert"])
def test_encoder_student_keeps_chosen_layers(arch: str, tmp_path: Path) -> None:
    teacher, x = _deep(arch)
    for p in teacher.parameters():
        p.requires_grad_(False)  # a frozen teacher still gives a trainable student
    student = student_from_teacher(teacher, layers=[0, 2])
    t_state, s_state = teacher.state_dict(), student.state_dict()
    layer = "model.bert.encoder.layer" if arch == "tiny-bert" else "layers"
    for s_i, t_i in ((0, 0), (1, 2)):
        keys = [k for k in s_state if k.startswith(f"{layer}.{s_i}.")]
        assert keys
        for k in keys:
            assert torch.equal(s_state[k], t_state[k.replace(f"{layer}.{s_i}.", f"{layer}.{t_i}.")])
    assert not any(k.startswith(f"{layer}.2.") for k in s_state)
    shared = [k for k in s_state if not k.startswith(f"{layer}.")]  # embeddings, norm, pooler, head
    assert shared and all(torch.equal(s_state[k], t_state[k]) for k in shared)
    assert predict(student, x).shape == predict(teacher, x).shape
    assert all(p.requires_grad for p in student.parameters()) and student.training
    assert sum(p.numel() for p in student.parameters()) < sum(p.numel() for p in teacher.parameters())
    again = load_model(save_model(student, tmp_path / "s"))
    torch.testing.assert_close(predict(again, x), predict(student, x))
    assert len(student_from_teacher(teacher, keep_every=2).state_dict()) == len(s_state)


def _kept(student_units: torch.Tensor, teacher_units: torch.Tensor) -> list[int]:
    """For each student unit (row of the first dim), the teacher unit equal to it; increasing and unique."""
    kept = [next(j for j, t in enumerate(teacher_units) if torch.equal(s, t)) for s in student_units]
    assert kept == sorted(set(kept))
    return kept


def _layer_tensors(model: Any, i: int, heads: int) -> dict[str, torch.Tensor]:
    """Layer ``i``'s q/k/v rows and attention-output columns per head, FFN-in rows and FFN-out columns per unit."""
    if hasattr(model, "layers"):
        layer = model.layers[i]
        q, k, v, o = layer.attn.q, layer.attn.k, layer.attn.v, layer.attn.o
        f_in, f_out = layer.ffn[0], layer.ffn[2]
    else:
        layer = model.model.bert.encoder.layer[i]
        a = layer.attention
        q, k, v, o = a.self.query, a.self.key, a.self.value, a.output.dense
        f_in, f_out = layer.intermediate.dense, layer.output.dense
    per_head = {
        f"{n}.{p}": getattr(m, p).detach().reshape(heads, -1)
        for n, m in zip("qkv", (q, k, v))
        for p in ("weight", "bias")
    }
    return {
        **per_head,
        "o": o.weight.detach().T.reshape(heads, -1),
        "ffn_in": torch.cat([f_in.weight.detach(), f_in.bias.detach()[:, None]], 1),
        "ffn_out": f_out.weight.detach().T,
    }


@pytest.mark.parametrize("arch", ["transformer-small", "tiny-bert"])
def test_fewer_heads_and_narrower_ffn_keep_the_teachers_weights(arch: str, tmp_path: Path) -> None:
    teacher, x = _deep(arch)  # 4 layers, 4 heads of 8, FFN 64
    t_params = sum(p.numel() for p in teacher.parameters())
    layers_only = student_from_teacher(teacher, layers=[0, 2])
    student = student_from_teacher(teacher, layers=[0, 2], heads_ratio=0.5, ffn_ratio=0.25)
    assert sum(p.numel() for p in teacher.parameters()) == t_params  # the teacher is untouched
    assert sum(p.numel() for p in student.parameters()) < sum(p.numel() for p in layers_only.parameters())
    for s_i, t_i in ((0, 0), (1, 2)):
        s, t = _layer_tensors(student, s_i, 2), _layer_tensors(teacher, t_i, 4)
        heads = _kept(s["q.weight"], t["q.weight"])
        assert len(heads) == 2  # 4 heads, half removed
        for name in ("q.bias", "k.weight", "k.bias", "v.weight", "v.bias", "o"):
            assert torch.equal(s[name], t[name][heads]), name
        units = _kept(s["ffn_in"], t["ffn_in"])
        assert len(units) == 48  # 64 units, a quarter removed
        assert torch.equal(s["ffn_out"], t["ffn_out"][units])
    cut: Any = student
    if arch == "tiny-bert":
        attn = cut.model.bert.encoder.layer[1].attention.self
        assert (attn.num_attention_heads, attn.attention_head_size, attn.all_head_size) == (2, 8, 16)
    else:
        assert cut.layers[1].attn.heads == 2
    assert all(p.requires_grad for p in student.parameters()) and student.training
    assert predict(student, x).shape == predict(teacher, x).shape
    again = load_model(save_model(student, tmp_path / "s"))
    torch.testing.assert_close(predict(again, x), predict(student, x))


def test_fewer_heads_student_distils_from_a_recipe_and_with_attention_transfer(tmp_path: Path) -> None:
    teacher, _ = _deep("transformer-small")
    _, data = tiny("transformer-small")
    stage = DistillStage()
    raw = {"student": {"from_teacher": {"keep_every": 2, "heads_ratio": 0.5, "ffn_ratio": 0.5}}, "train": {"epochs": 1}}
    cfg = stage.parse(raw, where="distill")
    assert cfg.student.from_teacher == StudentConfig(keep_every=2, heads_ratio=0.5, ffn_ratio=0.5)
    out = stage.run(Context(data=data, model=teacher), cfg, tmp_path)
    cut: Any = out.model
    assert cut.layers[0].attn.heads == 2 and cut.layers[0].ffn[0].out_features == 32
    bert, _ = _deep("tiny-bert")
    student = student_from_teacher(bert, keep_every=2, heads_ratio=0.5)
    result = distill_(  # 2 student heads vs 4 teacher heads: the maps are averaged over heads
        student, teacher=bert, data=tiny("tiny-bert")[1], hints=[AttentionKDConfig()], train=TrainConfig(epochs=1)
    )
    assert len(result.history) == 1 and all(torch.isfinite(p).all() for p in student.parameters())


def test_mlp_student_copies_the_top_left_block(tmp_path: Path) -> None:
    teacher = build("lenet-300-100", input_shape=(1, 8, 8), num_classes=10)
    student = student_from_teacher(teacher, hidden=[30, 20])
    lin_s = [m for m in student.modules() if isinstance(m, torch.nn.Linear)]
    lin_t = [m for m in teacher.modules() if isinstance(m, torch.nn.Linear)]
    assert [m.weight.shape for m in lin_s] == [(30, 64), (20, 30), (10, 20)]
    for s, t in zip(lin_s, lin_t, strict=True):
        o, i = s.weight.shape
        assert torch.equal(s.weight, t.weight[:o, :i]) and torch.equal(s.bias, t.bias[:o])
    x = torch.rand(5, 1, 8, 8)
    assert predict(student, x).shape == (5, 10)
    again = load_model(save_model(student, tmp_path / "s"))
    torch.testing.assert_close(predict(again, x), predict(student, x))


def test_mlp_student_shallower_and_wider_than_teacher() -> None:
    teacher = build("mlp", input_shape=(6,), num_classes=3, hidden=[8, 4, 4], dropout=0.2)
    shallow = student_from_teacher(teacher, layers=[0, 2])  # widths 8, 4 (the teacher's)
    assert [m.out_features for m in shallow.modules() if isinstance(m, torch.nn.Linear)] == [8, 4, 3]
    assert any(isinstance(m, torch.nn.Dropout) for m in shallow.modules())
    wide = student_from_teacher(teacher, hidden=[12])  # wider than the teacher: the overlap is copied
    first = next(m for m in wide.modules() if isinstance(m, torch.nn.Linear))
    t_first = next(m for m in teacher.modules() if isinstance(m, torch.nn.Linear))
    assert torch.equal(first.weight[:8], t_first.weight)


def test_bad_requests_are_one_clear_line() -> None:
    teacher, _ = _deep("transformer-small")
    cases = [
        (lambda: student_from_teacher(teacher, layers=[0, 7]), ConfigError, "layer 7 is out of range.*4 encoder"),
        (lambda: student_from_teacher(teacher, hidden=[8]), ConfigError, "hidden applies to MLP"),
        (lambda: StudentConfig(layers=(2, 1)), ConfigError, "increasing"),
        (lambda: StudentConfig(layers=(0,), keep_every=2), ConfigError, "not both"),
        (lambda: StudentConfig(), ConfigError, "say what to keep"),
        (lambda: StudentConfig(heads_ratio=1.0), ConfigError, r"heads_ratio is the fraction removed, in \[0, 1\)"),
        (lambda: StudentConfig(layers=(0,), ffn_ratio=-0.1), ConfigError, "ffn_ratio is the fraction removed"),
        (
            lambda: student_from_teacher(build("mlp", input_shape=(6,), num_classes=3, hidden=[8]), heads_ratio=0.5),
            ConfigError,
            "heads_ratio and ffn_ratio apply to transformer teachers",
        ),
        (
            lambda: student_from_teacher(build("lenet5", input_shape=(1, 8, 8), num_classes=10), keep_every=2),
            UnsupportedModelError,
            "build the student by name",
        ),
    ]
    for make, error, message in cases:
        with pytest.raises(error, match=message) as info:
            make()
        assert "\n" not in str(info.value)
