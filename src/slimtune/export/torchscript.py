"""TorchScript: the second export target (LibTorch C++ and mobile runtimes), parity-checked like ONNX.

``torch.jit`` is deprecated upstream in favour of ``torch.export``, but it is still what LibTorch and
PyTorch Mobile load; the traced module is frozen (weights folded in as constants) before saving.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from slimtune._io import atomic_path
from slimtune.errors import ParityError, UnsupportedModelError


def export_torchscript(model: nn.Module, example: torch.Tensor, path: str | Path) -> Path:
    """Trace ``model`` (eval mode) on ``example``, freeze it and save it to ``path`` atomically."""
    out = Path(path)
    was_training = model.training
    model.eval()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            traced = torch.jit.freeze(torch.jit.trace(model, (example,), strict=False, check_trace=False))
            with atomic_path(out) as tmp:
                torch.jit.save(traced, str(tmp))
    except Exception as exc:
        raise UnsupportedModelError(
            f"TorchScript export of {type(model).__name__} failed: {str(exc).splitlines()[0]}"
        ) from exc
    finally:
        model.train(was_training)
    return out


def torchscript_parity(model: nn.Module, path: str | Path, x: torch.Tensor, *, max_abs_diff: float = 1e-4) -> float:
    """Max |Δ| between ``model`` and the saved TorchScript module on ``x`` (another batch size than traced);
    raises ``ParityError`` above ``max_abs_diff``."""
    loaded = torch.jit.load(str(path))
    was_training = model.training
    model.eval()
    with torch.no_grad():
        diff = float((loaded(x) - model(x)).abs().max())
    model.train(was_training)
    if diff > max_abs_diff:
        raise ParityError(f"TorchScript output differs from PyTorch by {diff:.3g} (> tolerance {max_abs_diff:g})")
    return diff
