from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from slimtune.data import DataSplits
from slimtune.errors import ConfigError, UnsupportedModelError
from slimtune.models import build, load_model, save_model
from slimtune.testing.tiny import TINY, tiny
from slimtune.train import Callback, LoopState, TrainConfig, fit, predict
from slimtune.transfer import (
    FinetuneConfig,
    anatomy,
    depth_param_groups,
    finetune_,
    freeze_,
    head_of,
    num_classes_of,
    replace_head_,
)


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _changed(before: dict[str, torch.Tensor], model: nn.Module) -> set[str]:
    return {k for k, v in model.state_dict().items() if not torch.equal(before[k], v)}


def _accuracy(model: nn.Module, data: DataSplits) -> float:
    assert isinstance(data.test.x, torch.Tensor)
    return float((predict(model, data.test.x).argmax(1) == data.test.y).float().mean())


@pytest.mark.parametrize("name", [*TINY, "efficientnet-lite0"])
def test_replace_head_for_every_architecture_saves_and_reloads(name: str, tmp_path: Path) -> None:
    if name == "efficientnet-lite0":
        pytest.importorskip("efficientnet_lite_pytorch")
        data = tiny("mlp")[1]
        model = build(name, input_shape=(1, 16, 16), num_classes=4, pretrained=False)
        x = torch.rand(3, 1, 16, 16)
    else:
        model, data = tiny(name)
        assert isinstance(data.test.x, torch.Tensor)
        x = data.test.x[:3]
    new = replace_head_(model, 7, label_names=[f"c{i}" for i in range(7)])
    assert head_of(model) is new and num_classes_of(model) == 7
    model.eval()
    out = model(x)
    assert out.shape == (3, 7)
    again = load_model(save_model(model, tmp_path / "m"))
    torch.testing.assert_close(again.eval()(x), out)


def test_unknown_architecture_is_unsupported() -> None:
    with pytest.raises(UnsupportedModelError, match="register_anatomy"):
        replace_head_(nn.Sequential(nn.Linear(4, 3)), 2)


@pytest.mark.parametrize("name", list(TINY))
def test_linear_probe_and_last_k_blocks(name: str) -> None:
    model, _ = tiny(name)
    anat = anatomy(model)
    head = {id(p) for p in anat.head_params(model)}
    freeze_(model, "linear-probe")
    assert {id(p) for p in model.parameters() if p.requires_grad} == head
    freeze_(model, "all-but-last-1")
    last = {id(p) for p in anat.block_params(model)[-1]}
    assert {id(p) for p in model.parameters() if p.requires_grad} == head | last
    freeze_(model, "all-but-last-99")  # more blocks than there are: everything trains
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize(("name", "optimizer"), [("mlp", "adamw"), ("resnet-small", "sgd")])
def test_frozen_parameters_and_norm_statistics_stay_bit_identical(name: str, optimizer: str) -> None:
    model, data = tiny(name)
    before = _snapshot(model)
    train = TrainConfig(epochs=2, batch_size=16, lr=1e-2, weight_decay=0.1, optimizer=optimizer)  # type: ignore[arg-type]
    finetune_(model, data, FinetuneConfig(freeze="all-but-last-1", train=train))
    anat = anatomy(model)
    trained = [anat.head, *anat.blocks[-1]]
    changed = _changed(before, model)
    assert changed and all(any(k.startswith(t + ".") for t in trained) for k in changed), changed
    assert any(k.startswith(anat.head + ".") for k in changed)
    assert all(p.requires_grad for p in model.parameters())  # the stage's freezing is undone afterwards


def test_gradual_unfreezing_adds_one_block_per_epoch(digits: DataSplits) -> None:
    model = build("mlp", input_shape=digits.input_shape, num_classes=10, hidden=[32, 16])
    seen: list[list[bool]] = []

    class Watch(Callback):
        def on_step_end(self, state: LoopState) -> None:
            if state.step == 1:
                seen.append([p.requires_grad for p in state.model.parameters()])

    before = _snapshot(model)
    train = TrainConfig(epochs=3, batch_size=64, weight_decay=0.1, restore_best=False)
    cfg = FinetuneConfig(freeze="gradual", train=train)
    finetune_(model, digits, cfg, callbacks=[Watch()])
    # parameters: net.1 w/b, net.3 w/b, net.5 (head) w/b
    assert seen == [[False] * 4 + [True] * 2, [False] * 2 + [True] * 4, [True] * 6]
    assert _changed(before, model) == set(before)  # all trained in the end

    model = build("mlp", input_shape=digits.input_shape, num_classes=10, hidden=[32, 16])
    before = _snapshot(model)
    cfg = FinetuneConfig(freeze="gradual", unfreeze_every=2, train=TrainConfig(epochs=2, restore_best=False))
    finetune_(model, digits, cfg)
    assert _changed(before, model) == {"net.5.weight", "net.5.bias"}  # first block still frozen in epoch 2


