from __future__ import annotations

import numpy as np
import pytest
import torch

from slimtune.errors import DataError
from slimtune.evaluate import classification_metrics

sklearn_metrics = pytest.importorskip("sklearn.metrics")


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_matches_sklearn_on_random_labels(seed: int) -> None:
    rng = np.random.default_rng(seed)
    num_classes = 6
    y_true = rng.integers(0, num_classes - 1, size=200)  # class 5 never true...
    y_pred = rng.integers(0, num_classes, size=200)  # ...but may be predicted
    y_pred[:3] = 5
    got = classification_metrics(y_true, y_pred, num_classes=num_classes)

    assert got["accuracy"] == pytest.approx(sklearn_metrics.accuracy_score(y_true, y_pred))
    for key, fn in [
        ("f1_macro", sklearn_metrics.f1_score),
        ("precision_macro", sklearn_metrics.precision_score),
        ("recall_macro", sklearn_metrics.recall_score),
    ]:
        assert got[key] == pytest.approx(fn(y_true, y_pred, average="macro", zero_division=0)), key
    expected = sklearn_metrics.confusion_matrix(y_true, y_pred, labels=list(range(num_classes)))
    assert got["confusion"] == expected.tolist()


def test_classes_absent_from_both_are_not_averaged() -> None:
    y_true = np.array([0, 0, 1, 1])
    y_pred = np.array([0, 1, 1, 1])
    got = classification_metrics(y_true, y_pred, num_classes=10)
    assert got["f1_macro"] == pytest.approx(sklearn_metrics.f1_score(y_true, y_pred, average="macro"))
    assert len(got["confusion"]) == 10 and all(len(r) == 10 for r in got["confusion"])


def test_accepts_torch_tensors_and_returns_plain_types() -> None:
    y = torch.tensor([0, 1, 2, 2])
    got = classification_metrics(y, torch.tensor([0, 1, 2, 1]), num_classes=3)
    assert got["accuracy"] == 0.75
    assert type(got["f1_macro"]) is float
    assert got["confusion"] == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]


def test_perfect_prediction() -> None:
    y = np.arange(5)
    got = classification_metrics(y, y, num_classes=5)
    assert got["accuracy"] == got["f1_macro"] == got["precision_macro"] == got["recall_macro"] == 1.0


@pytest.mark.parametrize(
    ("y_true", "y_pred"),
    [
        ([0, 1], [0]),  # length mismatch
        ([0, 3], [0, 1]),  # label out of range
        ([[0, 1]], [[0, 1]]),  # not 1-D
        ([], []),  # empty
        ([0.5, 1.0], [0, 1]),  # not integer
    ],
)
def test_bad_inputs_raise_data_error(y_true: list, y_pred: list) -> None:
    with pytest.raises(DataError):
        classification_metrics(np.array(y_true), np.array(y_pred), num_classes=3)
