"""The search's final speed decision: of the front members within the budget, the fastest by paired
per-round ratios against the teacher (``slimtune.evaluate.paired``), near ties re-timed, a tie to the more
accurate then the smaller one. Four uninterrupted searches on digits with the latency objective made three
different choices by comparing medians; this makes the same choice unless candidates are within the tie
band, where the preference order (not noise) decides."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from slimtune.evaluate.paired import TimeRound, decide, loaded_warning

Record = dict[str, Any]


def ort_round_timer(paths: dict[str, Path], x: torch.Tensor, *, batch: int = 1, block_s: float = 0.02) -> TimeRound:
    """One timing round over ONNX Runtime sessions of ``paths`` at ``batch``: a block of calls (about
    ``block_s`` of work) of each key in turn, ms per call."""
    from slimtune.export.onnx import ort_session

    sessions = {k: ort_session(p, threads=torch.get_num_threads()) for k, p in paths.items()}
    feeds, block = {}, {}
    for k, session in sessions.items():
        feeds[k] = {session.get_inputs()[0].name: np.concatenate([x.numpy()] * -(-batch // len(x)))[:batch]}
        for _ in range(5):
            session.run(None, feeds[k])
        start = time.perf_counter()
        session.run(None, feeds[k])
        block[k] = int(min(200, max(1, block_s / max(time.perf_counter() - start, 1e-6))))

    def time_round(keys: Sequence[str]) -> dict[str, float]:
        out = {}
        for k in keys:
            t0 = time.perf_counter()
            for _ in range(block[k]):
                sessions[k].run(None, feeds[k])
            out[k] = (time.perf_counter() - t0) * 1000 / block[k]
        return out

    return time_round


def paired_choice(
    candidates: Sequence[Record],
    paths: dict[str, Path],
    x: torch.Tensor,
    *,
    reference: str,
    band: float = 0.03,
    rounds: int = 15,
    max_rounds: int = 60,
    timer: Callable[[dict[str, Path], torch.Tensor], TimeRound] | None = None,
) -> tuple[Record, dict[str, Any]]:
    """The fastest of ``candidates`` (records with ``id``, ``val_accuracy``, ``bytes``; ``paths`` maps each
    id and ``reference`` to its ONNX file) at batch 1 by paired ratios; returns it and the decision's
    summary (ratio quartiles per id, rounds, ties, load, and a warning when the machine was loaded)."""
    order = sorted(candidates, key=lambda r: (-r["val_accuracy"], r["bytes"], r["id"]))  # ties go to the first
    time_round = (timer or ort_round_timer)(paths, x)
    decision = decide([r["id"] for r in order], time_round, reference=reference, rounds=rounds,
                      max_rounds=max_rounds, band=band)  # fmt: skip
    summary = decision.summary() | {"band": band, "warning": loaded_warning(decision)}
    return next(r for r in order if r["id"] == decision.winner), summary
