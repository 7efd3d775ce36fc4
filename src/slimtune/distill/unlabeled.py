"""Distillation on unlabeled data: the teacher labels a pool of inputs and its predictions become the
student's labels (confident ones only, if asked).

Hard pseudo-labels are class ids (N,); soft ones are the teacher's probabilities (N, C), which
``F.cross_entropy`` (the loop's classification task and the ``mixed`` KD loss) accepts as targets, so a
pseudo-labelled ``Split`` trains with plain ``fit`` or with ``distill_``.

With no separate pool, ``unlabeled_data`` makes one from the training split: ``train`` relabels the training
inputs (their labels are dropped); ``augment`` keeps the labelled training split and adds ``copies``
augmented copies of it (random shifts of up to ``max_shift`` pixels and Gaussian noise for images; noise only
for flat inputs; not available for token ids), labelled by the teacher or (``labels: source``) with their
source example's true label: augmentation keeps the class, and the KD term still gets the teacher's logits of
every copy (measured on Fashion-MNIST, LeNet-300-100 from resnet-small: source labels 90.15% vs teacher labels
89.82%, see benchmarks/results/kd_fashion_mnist.md). ``file`` adds your own pool: a ``.npy`` array (or the
``x`` array of a ``.npz``) of inputs shaped and scaled like the dataset's (N, *input_shape), labelled by the
teacher and appended to the labelled training split.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F
from torch import nn

from slimtune.config import Config, check
from slimtune.data.core import DataSplits, Split
from slimtune.errors import ConfigError, DataError
from slimtune.train.loop import predict

if TYPE_CHECKING:
    from slimtune.distill.cache import TeacherCache


@dataclass(frozen=True, kw_only=True)
class UnlabeledConfig(Config):
    """Recipe key ``unlabeled``: ``{from: train|augment|file, path: pool.npy, min_confidence: 0.9, soft: false,
    copies: 1, labels: teacher|source}``."""

    source: Literal["train", "augment", "file"] = "train"
    path: str | None = None  # from: file
    labels: Literal["teacher", "source"] = "teacher"
    min_confidence: float = 0.0
    soft: bool = False
    copies: int = 1
    max_shift: int = 2
    noise: float = 0.05
    seed: int = 0

    def __post_init__(self) -> None:
        check(0 <= self.min_confidence < 1, f"min_confidence must be in [0, 1), got {self.min_confidence}")
        check(self.copies >= 1, f"copies must be >= 1, got {self.copies}")
        check(self.max_shift >= 0, f"max_shift must be >= 0, got {self.max_shift}")
        check(self.noise >= 0, f"noise must be >= 0, got {self.noise}")
        check(self.labels in ("teacher", "source"), f"labels must be 'teacher' or 'source', got {self.labels!r}")
        check(self.source in ("train", "augment", "file"), f"from must be train, augment or file, got {self.source!r}")
        check(
            (self.source == "file") == (self.path is not None),
            "from: file needs path: pool.npy (a .npy/.npz of inputs); path goes only with from: file",
        )
        if self.labels == "source":
            why = "labels: source keeps the true labels of augmented copies; use from: augment"
            check(self.source == "augment", why)
            check(
                self.min_confidence == 0 and not self.soft,
                "labels: source keeps every copy with its true class id; drop min_confidence and soft",
            )


def _tensor(x: torch.Tensor | list[str], what: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise DataError(
            f"{what} needs tensor inputs; tokenize text first with slimtune.models.inputs.tokenize_splits "
            "(recipes and slimtune stage do it)"
        )
    return x


def pseudo_label(
    teacher: nn.Module,
    x_pool: torch.Tensor,
    *,
    min_confidence: float = 0.0,
    soft: bool = False,
    batch_size: int = 512,
    cache: TeacherCache | None = None,
) -> Split:
    """The rows of ``x_pool`` whose top teacher probability is ≥ ``min_confidence``, labelled by the teacher:
    class ids, or (``soft``) the probability vectors. With ``cache``, the teacher's logits are taken from it
    and the pool's missing rows added to it, so labelling and distilling on the pool run the teacher once."""
    x_pool = _tensor(x_pool, "pseudo_label")
    if len(x_pool) == 0:
        raise DataError("pseudo_label got an empty pool of inputs")
    if cache is not None:
        logits = cache.extend(teacher, x_pool, batch_size=batch_size)
    else:
        logits = predict(teacher, x_pool, batch_size=batch_size)
    probs = torch.softmax(logits.float(), dim=-1)
    confidence, label = probs.max(dim=-1)
    keep = confidence >= min_confidence
    if not bool(keep.any()):
        raise DataError(
            f"no input reaches min_confidence {min_confidence} (the teacher's highest is "
            f"{confidence.max().item():.3f}); lower min_confidence"
        )
    return Split(x_pool[keep], probs[keep] if soft else label[keep])


