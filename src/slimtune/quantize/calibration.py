"""Calibration: feed representative inputs through a model whose layers carry ``FakeQuantize`` modules.

layers = quantize_layers(model)                     # Linear/Conv → QuantizedLayer (8-bit by default)
calibrate(model, CalibrationDataset(data.calibration(256)))
predict(model, data.test.x)                         # now simulates int8 weights and activations
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence, Sized
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from slimtune.config import check
from slimtune.data.core import Split
from slimtune.errors import ConfigError, DataError, UnsupportedModelError
from slimtune.quantize.affine import FakeQuantize, QuantSpec

EMPTY_SET = "empty calibration set: pass at least one example"
QUANTIZABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
FIRST, LAST = "<first>", "<last>"  # exclude tokens: the first/last quantizable layer in module order


class CalibrationDataset:
    """Batches of model inputs, NNCF-style: ``CalibrationDataset(source, transform)``.

    ``source`` is a tensor (N, ...) or a ``Split`` (cut into ``batch_size`` rows; labels are dropped),
    a list of tensors (each one batch), or any iterable of batches (e.g. a DataLoader; a one-shot
    iterator is read into memory once). ``transform`` maps each item to the model's input; without
    one, an item that is a tuple/list such as ``(x, y)`` gives its first element.
    """

    def __init__(self, source: Any, transform: Callable[[Any], Any] | None = None, *, batch_size: int = 32) -> None:
        check(batch_size >= 1, f"batch_size must be >= 1, got {batch_size}")
        self.transform, self.batch_size = transform, batch_size
        if isinstance(source, Split):
            source = source.x
        if not isinstance(source, (torch.Tensor, Sized)):
            source = list(source)
        texts = isinstance(source, list) and bool(source) and isinstance(source[0], str)
        if texts and transform is None:
            raise DataError("calibration on text needs a transform that encodes the strings into model inputs")
        self.source: Any = source
        self._rows = isinstance(source, torch.Tensor) or texts  # cut into batches; else items are batches
        if len(self) == 0:
            raise DataError(EMPTY_SET)

    def _items(self) -> Iterator[Any]:
        if self._rows:
            for i in range(0, len(self.source), self.batch_size):
                yield self.source[i : i + self.batch_size]
        else:
            yield from self.source

    def __iter__(self) -> Iterator[Any]:
        for item in self._items():
            if self.transform is not None:
                yield self.transform(item)
            elif isinstance(item, (tuple, list)) and item:
                yield item[0]
            else:
                yield item

    def __len__(self) -> int:
        """The number of batches."""
        n = len(self.source)
        return -(-n // self.batch_size) if self._rows else n


def as_calibration(data: CalibrationDataset | Split | torch.Tensor | Iterable[Any]) -> CalibrationDataset:
    return data if isinstance(data, CalibrationDataset) else CalibrationDataset(data)


class QuantizedLayer(nn.Module):
    """A Linear/Conv layer whose weight (and optionally input) pass through ``FakeQuantize``.

    The wrapped layer keeps its own parameters (``.layer.weight``), so training it is QAT.
    """

    def __init__(
        self,
        layer: nn.Module,
        weight: QuantSpec | None,
        activation: QuantSpec | None = None,
        *,
        weight_observer: str = "minmax",
        activation_observer: str = "minmax",
    ) -> None:
        super().__init__()
        if not isinstance(layer, QUANTIZABLE):
            raise UnsupportedModelError(f"cannot quantize a {type(layer).__name__}: only Linear and Conv1d/2d/3d")
        self.layer = layer
        self.weight_fq = FakeQuantize(weight, weight_observer) if weight is not None else None
        if self.weight_fq is not None:
            self.weight_fq.enabled = True  # weights need no calibration data: observe and quantize at once
        self.input_fq = FakeQuantize(activation, activation_observer) if activation is not None else None

    @property
    def weight(self) -> torch.Tensor:
        """The wrapped layer's float weight, so code addressing ``<name>.weight`` (pruning masks) still works."""
        return self.layer.weight  # type: ignore[return-value]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_fq is not None:
            x = self.input_fq(x)
        layer = self.layer
        w = layer.weight if self.weight_fq is None else self.weight_fq(layer.weight)
        if _own_forward(layer):  # e.g. EfficientNet's Conv2dStaticSamePadding pads before its convolution
            weight = layer._parameters["weight"]
            layer._parameters["weight"] = w  # type: ignore[assignment]  # its own forward, the quantized weight
            try:
                return layer(x)  # type: ignore[no-any-return]
            finally:
                layer._parameters["weight"] = weight
        if isinstance(layer, nn.Linear):
            return F.linear(x, w, layer.bias)
        return layer._conv_forward(x, w, layer.bias)  # type: ignore[operator]


def _own_forward(layer: nn.Module) -> bool:
    """True for subclasses of Linear/Conv that override ``forward`` (their extra steps must run too)."""
    base = next(c for c in (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d) if isinstance(layer, c))
    return type(layer).forward is not base.forward