def test_discriminative_learning_rates_decay_with_depth() -> None:
    model, data = tiny("transformer-small")
    groups = depth_param_groups(model, lr_decay=0.5)
    assert [g["lr_scale"] for g in groups] == [1.0, 0.5, 0.25, 0.125]  # head, layer 1, layer 0, embeddings
    lrs: list[float] = []

    class Lr(Callback):
        def on_fit_start(self, state: LoopState) -> None:
            lrs.extend(g["lr"] for g in state.optimizer.param_groups)

    cfg = FinetuneConfig(freeze="all-but-last-1", lr_decay=0.5, train=TrainConfig(epochs=1, lr=0.01))
    finetune_(model, data, cfg, callbacks=[Lr()])
    assert lrs == [0.01, 0.005]  # frozen blocks are not in the optimizer at all


def test_nothing_to_train_is_one_config_error() -> None:
    model, data = tiny("mlp")
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(ConfigError, match="nothing to train"):
        finetune_(model, data, FinetuneConfig(train=TrainConfig(epochs=1)))
    with pytest.raises(ConfigError, match="nothing to train"):
        fit(model, data, config=TrainConfig(epochs=1), param_groups=[{"params": list(model.parameters())}])


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"freeze": "all-but-2"}, "not a freeze policy"),
        ({"lr_decay": 0}, r"lr_decay must be in \(0, 1\]"),
        ({"freez": "none"}, "unknown key 'freez'"),
        ({"freeze": "linear-probe", "lora": {}}, "with lora"),
        ({"lora": {"rank": 4}}, "unknown key 'rank'"),
    ],
)
def test_bad_finetune_configs(raw: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        FinetuneConfig.from_dict(raw)


def test_transfer_to_a_new_label_set_with_a_linear_probe(digits: DataSplits) -> None:
    # pretrain on "digit < 5" (2 classes), then probe the frozen features for the 10 digits
    source = DataSplits(**{**digits.__dict__, "num_classes": 2, "label_names": ["low", "high"]})
    for split in ("train", "val", "test"):
        old = getattr(digits, split)
        setattr(source, split, type(old)(old.x, (old.y >= 5).long()))
    model = build("mlp", input_shape=digits.input_shape, num_classes=2, hidden=[64])
    fit(model, source, config=TrainConfig(epochs=10, lr=1e-2))
    hidden = _snapshot(model)["net.1.weight"]
    result = finetune_(model, digits, FinetuneConfig(freeze="linear-probe", train=TrainConfig(epochs=15, lr=2e-2)))
    assert num_classes_of(model) == 10 and model.slimtune_spec["num_classes"] == 10
    assert torch.equal(model.state_dict()["net.1.weight"], hidden)
    assert _accuracy(model, digits) > 0.75 and result.best_val_accuracy > 0.75


def test_gradual_finetune_resumes_exactly_after_a_crash(digits: DataSplits, tmp_path: Path) -> None:
    class Crash(Callback):
        def on_epoch_end(self, state: LoopState) -> None:
            if state.epoch == 1:
                raise RuntimeError("killed")

    def fresh() -> nn.Module:
        torch.manual_seed(0)
        return build("mlp", input_shape=digits.input_shape, num_classes=10, hidden=[32, 16], dropout=0.1)

    train = TrainConfig(epochs=3, batch_size=64, weight_decay=0.01, seed=1, restore_best=False)
    cfg = FinetuneConfig(freeze="gradual", lr_decay=0.5, train=train)
    whole = fresh()
    finetune_(whole, digits, cfg)
    with pytest.raises(RuntimeError, match="killed"):
        finetune_(fresh(), digits, cfg, callbacks=[Crash()], checkpoint_dir=tmp_path)
    resumed = fresh()
    finetune_(resumed, digits, cfg, checkpoint_dir=tmp_path, resume=True)
    assert _changed(_snapshot(whole), resumed) == set()


def test_efficientnet_blocks_are_stages() -> None:
    pytest.importorskip("efficientnet_lite_pytorch")
    model = build("efficientnet-lite0", input_shape=(3, 16, 16), num_classes=3, pretrained=False)
    anat = anatomy(model)
    assert anat.head == "net._fc" and len(anat.blocks) == 8  # stem + 7 stages (the head conv joins the last)
    freeze_(model, "linear-probe")
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["net._fc.weight", "net._fc.bias"]
