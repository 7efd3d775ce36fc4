from __future__ import annotations

import pytest
import torch

from slimtune.data import DataSplits, load


@pytest.fixture(scope="session")
def digits() -> DataSplits:
    """A fixed 600-example slice of scikit-learn's digits (real data, no download)."""
    return load("digits", seed=0, limit=600)


torch.set_num_threads(1)  # tiny models: one thread is faster, deterministic, and never oversubscribes


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
