"""The in-memory dataset every slimtune stage consumes: seeded train/val/test splits."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch

from slimtune.errors import DataError

Kind = Literal["image", "tabular", "text", "lm"]  # lm: x/y = token ids/labels (N, T), see data/lm_data.py


@dataclass
class Split:
    """One split. ``x`` is a float tensor (N, ...) or, for text, a list of N strings; ``y`` is (N,) int64."""

    x: torch.Tensor | list[str]
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def take(self, n: int) -> Split:
        return Split(self.x[:n], self.y[:n])


@dataclass
class DataSplits:
    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    label_names: list[str]
    kind: Kind
    input_shape: tuple[int, ...] = ()
    meta: dict[str, object] = field(default_factory=dict)

    def calibration(self, n: int = 256) -> Split:
        """The first ``n`` training examples: a calibration set for quantization."""
        if n <= 0:
            raise DataError(f"calibration size must be positive, got {n}")
        return self.train.take(n)

    def summary(self) -> str:
        if self.kind == "lm":
            return (
                f"{self.name}: lm, windows of {self.input_shape[0]} tokens, "
                f"train/val/test = {len(self.train)}/{len(self.val)}/{len(self.test)} windows"
            )
        return (
            f"{self.name}: {self.kind}, {self.num_classes} classes, input {self.input_shape or 'text'}, "
            f"train/val/test = {len(self.train)}/{len(self.val)}/{len(self.test)}"
        )


def split_arrays(
    name: str,
    x: torch.Tensor | Sequence[str],
    y: torch.Tensor,
    *,
    label_names: list[str],
    kind: Kind,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    limit: int | None = None,
    test: tuple[torch.Tensor | Sequence[str], torch.Tensor] | None = None,
) -> DataSplits:
    """Shuffle with ``seed`` and cut into train/val/test (stratification is not needed at these sizes).

    ``test`` gives an official test set; then only train/val are cut from ``x``/``y``.
    ``limit`` keeps the first ``limit`` examples of the shuffled pool (and of the test set).
    """
    n = len(y)
    if n == 0:
        raise DataError(f"dataset '{name}' is empty; check the file or the filter")
    if len(x) != n:
        raise DataError(f"dataset '{name}' has {len(x)} inputs but {n} labels; give one label per input")
    if limit is not None and limit < 3:
        raise DataError(f"limit must be at least 3 (one example per split); got {limit}")
    classes = torch.unique(y)
    if len(classes) < 2:
        only = int(classes[0])
        label = label_names[only] if 0 <= only < len(label_names) else str(only)
        raise DataError(f"dataset '{name}' has only one class ({label}); need at least two")
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=g)
    if limit is not None:
        perm = perm[:limit]
    n = len(perm)

    def pick(xs: torch.Tensor | Sequence[str], idx: torch.Tensor) -> torch.Tensor | list[str]:
        if isinstance(xs, torch.Tensor):
            return xs[idx]
        return [xs[int(i)] for i in idx]

    n_val = max(1, round(n * val_fraction))
    if test is None:
        n_test = max(1, round(n * test_fraction))
        te, va, tr = perm[:n_test], perm[n_test : n_test + n_val], perm[n_test + n_val :]
        test_split = Split(pick(x, te), y[te])
    else:
        tx, ty = test
        tidx = torch.randperm(len(ty), generator=g)
        if limit is not None:
            tidx = tidx[: max(1, round(limit * test_fraction))]
        test_split = Split(pick(tx, tidx), ty[tidx])
        va, tr = perm[:n_val], perm[n_val:]
    shape = tuple(x.shape[1:]) if isinstance(x, torch.Tensor) else ()
    return DataSplits(
        name=name,
        train=Split(pick(x, tr), y[tr]),
        val=Split(pick(x, va), y[va]),
        test=test_split,
        num_classes=len(label_names),
        label_names=label_names,
        kind=kind,
        input_shape=shape,
    )


def scale_images(splits: DataSplits, scale: float = 255.0) -> DataSplits:
    """Turn integer image splits (e.g. uint8) into float32 in [0, 1], in place; done after splitting
    so a large uint8 pool is never converted to float as a whole."""
    for split in (splits.train, splits.val, splits.test):
        if isinstance(split.x, torch.Tensor):
            split.x = split.x.float().div_(scale)
    splits.meta["pixel_scale"] = 1.0 / scale  # deploy bundles map raw integer pixels the same way
    return splits
