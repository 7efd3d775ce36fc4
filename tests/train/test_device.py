"""Device and precision for every training stage: device strings, CUDA asked for without one, bf16 and
fp16 autocast on the CPU (fp16 with a GradScaler), exact resume of the loss scale."""

from __future__ import annotations

import pytest
import torch

from slimtune.data import DataSplits
from slimtune.errors import ConfigError
from slimtune.models import build
from slimtune.testing.tiny_lm import markov_lm_data, tiny_llama
from slimtune.train import ClassificationTask, TrainConfig, fit
from slimtune.train.device import resolve_device
from slimtune.train.lm import CausalLMTask, evaluate_lm
from slimtune.train.sources import evaluate_split


def _mlp(data: DataSplits) -> torch.nn.Module:
    torch.manual_seed(0)
    return build("mlp", input_shape=data.input_shape, num_classes=10, hidden=[32])


@pytest.mark.parametrize("spec", ["gpu", "cuda:x", "CPU", "cuda0", ""])
def test_bad_device_strings_are_one_line(spec: str) -> None:
    with pytest.raises(ConfigError, match="device must be auto, cpu, cuda or cuda:N") as err:
        TrainConfig(device=spec)
    assert "\n" not in str(err.value)


def test_cuda_without_a_gpu_is_one_line(monkeypatch: pytest.MonkeyPatch, digits: DataSplits) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    for spec in ("cuda", "cuda:1"):
        with pytest.raises(ConfigError, match=f"device: {spec} but this machine has no CUDA GPU") as err:
            resolve_device(spec)
        assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="no CUDA GPU"):  # refused with the config, before any training
        TrainConfig(epochs=1, device="cuda")


def test_bad_precision_is_one_line() -> None:
    with pytest.raises(ConfigError, match="precision must be one of fp32, bf16, fp16"):
        TrainConfig(precision="int8")  # type: ignore[arg-type]


class _RecordsDtype(ClassificationTask):
    def __init__(self) -> None:
        super().__init__()
        self.dtypes: set[torch.dtype] = set()

    def loss(self, model, x, y):
        loss, logits = super().loss(model, x, y)
        self.dtypes.add(logits.dtype)
        return loss, logits


@pytest.mark.parametrize(("precision", "dtype"), [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_half_precision_trains_a_classifier_on_cpu(digits: DataSplits, precision: str, dtype: torch.dtype) -> None:
    model = _mlp(digits)
    task = _RecordsDtype()
    before, _ = evaluate_split(model, digits.val)
    fit(model, digits, config=TrainConfig(epochs=3, lr=1e-2, batch_size=32, precision=precision), task=task)  # type: ignore[arg-type]
    after, _ = evaluate_split(model, digits.val)
    assert task.dtypes == {dtype}  # the forward ran under autocast
    assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights stay fp32
    assert after > max(0.8, before + 0.5)


def test_fp16_uses_a_grad_scaler_and_resumes_its_scale(digits: DataSplits, tmp_path) -> None:
    model = _mlp(digits)
    cfg = TrainConfig(epochs=1, lr=1e-2, batch_size=32, precision="fp16")
    fit(model, digits, config=cfg, checkpoint_dir=tmp_path)
    saved = torch.load(tmp_path / "last.pt", weights_only=True)
    assert saved["scaler"] is not None and saved["scaler"]["scale"] > 0
    # resume one more epoch from the checkpoint: equals two epochs in one go
    two = TrainConfig(epochs=2, lr=1e-2, batch_size=32, precision="fp16")
    once, resumed = _mlp(digits), _mlp(digits)
    fit(once, digits, config=two)
    fit(resumed, digits, config=two, checkpoint_dir=tmp_path / "r")
    fit(resumed, digits, config=two, checkpoint_dir=tmp_path / "r", resume=True)
    for k, v in once.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k])
    assert all(p.dtype == torch.float32 for p in once.parameters())
    with pytest.raises(ConfigError, match="different training config"):
        fit(_mlp(digits), digits, config=TrainConfig(epochs=2, lr=1e-2, batch_size=32), checkpoint_dir=tmp_path / "r",
            resume=True)  # fmt: skip


def test_bf16_lm_training_on_cpu() -> None:
    data = markov_lm_data(vocab=32, length=16, train=128, val=32, test=32)
    model = tiny_llama(tied=False, init=0.02, vocab=32)
    before = evaluate_lm(model, data.val)["loss"]
    fit(model, data, config=TrainConfig(epochs=2, batch_size=16, lr=3e-3, precision="bf16"), task=CausalLMTask())
    assert evaluate_lm(model, data.val)["loss"] < before - 0.3
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_model_comes_back_on_its_device(digits: DataSplits) -> None:
    model = _mlp(digits)
    fit(model, digits, config=TrainConfig(epochs=1, device="cpu"))
    assert all(p.device.type == "cpu" for p in model.parameters())


def test_ranks_take_their_own_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert resolve_device("auto", distributed=True) == torch.device("cuda", 1)
    assert resolve_device("cuda", distributed=True) == torch.device("cuda", 1)
    assert resolve_device("cuda:0", distributed=True) == torch.device("cuda", 0)
    assert resolve_device("auto", distributed=False) == torch.device("cuda", 0)
    monkeypatch.setenv("LOCAL_RANK", "2")  # more ranks than GPUs
    assert resolve_device("auto", distributed=True) == torch.device("cpu")
    with pytest.raises(ConfigError, match="device: cuda:2 but this machine has 2 GPU"):
        resolve_device("cuda", distributed=True)


def test_multitask_batches_refuse_gradient_accumulation() -> None:
    from slimtune.train.multitask import MultiTaskLoss
    from slimtune.train.step import Amp, forward_backward

    task = MultiTaskLoss(names=["a"], losses=[torch.nn.functional.cross_entropy])
    x, y = torch.randn(4, 3), torch.zeros(4, 2, dtype=torch.long)
    with pytest.raises(ConfigError, match="MultiTaskLoss batches cannot be cut into micro-batches"):
        forward_backward(torch.nn.Linear(3, 2), task, x, y, amp=Amp(torch.device("cpu"), "fp32"), accum=2,
                         distributed=False)  # fmt: skip


def test_checkpoint_from_before_the_new_keys_resumes(digits: DataSplits, tmp_path) -> None:
    cfg = TrainConfig(epochs=2, lr=1e-2, batch_size=32)
    fit(_mlp(digits), digits, config=TrainConfig(epochs=1, lr=1e-2, batch_size=32), checkpoint_dir=tmp_path)
    saved = torch.load(tmp_path / "last.pt", weights_only=True)
    for key in ("grad_accum", "gradient_checkpointing", "device", "precision"):  # as an older slimtune wrote it
        del saved["config"][key]
    saved["config"]["epochs"] = 2
    del saved["scaler"]
    torch.save(saved, tmp_path / "last.pt")
    result = fit(_mlp(digits), digits, config=cfg, checkpoint_dir=tmp_path, resume=True)
    assert [h["epoch"] for h in result.history] == [1, 2]
    with pytest.raises(ConfigError, match="different training config"):
        fit(_mlp(digits), digits, config=TrainConfig(epochs=2, lr=1e-2, batch_size=32, precision="bf16"),
            checkpoint_dir=tmp_path, resume=True)  # fmt: skip
