"""fold_batchnorm_ folds Conv→BatchNorm pairs: same outputs, fewer modules, saves, reloads and exports."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from slimtune.data import DataSplits
from slimtune.export import export_onnx, ort_session
from slimtune.models import build, load_model, save_model
from slimtune.models.fuse import batchnorm_pairs, fold_batchnorm_
from slimtune.prune import prune_
from slimtune.prune.structured import StructuredPruneConfig
from slimtune.train import TrainConfig, fit


def _batchnorms(model: nn.Module) -> int:
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def test_trained_and_pruned_resnet_folds_to_the_same_outputs(digits: DataSplits, tmp_path: Path) -> None:
    model = build("resnet-small", input_shape=digits.input_shape, num_classes=10)
    fit(model, digits, config=TrainConfig(epochs=1, batch_size=64, lr=3e-3))  # real running statistics
    prune_(model, StructuredPruneConfig(target_macs=0.5, importance="l1", round_to=8), data=digits)
    model.eval()
    x = digits.test.x[:16]
    with torch.no_grad():
        expected = model(x)
    assert _batchnorms(model) == 9  # stem, 2 per block, 2 downsamples
    pairs = batchnorm_pairs(model)
    assert ("stem.0", "stem.1") in pairs and ("layers.1.downsample.0", "layers.1.downsample.1") in pairs
    fold_batchnorm_(model)
    assert _batchnorms(model) == 0 and not model.training
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected, rtol=1e-4, atol=1e-4)
    save_model(model, tmp_path / "folded")
    again = load_model(tmp_path / "folded").eval()
    with torch.no_grad():
        torch.testing.assert_close(again(x), expected, rtol=1e-4, atol=1e-4)
    session = ort_session(export_onnx(again, x[:1], tmp_path / "folded.onnx"))
    out = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    torch.testing.assert_close(torch.from_numpy(out), expected, rtol=1e-3, atol=1e-3)


class Shared(nn.Module):
    """A convolution whose output also feeds the residual, and a BatchNorm run twice: neither may fold."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3)
        self.conv2, self.bn2 = nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        z = self.bn2(self.conv2(x))
        return self.bn(y) + y + self.bn2(z)


def test_only_single_use_pairs_fold() -> None:
    assert batchnorm_pairs(Shared()) == []


class Branchy(nn.Module):
    """Data-dependent control flow: fx cannot trace it, so only Sequential neighbours fold."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
        self.conv, self.bn = nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.body(x)
        return self.bn(self.conv(x)) if x.sum() > 0 else x


def test_untraceable_model_folds_sequential_neighbours_only() -> None:
    model = Branchy()
    for bn in (model.body[1], model.bn):
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    model.eval()
    x = torch.rand(2, 1, 8, 8)
    expected = model(x)
    assert batchnorm_pairs(model) == [("body.0", "body.1")]
    fold_batchnorm_(model)
    assert isinstance(model.body[1], nn.Identity) and isinstance(model.bn, nn.BatchNorm2d)
    torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)