def augment(
    x: torch.Tensor, *, copies: int = 1, max_shift: int = 2, noise: float = 0.05, seed: int = 0
) -> torch.Tensor:
    """``copies`` augmented copies of every row of ``x`` (N·copies rows), values clamped to ``x``'s range.
    Images (N, C, H, W): a random shift in [-max_shift, max_shift]² (zero fill) plus noise; other float
    inputs: noise only."""
    if not x.is_floating_point():
        raise ConfigError("augment works on float inputs (images, tabular); for token ids use unlabeled.from: train")
    g = torch.Generator().manual_seed(seed)
    out = x.repeat(copies, *([1] * (x.ndim - 1)))
    if x.ndim == 4 and max_shift > 0:
        out = shift_images(out, max_shift, generator=g)
    if noise > 0:
        out = out + noise * torch.randn(out.shape, generator=g, dtype=out.dtype)
    return out.clamp_(float(x.min()), float(x.max()))


def shift_images(x: torch.Tensor, max_shift: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Every image of ``x`` (N, C, H, W) moved by its own random (dy, dx) in [-max_shift, max_shift]², zero fill."""
    s = max_shift
    h, w = x.shape[-2:]
    padded = F.pad(x, (s, s, s, s))
    out = x.clone()
    shifts = torch.randint(-s, s + 1, (len(x), 2), generator=generator)
    for dy in range(-s, s + 1):
        for dx in range(-s, s + 1):
            rows = ((shifts[:, 0] == dy) & (shifts[:, 1] == dx)).nonzero().squeeze(1)
            if len(rows):
                out[rows] = padded[rows, :, s - dy : s - dy + h, s - dx : s - dx + w]
    return out


def _as_probs(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    return y if y.is_floating_point() else F.one_hot(y, num_classes).float()


def concat_splits(a: Split, b: Split, *, num_classes: int) -> Split:
    """``a`` then ``b``; if one holds probability labels the class ids of the other become one-hot."""
    xa, xb = _tensor(a.x, "concat_splits"), _tensor(b.x, "concat_splits")
    ya, yb = a.y, b.y
    if ya.is_floating_point() or yb.is_floating_point():
        ya, yb = _as_probs(ya, num_classes), _as_probs(yb, num_classes)
    return Split(torch.cat([xa, xb]), torch.cat([ya, yb]))


def load_pool(path: str | Path, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """Inputs from a ``.npy`` (or the ``x`` / first array of a ``.npz``), checked against the data's ``shape``."""
    import numpy as np

    p = Path(path)
    if not p.is_file() or p.suffix not in (".npy", ".npz"):
        raise DataError(f"unlabeled pool '{p}' not found or not a .npy/.npz file of inputs")
    try:
        loaded = np.load(p, allow_pickle=False)
        arr = loaded if p.suffix == ".npy" else loaded["x"] if "x" in loaded.files else loaded[loaded.files[0]]
    except (ValueError, OSError, IndexError) as exc:
        raise DataError(f"cannot read unlabeled pool '{p}': {str(exc).splitlines()[0]}") from None
    if arr.ndim < 1 or tuple(arr.shape[1:]) != shape or len(arr) == 0:
        raise DataError(
            f"unlabeled pool '{p}' holds inputs of shape {list(arr.shape)}; expected (N, {', '.join(map(str, shape))}) "
            "like the dataset's, scaled the same way"
        )
    if not np.issubdtype(arr.dtype, np.number):
        raise DataError(f"unlabeled pool '{p}' is {arr.dtype}, not numbers")
    return torch.from_numpy(np.ascontiguousarray(arr)).to(dtype)


def unlabeled_data(
    teacher: nn.Module, data: DataSplits, config: UnlabeledConfig, *, cache: TeacherCache | None = None
) -> DataSplits:
    """``data`` with its training split replaced as ``config`` says (val and test untouched); ``cache``: see
    ``pseudo_label`` (the teacher's logits of the new rows land in it, ready for ``distill_(cache=...)``)."""
    x = _tensor(data.train.x, "unlabeled distillation")
    if config.source == "train":
        train = pseudo_label(teacher, x, min_confidence=config.min_confidence, soft=config.soft, cache=cache)
    elif config.source == "file":
        assert config.path is not None
        pool = load_pool(config.path, tuple(x.shape[1:]), x.dtype)
        extra = pseudo_label(teacher, pool, min_confidence=config.min_confidence, soft=config.soft, cache=cache)
        train = concat_splits(data.train, extra, num_classes=data.num_classes)
    else:
        if data.kind == "text":
            raise ConfigError("unlabeled.from: augment works on images and tabular data; for text use from: train")
        pool = augment(x, copies=config.copies, max_shift=config.max_shift, noise=config.noise, seed=config.seed)
        extra = pseudo_label(teacher, pool, min_confidence=config.min_confidence, soft=config.soft, cache=cache)
        if config.labels == "source":  # every copy kept (min_confidence 0): copy k of row i is row k·N + i
            extra = Split(extra.x, data.train.y.repeat(config.copies))
        train = concat_splits(data.train, extra, num_classes=data.num_classes)
    return dataclasses.replace(data, train=train)
