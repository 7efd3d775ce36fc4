"""Causal-LM training under DDP (two gloo CPU ranks) with gradient accumulation and masked labels equals
one process: the ranks hold different numbers of predicted tokens, and each is weighed by its share of
the global count. About 30-60 s (each rank imports transformers)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch

from slimtune.testing.ddp import read_report, read_weights, single_and_torchrun

SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import torch
    from slimtune.data.core import DataSplits, Split
    from slimtune.testing.markov_lm import markov_lm_data, tiny_llama
    from slimtune.train import TrainConfig, fit

    out = sys.argv[1]
    rank = int(os.environ.get("RANK", 0))
    data = markov_lm_data(vocab=32, length=16, train=64, val=16, test=16)
    y = data.train.y.clone()
    for i in range(len(y)):  # a different number of masked targets in every window
        y[i, : 1 + (i * 5) % 13] = -100
    data = DataSplits(**{**data.__dict__, "train": Split(data.train.x, y)})
    model = tiny_llama(vocab=32, seed=0)
    cfg = TrainConfig(epochs=1, batch_size=16, lr=3e-3, grad_accum=2, restore_best=False)
    result = fit(model, data, config=cfg)
    torch.save(model.state_dict(), os.path.join(out, f"weights-lm.{rank}.pt"))
    with open(os.path.join(out, f"report.{rank}.json"), "w") as f:
        json.dump({"history": result.history}, f)
    """
)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return single_and_torchrun(SCRIPT, tmp_path_factory.mktemp("ddp_lm"), timeout=240)


def test_lm_ddp_with_accumulation_matches_one_process(runs: dict[str, Path]) -> None:
    one, two = read_report(runs["single"], 0)["history"], read_report(runs["ddp"], 0)["history"]
    assert abs(one[0]["val_loss"] - two[0]["val_loss"]) < 1e-4
    w1, w2, w2b = (read_weights(runs[k], "lm", r) for k, r in (("single", 0), ("ddp", 0), ("ddp", 1)))
    assert all(torch.equal(w2[k], w2b[k]) for k in w2)  # the ranks agree exactly
    assert max(float((w1[k] - w2[k]).abs().max()) for k in w1) < 1e-4
