"""Causal-LM distillation: token KL (forward/reverse, top-k support), KD beats plain CE at matching the
teacher, the top-k teacher-logit cache (round trip on disk, teacher never called when cached), hidden-state
hints with a learned projection, the recipe-facing config conversions."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from slimtune.data import DataSplits
from slimtune.distill import (
    HiddenKDConfig,
    KDConfig,
    LMDistillationTask,
    LMKDConfig,
    LMTeacherCache,
    distill_,
    teacher_kl,
    token_kl,
    topk_kl,
)
from slimtune.distill.lm import as_lm_config
from slimtune.errors import ConfigError
from slimtune.testing.tiny_lm import markov_lm_data, tiny_llama
from slimtune.train import TrainConfig, fit
from slimtune.train.lm import IGNORE_INDEX


@pytest.fixture(scope="module")
def markov() -> DataSplits:
    return markov_lm_data(vocab=32, length=16, train=256, val=64, test=64, seed=3)


@pytest.fixture(scope="module")
def teacher(markov: DataSplits) -> torch.nn.Module:
    model = tiny_llama(tied=False, init=0.02, vocab=32, hidden=64, layers=2, seed=0)
    fit(model, markov, config=TrainConfig(epochs=4, batch_size=16, lr=3e-3))
    return model.eval()


def _student(seed: int = 1) -> torch.nn.Module:
    return tiny_llama(tied=False, init=0.02, vocab=32, hidden=32, layers=1, heads=2, kv_heads=1, seed=seed)


def test_token_kl_by_hand_and_topk_with_full_support_is_forward_kl() -> None:
    torch.manual_seed(0)
    s, t = torch.randn(2, 5, 6), torch.randn(2, 5, 6)
    y = torch.randint(6, (2, 5))
    y[1, 3] = IGNORE_INDEX  # position 2 of window 1 predicts nothing
    keep = [(b, i) for b in range(2) for i in range(4) if y[b, i + 1] != IGNORE_INDEX]
    fwd = torch.stack([F.kl_div(F.log_softmax(s[b, i] / 2, -1), F.log_softmax(t[b, i] / 2, -1), log_target=True,
                                reduction="sum") for b, i in keep]).mean() * 4  # fmt: skip
    assert torch.allclose(token_kl(s, t, y, temperature=2.0), fwd, atol=1e-6)
    rev = torch.stack([F.kl_div(F.log_softmax(t[b, i], -1), F.log_softmax(s[b, i], -1), log_target=True,
                                reduction="sum") for b, i in keep]).mean()  # fmt: skip
    assert torch.allclose(token_kl(s, t, y, direction="reverse"), rev, atol=1e-6)
    values, indices = t.topk(6, dim=-1)
    assert torch.allclose(topk_kl(s, values, indices, y, temperature=2.0), fwd, atol=1e-5)
    v2, i2 = t.topk(2, dim=-1)
    assert topk_kl(s, v2, i2, y) >= 0
    assert topk_kl(t, v2, i2, y) > 1e-3  # renormalised: the teacher itself puts mass off its top 2, so it is no match
    # with the teacher's log-probabilities the mass off the top k is one more bucket: exact KL at full support,
    # zero for a student equal to the teacher at any k, and positive otherwise
    logp = t.log_softmax(-1)
    full_v, full_i = logp.topk(6, dim=-1)
    one = torch.stack([F.kl_div(F.log_softmax(s[b, i], -1), logp[b, i], log_target=True, reduction="sum")
                       for b, i in keep]).mean()  # fmt: skip
    assert torch.allclose(topk_kl(s, full_v, full_i, y, rest=True), one, atol=1e-5)
    lv2, li2 = logp.topk(2, dim=-1)
    assert topk_kl(t, lv2, li2, y, rest=True).abs() < 1e-5
    assert topk_kl(s, lv2, li2, y, rest=True) > 1e-3


def test_kd_matches_the_teacher_better_than_plain_ce(markov: DataSplits, teacher: torch.nn.Module) -> None:
    train = TrainConfig(epochs=3, batch_size=16, lr=3e-3, restore_best=False)
    plain = _student()
    fit(plain, markov, config=train)  # next-token CE only
    kd = _student()
    distill_(kd, teacher=teacher, data=markov, config=LMKDConfig(alpha=0.0, temperature=1.0), train=train)
    kl_plain, kl_kd = teacher_kl(plain, teacher, markov.val), teacher_kl(kd, teacher, markov.val)
    print(f"KL to teacher: plain CE {kl_plain:.4f}, KD {kl_kd:.4f}")
    assert kl_kd < 0.8 * kl_plain, (kl_kd, kl_plain)
    assert all(p.requires_grad for p in teacher.parameters())  # frozen for the run only: flags restored


def test_cache_round_trip_and_reuse(markov: DataSplits, teacher: torch.nn.Module, tmp_path) -> None:
    path = tmp_path / "topk.safetensors"
    cache = LMTeacherCache.build(teacher, markov.train.x, top_k=5, path=path)
    with torch.no_grad():
        logits = teacher(markov.train.x[:3]).logits
    assert torch.allclose(cache.values[:3], logits.log_softmax(-1).topk(5, dim=-1).values, atol=1e-5)
    assert torch.equal(cache.indices[:3], logits.topk(5, dim=-1).indices)
    loaded = LMTeacherCache.load(path)
    assert loaded.digests == cache.digests and loaded.teacher_fingerprint == cache.teacher_fingerprint
    assert cache.logprobs and loaded.logprobs
    assert torch.equal(loaded.values, cache.values) and torch.equal(loaded.indices, cache.indices)
    calls: list[int] = []
    handle = teacher.register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        again = LMTeacherCache.build(teacher, markov.train.x, top_k=3, path=path)  # from disk, fewer k
    finally:
        handle.remove()
    assert not calls and again.top_k == 3 and torch.equal(again.indices, cache.indices[..., :3])
    assert b"pickle" not in path.read_bytes()[:64] and path.read_bytes()[8:9] == b"{"  # safetensors header


def test_a_cache_of_raw_logits_is_recomputed(markov: DataSplits, teacher: torch.nn.Module, tmp_path) -> None:
    """Caches written before the values became log-probabilities hold raw logits: build() does not reuse them."""
    path = tmp_path / "old.safetensors"
    x = markov.train.x[:4]
    built = LMTeacherCache.build(teacher, x, top_k=4)
    with torch.no_grad():
        raw = teacher(x).logits.topk(4, dim=-1).values
    LMTeacherCache(built.digests, raw, built.indices, teacher_fingerprint=built.teacher_fingerprint,
                   logprobs=False).save(path)  # fmt: skip
    assert not LMTeacherCache.load(path).logprobs
    again = LMTeacherCache.build(teacher, x, top_k=4, path=path)
    assert again.logprobs and torch.allclose(again.values, built.values) and LMTeacherCache.load(path).logprobs


def test_cached_distillation_never_calls_the_teacher(markov: DataSplits, teacher: torch.nn.Module) -> None:
    cache = LMTeacherCache.build(teacher, markov.train.x, top_k=8)

    def refuse(*args: object) -> None:
        raise AssertionError("the teacher ran although every window is cached")

    student = _student(seed=2)
    before = teacher_kl(student, teacher, markov.val)
    handle = teacher.register_forward_pre_hook(refuse)
    try:
        distill_(student, teacher=teacher, data=markov, config=LMKDConfig(alpha=0.0, top_k=8), cache=cache,
                 train=TrainConfig(epochs=2, batch_size=16, lr=3e-3))  # fmt: skip
    finally:
        handle.remove()
    assert cache.misses == 0 and cache.hits == 2 * len(markov.train)
    assert teacher_kl(student, teacher, markov.val) < 0.5 * before


def test_reverse_kl_refuses_a_topk_cache(teacher: torch.nn.Module, markov: DataSplits) -> None:
    cache = LMTeacherCache.build(teacher, markov.train.x[:4], top_k=4)
    with pytest.raises(ConfigError, match="reverse KL needs the teacher's full distribution"):
        LMDistillationTask(teacher, LMKDConfig(direction="reverse"), cache=cache)


def test_reverse_kl_trains(markov: DataSplits, teacher: torch.nn.Module) -> None:
    student = _student(seed=4)
    before = teacher_kl(student, teacher, markov.val)
    distill_(student, teacher=teacher, data=markov, config=LMKDConfig(alpha=0.0, direction="reverse"),
             train=TrainConfig(epochs=1, batch_size=16, lr=3e-3))  # fmt: skip
    assert teacher_kl(student, teacher, markov.val) < 0.7 * before


def test_hidden_hints_project_widths_and_leave_a_bare_student(markov: DataSplits, teacher: torch.nn.Module) -> None:
    student = _student(seed=5)
    keys = set(student.state_dict())
    task = LMDistillationTask(teacher, LMKDConfig(alpha=0.0), hints=(HiddenKDConfig(layers={0: -1}, weight=1.0),))
    batch = markov.train.x[:16]
    wrapped = task.wrap(student, batch[:4])
    term = wrapped.terms[0]
    assert isinstance(term.adapters[0], torch.nn.Linear) and term.adapters[0].weight.shape == (64, 32)

    def hint_loss() -> float:
        with torch.no_grad():
            task.loss(wrapped, batch, batch)
            return float(term.loss())

    before = hint_loss()
    fit(wrapped, markov, config=TrainConfig(epochs=2, batch_size=16, lr=3e-3), task=task)
    assert hint_loss() < 0.7 * before
    wrapped.unwrap()
    assert set(student.state_dict()) == keys  # no projection left in the student
    student2 = _student(seed=5)
    distill_(student2, teacher=teacher, data=markov, hints=[HiddenKDConfig(layers={0: 1})],
             train=TrainConfig(epochs=1, batch_size=32))  # fmt: skip
    assert set(student2.state_dict()) == keys and not student2._forward_hooks


def test_hint_layer_out_of_range_is_one_line(teacher: torch.nn.Module, markov: DataSplits) -> None:
    task = LMDistillationTask(teacher, hints=(HiddenKDConfig(layers={3: 0}),))
    with pytest.raises(ConfigError, match="the student has 1 decoder layers; layer 3 does not exist"):
        task.wrap(_student(), markov.train.x[:2])


def test_classifier_kd_configs_convert_for_lm_data() -> None:
    assert as_lm_config(KDConfig(temperature=2.0, alpha=0.3)) == LMKDConfig(temperature=2.0, alpha=0.3)
    assert as_lm_config(None) == LMKDConfig()
    with pytest.raises(ConfigError, match="alpha must be in"):
        LMKDConfig(alpha=2.0)


def test_recipe_stage_parses_lm_kd_hints_and_device(tmp_path) -> None:
    from slimtune.recipe.stages import DistillStage

    raw = {
        "student": {"name": "mlp"},
        "kd": {"method": "lm", "top_k": 8, "direction": "reverse"},
        "hints": [{"method": "hidden", "layers": {0: -1}, "loss": "cosine"}],
        "train": {"device": "cpu", "precision": "bf16", "grad_accum": 2, "gradient_checkpointing": True},
    }
    cfg = DistillStage().parse(raw, where="stages[1]")
    assert cfg.kd == LMKDConfig(top_k=8, direction="reverse")
    assert cfg.hints == (HiddenKDConfig(layers={0: -1}, loss="cosine"),)
    assert (cfg.train.precision, cfg.train.grad_accum, cfg.train.gradient_checkpointing) == ("bf16", 2, True)
    with pytest.raises(ConfigError, match="hidden: layers must map layer indices"):
        DistillStage().parse({"student": {"name": "mlp"}, "hints": [{"method": "hidden", "layers": {"a": 1}}]},
                             where="stages[1]")  # fmt: skip


def test_reverse_kl_with_the_recipe_default_cache_runs_the_teacher_live(markov: DataSplits, teacher, tmp_path) -> None:
    path = tmp_path / "teacher_logits.safetensors"
    distill_(_student(seed=6), teacher=teacher, data=markov, config=LMKDConfig(direction="reverse"), cache=path,
             train=TrainConfig(epochs=1, batch_size=64))  # fmt: skip
    assert not path.exists()