def quantizable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Linear/Conv layers by name, except those a parent calls by weight (inside MultiheadAttention)."""
    skip: set[str] = set()
    for name, m in model.named_modules():
        if isinstance(m, nn.MultiheadAttention):
            skip.update(f"{name}.{child}" if name else child for child, _ in m.named_modules() if child)
    return {n: m for n, m in model.named_modules() if isinstance(m, QUANTIZABLE) and n not in skip}


def check_patterns(exclude: Sequence[str]) -> None:
    """One-line ConfigError for an ``exclude`` entry that is neither a token nor a regular expression."""
    for pattern in exclude:
        if pattern in (FIRST, LAST):
            continue
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ConfigError(f"exclude pattern {pattern!r} is not a valid regular expression: {exc}") from None


def select_layers(model: nn.Module, exclude: Sequence[str] = ()) -> list[str]:
    """Names of the quantizable layers of ``model`` minus ``exclude``: regular expressions searched in
    layer names, plus the tokens ``<first>``/``<last>`` (first/last such layer in module order). A
    pattern matching no layer is a ConfigError, so a typo cannot silently quantize everything."""
    check_patterns(exclude)
    names = list(quantizable_layers(model))
    if not names:
        raise UnsupportedModelError(f"{type(model).__name__} has no Linear or Conv layers to quantize")
    dropped: set[str] = set()
    for pattern in exclude:
        if pattern in (FIRST, LAST):
            hits = {names[0] if pattern == FIRST else names[-1]}
        else:
            hits = {n for n in names if re.search(pattern, n)}
        if not hits:
            raise ConfigError(f"exclude pattern {pattern!r} matches no layer; layers are: {', '.join(names[:8])}")
        dropped |= hits
    kept = [n for n in names if n not in dropped]
    if not kept:
        raise ConfigError(f"exclude {list(exclude)} leaves no layer to quantize; layers are: {', '.join(names[:8])}")
    return kept


def quantize_layers(
    model: nn.Module,
    *,
    weight: QuantSpec | None = None,
    activation: QuantSpec | None = None,
    quantize_activations: bool = True,
    weight_observer: str = "minmax",
    activation_observer: str = "minmax",
    layers: Sequence[str] | None = None,
) -> dict[str, QuantizedLayer]:
    """Replace Linear/Conv layers of ``model`` in place by ``QuantizedLayer``; returns them by name.

    Defaults: 8-bit symmetric per-channel weights and (unless ``quantize_activations=False``) 8-bit
    asymmetric per-tensor inputs. ``layers`` restricts the replacement to those names.
    """
    weight = weight or QuantSpec.weights(8)
    activation = (activation or QuantSpec.activations(8)) if quantize_activations else None
    found = quantizable_layers(model)
    if layers is not None:
        unknown = sorted(set(layers) - set(found))
        if unknown:
            raise ConfigError(f"no quantizable layer named {', '.join(unknown)}; known: {', '.join(found)}")
        found = {n: found[n] for n in layers}
    if not found:
        raise UnsupportedModelError("the model has no Linear or Conv layers to quantize")
    out: dict[str, QuantizedLayer] = {}
    for name, layer in found.items():
        wrapped = QuantizedLayer(
            layer, weight, activation, weight_observer=weight_observer, activation_observer=activation_observer
        ).to(next(layer.parameters()).device)
        parent_name, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, attr, wrapped)
        out[name] = wrapped
    return out


def fake_quants(model: nn.Module) -> dict[str, FakeQuantize]:
    return {n: m for n, m in model.named_modules() if isinstance(m, FakeQuantize)}


@torch.no_grad()
def calibrate(
    model: nn.Module,
    dataset: CalibrationDataset | Split | torch.Tensor | Iterable[Any],
    *,
    num_batches: int | None = None,
) -> nn.Module:
    """Run ``dataset`` through ``model`` in eval mode with every ``FakeQuantize`` observing (and not
    quantizing), then freeze their qparams and switch quantization on. Returns ``model``.

    A ``FakeQuantize`` whose layer never ran stays off, with a warning naming it.
    """
    check(num_batches is None or num_batches >= 1, f"num_batches must be >= 1, got {num_batches}")
    fqs = fake_quants(model)
    if not fqs:
        raise ConfigError("the model has no FakeQuantize modules; insert them first (quantize_layers(model))")
    dataset = as_calibration(dataset)
    device = next(model.parameters(), torch.empty(0)).device
    was_training = model.training
    for fq in fqs.values():
        fq.observe, fq.enabled = True, False
    model.eval()
    try:
        for i, batch in enumerate(dataset):
            if num_batches is not None and i >= num_batches:
                break
            model(batch.to(device) if isinstance(batch, torch.Tensor) else batch)
    finally:
        model.train(was_training)
    idle = [n for n, fq in fqs.items() if int(fq.observer.count) == 0]
    for name, fq in fqs.items():
        fq.observe = False
        if name not in idle:
            fq.update_qparams()
            fq.enabled = True
    if idle:
        warnings.warn(f"these FakeQuantize modules saw no data and stay off: {', '.join(idle)}", stacklevel=2)
    return model


__all__ = [
    "FIRST",
    "LAST",
    "CalibrationDataset",
    "QuantizedLayer",
    "as_calibration",
    "calibrate",
    "check_patterns",
    "fake_quants",
    "quantizable_layers",
    "quantize_layers",
    "select_layers",
]
