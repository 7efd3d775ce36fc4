"""Budget search: the cheapest deployable model within ``max_accuracy_drop`` points of the teacher.

    result = search(model, data, config=SearchConfig(max_accuracy_drop=1.0, objective="latency"), out="s/")
    print(result.message)        # what was chosen and why, or that nothing met the budget
    result.bundle                # s/best: the parity-checked deploy bundle
    # s/search.json lists every candidate; s/search.html plots the Pareto fronts

Candidates combine the library's techniques (structured pruning, distilled students, sparsity +
clustering, int8 in ONNX Runtime); the strategy runs cheap proxies first, drops hopeless candidates,
gives survivors more epochs by successive halving and fully recovers only the Pareto front.

On a causal LM (``data.kind == "lm"``) the same call takes an ``LMSearchConfig`` (budget: ``max_ppl_increase``
percent of perplexity; objective: ORT decode latency or size) over width/depth pruning, Wanda/SparseGPT
sparsity, weight-only int4/int8 algorithms and their combinations (``lm_space``), and ships an LM bundle that
generates without torch.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from slimtune._outputs import record_files
from slimtune.data.core import DataSplits
from slimtune.errors import ConfigError, DataError
from slimtune.search.finish import SearchResult, finalise
from slimtune.search.lm_space import LMSearchConfig
from slimtune.search.progress import Progress, ProgressEvent
from slimtune.search.runner import BEST, WORK, Search
from slimtune.search.space import Base, Candidate, SearchConfig, build_space, parse_duration


def search(
    model: nn.Module,
    data: DataSplits,
    *,
    config: SearchConfig | LMSearchConfig | None = None,
    out: str | Path,
    resume: bool = False,
    force: bool = False,
    progress: Progress | None = None,
) -> SearchResult:
    """Search compressed versions of the trained ``model`` on ``data`` and ship the best one to
    ``out/best``. ``resume``: continue a killed search in ``out`` (finished evaluations are not rerun);
    ``force``: replace a finished search there. ``progress`` gets a ``ProgressEvent`` after each
    evaluation (its ``line``: candidates done/total, best so far, time left)."""
    is_lm = getattr(data, "kind", None) == "lm"
    config = config or (LMSearchConfig() if is_lm else SearchConfig())
    if is_lm != isinstance(config, LMSearchConfig):
        raise ConfigError(
            "a language model is searched with a perplexity budget (LMSearchConfig / --max-ppl-increase)"
            if is_lm
            else "max_ppl_increase (LMSearchConfig) is for causal LMs on text; a classifier takes max_accuracy_drop"
        )
    for split in ("train", "val", "test"):
        if len(getattr(data, split)) == 0:
            raise DataError(f"search needs a non-empty {split} split; use more data or other split fractions")
    flags = [p.requires_grad for p in model.parameters()]
    was_training = model.training
    try:
        if isinstance(config, LMSearchConfig):
            from slimtune.search.lm_finish import finalise_lm
            from slimtune.search.lm_runner import LMSearch

            lm_state = LMSearch(model, data, config, Path(out), resume=resume, force=force, progress=progress)
            lm_state.run()
            result = finalise_lm(lm_state)
        else:
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
    "LMSearchConfig",
    "ProgressEvent",
    "SearchConfig",
    "SearchResult",
    "build_space",
    "parse_duration",
    "search",
]
