"""Built-in architectures. Each builder takes ``input_shape`` and ``num_classes`` plus its own options,
and every option is recorded in the model's spec so a saved model can be rebuilt exactly."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from slimtune._registry import Registry
from slimtune.errors import ConfigError

Builder = Callable[..., nn.Module]
MODELS: Registry[Builder] = Registry("model")


def _prod(shape: Sequence[int]) -> int:
    return int(math.prod(shape)) if shape else 1


class MLP(nn.Module):
    """Fully connected classifier: flatten → [Linear → ReLU → Dropout]* → Linear."""

    def __init__(self, in_features: int, num_classes: int, hidden: Sequence[int], dropout: float) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@MODELS.register("mlp", help="fully connected net; options: hidden (list of widths), dropout")
def mlp(
    *, input_shape: Sequence[int], num_classes: int, hidden: Sequence[int] = (256, 256), dropout: float = 0.0
) -> nn.Module:
    if not hidden or any(h <= 0 for h in hidden):
        raise ConfigError(f"mlp: hidden must be a non-empty list of positive widths, got {list(hidden)}")
    return MLP(_prod(input_shape), num_classes, tuple(hidden), dropout)


@MODELS.register("lenet-300-100", help="LeNet-300-100 (MLP 300-100), the Deep Compression benchmark")
def lenet_300_100(*, input_shape: Sequence[int], num_classes: int) -> nn.Module:
    return MLP(_prod(input_shape), num_classes, (300, 100), 0.0)


def _image_shape(name: str, input_shape: Sequence[int]) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise ConfigError(f"{name} needs image inputs shaped (channels, height, width); got {tuple(input_shape)}")
    c, h, w = (int(s) for s in input_shape)
    return c, h, w


class LeNet5(nn.Module):
    def __init__(self, channels: int, size: int, num_classes: int) -> None:
        super().__init__()
        pad2 = 2 if size < 16 else 0  # keep 8x8 inputs (digits) alive through the second conv
        self.features = nn.Sequential(
            nn.Conv2d(channels, 6, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5, padding=pad2),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        with torch.no_grad():
            flat = self.features(torch.zeros(1, channels, size, size)).numel()
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(flat, 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@MODELS.register("lenet5", help="LeNet-5 CNN (two conv + three linear layers)")
def lenet5(*, input_shape: Sequence[int], num_classes: int) -> nn.Module:
    c, h, w = _image_shape("lenet5", input_shape)
    return LeNet5(c, min(h, w), num_classes)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.downsample: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.downsample(x))


class ResNetSmall(nn.Module):
    def __init__(self, channels: int, num_classes: int, widths: Sequence[int], blocks: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(channels, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU()
        )
        stages: list[nn.Module] = []
        cin = widths[0]
        for i, w in enumerate(widths):
            for b in range(blocks):
                stages.append(BasicBlock(cin, w, 2 if (i > 0 and b == 0) else 1))
                cin = w
        self.layers = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.layers(self.stem(x))), 1))


@MODELS.register("resnet-small", help="small ResNet with BatchNorm; options: widths, blocks (per stage)")
def resnet_small(
    *, input_shape: Sequence[int], num_classes: int, widths: Sequence[int] = (16, 32, 64), blocks: int = 1
) -> nn.Module:
    c, _, _ = _image_shape("resnet-small", input_shape)
    if not widths or blocks < 1:
        raise ConfigError("resnet-small: widths must be non-empty and blocks >= 1")
    return ResNetSmall(c, num_classes, tuple(widths), blocks)


def build(name: str, *, input_shape: Sequence[int], num_classes: int, **options: Any) -> nn.Module:
    """Build a registered architecture and attach its spec (``model.slimtune_spec``)."""
    builder = MODELS.get(name)
    try:
        model = builder(input_shape=tuple(input_shape), num_classes=num_classes, **options)
    except TypeError as exc:
        raise ConfigError(f"model '{name}': {exc}".replace(f"{builder.__name__}() ", "")) from None
    model.slimtune_spec = {  # type: ignore[assignment]
        "arch": name,
        "input_shape": list(input_shape),
        "num_classes": num_classes,
        "options": {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()},
    }
    return model
