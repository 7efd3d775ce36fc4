from __future__ import annotations

from pathlib import Path

import pytest
import torch

from slimtune.errors import ConfigError, DataError
from slimtune.models import MODELS, build, load_model, load_torch_checkpoint, save_model
from slimtune.models.hf import HF_NAMES
from slimtune.prune import MagnitudePruneConfig, prune_


def make(name: str) -> tuple[torch.nn.Module, torch.Tensor]:
    if name == "transformer-small":
        return build(name, input_shape=(12,), num_classes=3, vocab_size=50), torch.randint(0, 50, (4, 12))
    return build(name, input_shape=(1, 8, 8), num_classes=10), torch.rand(4, 1, 8, 8)


@pytest.mark.parametrize("name", [n for n in MODELS.names() if n not in HF_NAMES])  # HF: test_pretrained
def test_every_model_builds_saves_and_reloads_identically(name: str, tmp_path: Path) -> None:
    model, x = make(name)
    model.eval()
    y = model(x)
    assert y.shape[0] == 4
    save_model(model, tmp_path / "m")
    again = load_model(tmp_path / "m").eval()
    assert torch.equal(again(x), y)
    assert not any(p.suffix in {".pt", ".pkl", ".bin"} for p in (tmp_path / "m").iterdir())


def test_sparse_model_file_shrinks_and_reloads_exactly(tmp_path: Path) -> None:
    model, _ = make("mlp")
    save_model(model, tmp_path / "dense")
    prune_(model, MagnitudePruneConfig(sparsity=0.9))
    save_model(model, tmp_path / "sparse")
    dense_bytes = (tmp_path / "dense" / "model.safetensors").stat().st_size
    sparse_bytes = (tmp_path / "sparse" / "model.safetensors").stat().st_size
    assert sparse_bytes < 0.2 * dense_bytes
    again = load_model(tmp_path / "sparse")
    for (k, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), k


def test_torch_checkpoint_loads_with_weights_only(tmp_path: Path) -> None:
    model, x = make("lenet5")
    torch.save(model.state_dict(), tmp_path / "w.pt")
    other, _ = make("lenet5")
    load_torch_checkpoint(other, tmp_path / "w.pt")
    assert torch.equal(other.eval()(x), model.eval()(x))


def test_checkpoint_with_code_is_refused(tmp_path: Path) -> None:
    torch.save({"weights": Path("x")}, tmp_path / "evil.pt")  # arbitrary objects need pickle
    model, _ = make("mlp")
    with pytest.raises(DataError, match=r"refused .*holds Python objects besides tensors") as info:
        load_torch_checkpoint(model, tmp_path / "evil.pt")
    message = str(info.value)  # our own line, never torch's advice to retry with weights_only=False
    assert "\n" not in message and "weights_only" not in message and "state_dict" in message


def test_shape_mismatch_is_one_clear_line(tmp_path: Path) -> None:
    small = build("mlp", input_shape=(1, 8, 8), num_classes=10, hidden=[8])
    torch.save(small.state_dict(), tmp_path / "small.pt")
    big = build("mlp", input_shape=(1, 8, 8), num_classes=10, hidden=[16])
    with pytest.raises(DataError, match=r"shape mismatch for 'net.1.weight'.*\(8, 64\).*\(16, 64\)"):
        load_torch_checkpoint(big, tmp_path / "small.pt")


def test_bad_model_options_are_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"unknown model 'resnet-smal'.*did you mean 'resnet-small'"):
        build("resnet-smal", input_shape=(1, 8, 8), num_classes=10)
    with pytest.raises(ConfigError, match="needs image inputs"):
        build("lenet5", input_shape=(64,), num_classes=10)
    with pytest.raises(ConfigError, match="unexpected keyword argument 'depth'"):
        build("mlp", input_shape=(1, 8, 8), num_classes=10, depth=3)


def test_missing_model_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a saved slimtune model folder"):
        load_model(tmp_path)
