"""Budget search: the cheapest deployable model within ``max_accuracy_drop`` points of the teacher.

    result = search(model, data, config=SearchConfig(max_accuracy_drop=1.0, objective="latency"), out="s/")
    print(result.message)        # what was chosen and why, or that nothing met the budget
    result.bundle                # s/best: the parity-checked deploy bundle
    # s/search.json lists every candidate; s/search.html plots the Pareto fronts

Candidates combine the library's techniques (structured pruning, distilled students, sparsity +
clustering, int8 in ONNX Runtime); the strategy runs cheap proxies first, drops hopeless candidates,
gives survivors more epochs by successive halving and fully recovers only the Pareto front.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from slimtune._outputs import record_files
from slimtune.data.core import DataSplits
from slimtune.errors import DataError
from slimtune.search.finish import SearchResult, finalise
from slimtune.search.progress import Progress, ProgressEvent
from slimtune.search.runner import BEST, WORK, Search
from slimtune.search.space import Base, Candidate, SearchConfig, build_space, parse_duration


def search(
    model: nn.Module,
    data: DataSplits,
    *,
    config: SearchConfig | None = None,
    out: str | Path,
    resume: bool = False,
    force: bool = False,
    progress: Progress | None = None,
) -> SearchResult:
    """Search compressed versions of the trained ``model`` on ``data`` and ship the best one to
    ``out/best``. ``resume``: continue a killed search in ``out`` (finished evaluations are not rerun);
    ``force``: replace a finished search there. ``progress`` gets a ``ProgressEvent`` after each
    evaluation (its ``line``: candidates done/total, best so far, time left)."""
    config = config or SearchConfig()
    for split in ("train", "val", "test"):
        if len(getattr(data, split)) == 0:
            raise DataError(f"search needs a non-empty {split} split; use more data or other split fractions")
    flags = [p.requires_grad for p in model.parameters()]
    was_training = model.training
    try:
        state = Search(model, data, config, Path(out), resume=resume, force=force, progress=progress)
        state.run()
        result = finalise(state)
        record_files(Path(out), WORK, BEST)  # finished: a later --force removes exactly these files
        return result
    finally:  # distillation freezes the teacher; give the caller's model back as it came
        for p, flag in zip(model.parameters(), flags):
            p.requires_grad_(flag)
        model.train(was_training)


__all__ = [
    "Base",
    "Candidate",
    "ProgressEvent",
    "SearchConfig",
    "SearchResult",
    "build_space",
    "parse_duration",
    "search",
]
