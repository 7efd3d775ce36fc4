from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from slimtune.errors import ConfigError, MissingDependencyError
from slimtune.models import load_model, save_model
from slimtune.testing.tiny import tiny
from slimtune.train import TrainConfig
from slimtune.transfer import FinetuneConfig, LoRAConfig, add_lora_, finetune_, has_lora, merge_lora_

pytest.importorskip("peft")

TRAIN = TrainConfig(epochs=2, batch_size=16, lr=2e-2, weight_decay=0.05)


@pytest.mark.parametrize(
    ("name", "targets"),
    [("transformer-small", 4), ("tiny-bert", 4), ("mlp", 2)],  # q/v of 2 layers; query/value; hidden Linears
)
def test_only_adapters_and_head_train_and_merge_matches(name: str, targets: int, tmp_path: Path) -> None:
    model, data = tiny(name)
    assert isinstance(data.test.x, torch.Tensor)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = FinetuneConfig(lora=LoRAConfig(r=4, alpha=8, merge=False), train=TRAIN)
    finetune_(model, data, cfg)
    assert has_lora(model)
    state = model.state_dict()
    lora = {k for k in state if "lora_" in k}
    assert len(lora) == 2 * targets
    head = "model.classifier" if name == "tiny-bert" else ("head" if name == "transformer-small" else "net.5")
    for key, value in state.items():
        plain = key.replace(".base_layer", "")
        if key in lora or plain.startswith(head + "."):
            continue
        assert torch.equal(value, before[plain]), f"{key} changed but is frozen"
    assert any(not torch.equal(state[k], before[k]) for k in (f"{head}.weight",))
    assert any(state[k].abs().sum() > 0 for k in lora if "lora_B" in k)  # the adapters trained

    model.eval()
    x = data.test.x
    with torch.no_grad():
        adapted = model(x)
        assert merge_lora_(model) == targets
        merged = model(x)
    torch.testing.assert_close(merged, adapted, atol=1e-5, rtol=0)
    assert not has_lora(model) and set(model.state_dict()) == set(before)
    again = load_model(save_model(model, tmp_path / "merged")).eval()  # an ordinary model: its spec rebuilds it
    with torch.no_grad():
        torch.testing.assert_close(again(x), merged)


def test_finetune_merges_by_default() -> None:
    model, data = tiny("transformer-small")
    finetune_(model, data, FinetuneConfig(lora=LoRAConfig(r=2), train=TrainConfig(epochs=1)))
    assert not has_lora(model) and type(model.get_submodule("layers.0.attn.q")) is nn.Linear
    assert all(p.requires_grad for p in model.parameters())


def test_bad_targets_and_double_injection() -> None:
    model, _ = tiny("resnet-small")
    with pytest.raises(ConfigError, match="match no Linear/Conv2d layer"):
        add_lora_(model)  # no Linear in a ResNet trunk: name the convolutions
    assert add_lora_(model, LoRAConfig(target_modules=("conv2",))) == ["layers.0.conv2", "layers.1.conv2"]
    with pytest.raises(ConfigError, match="already has LoRA adapters"):
        add_lora_(model)
    model, _ = tiny("mlp")
    with pytest.raises(ConfigError, match="match no"):
        add_lora_(model, LoRAConfig(target_modules=("net.5",)))  # the head is never adapted


def test_missing_peft_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "peft", None)  # import peft → ImportError
    model, _ = tiny("mlp")
    with pytest.raises(MissingDependencyError, match=r"slimtune\[lora\]"):
        add_lora_(model)
