"""Classification metrics in pure numpy (macro averages match scikit-learn's ``zero_division=0``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from slimtune.errors import DataError


def _as_labels(values: Any, name: str) -> np.ndarray:
    if hasattr(values, "detach"):  # torch.Tensor without importing torch here
        values = values.detach().cpu().numpy()
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise DataError(f"{name} must be 1-D class indices, got shape {arr.shape}; flatten or argmax it")
    if arr.size and not np.issubdtype(arr.dtype, np.integer) and not np.all(np.mod(arr, 1) == 0):
        raise DataError(f"{name} must hold integer class indices, got dtype {arr.dtype}")
    return arr.astype(np.int64)


def classification_metrics(y_true: Any, y_pred: Any, *, num_classes: int) -> dict[str, Any]:
    """Accuracy, macro F1/precision/recall and the confusion matrix (rows = true class).

    Macro averages run over the classes present in ``y_true`` or ``y_pred``; a class with no
    predicted (or no true) samples scores 0 precision (or recall) instead of raising.
    """
    true = _as_labels(y_true, "y_true")
    pred = _as_labels(y_pred, "y_pred")
    if true.shape != pred.shape:
        raise DataError(f"y_true has {true.size} labels but y_pred has {pred.size}; pass matching arrays")
    if true.size == 0:
        raise DataError("cannot compute metrics on zero samples; pass a non-empty evaluation split")
    if num_classes < 1:
        raise DataError(f"num_classes must be >= 1, got {num_classes}")
    for name, arr in (("y_true", true), ("y_pred", pred)):
        if arr.min() < 0 or arr.max() >= num_classes:
            raise DataError(f"{name} has labels outside [0, {num_classes}); check num_classes")

    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (true, pred), 1)
    tp = np.diag(confusion).astype(np.float64)
    predicted = confusion.sum(axis=0).astype(np.float64)
    actual = confusion.sum(axis=1).astype(np.float64)
    present = (predicted + actual) > 0

    precision = _safe_div(tp, predicted)
    recall = _safe_div(tp, actual)
    f1 = _safe_div(2 * tp, predicted + actual)
    return {
        "accuracy": float(tp.sum() / true.size),
        "f1_macro": float(f1[present].mean()),
        "precision_macro": float(precision[present].mean()),
        "recall_macro": float(recall[present].mean()),
        "confusion": confusion.tolist(),
    }


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.zeros_like(num)
    np.divide(num, den, out=out, where=den > 0)
    return out
