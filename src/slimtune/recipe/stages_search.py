"""The ``search`` stage: budget search over every technique from the current model, shipping the chosen
candidate as a deploy bundle (``NN-search/best``) that becomes the current model.

```yaml
stages:
  - {stage: train, train: {epochs: 20}}
  - {stage: search, max_accuracy_drop: 1.0, objective: latency, time_budget: 30m}
```

In an LM recipe the stage is ``lm-search`` (the LM search: ``LMSearchConfig``'s options; the chosen LM bundle,
measured in ONNX Runtime, becomes the current model)::

  - {stage: search, max_ppl_increase: 15, objective: latency, precisions: [int4-gptq, int8-rtn]}
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from slimtune.recipe.stages import STAGES, Context, StageOutput, masks_if_sparse
from slimtune.search.lm_space import LMSearchConfig
from slimtune.search.space import SearchConfig

log = logging.getLogger("slimtune.search")


class SearchStage:
    """Options are those of ``SearchConfig`` (``slimtune search`` takes the same)."""

    def parse(self, raw: dict[str, Any], *, where: str) -> SearchConfig:
        return SearchConfig.from_dict(raw, where=where)

    def run(self, ctx: Context, cfg: SearchConfig | LMSearchConfig, out: Path) -> StageOutput:
        from slimtune.models import save_model
        from slimtune.runtime.bundle import read_manifest
        from slimtune.search import search

        result = search(
            ctx.model,
            ctx.data,
            config=cfg,
            out=out,
            resume=ctx.resume and not isinstance(cfg, LMSearchConfig),
            force=True,
            progress=lambda e: log.info(e.line),
        )
        log.info(result.message)
        save_model(result.model, out / "model")  # what a resumed recipe reloads as the current model
        ctx.masks = masks_if_sparse(result.model)
        manifest = read_manifest(result.bundle)
        path = manifest.file("model")
        summary = {
            "chosen": result.chosen["name"],
            "config": result.chosen["config"],
            "met_budget": result.met_budget,
            "message": result.message,
            "candidates": len(result.candidates),
            "front": [r["name"] for r in result.front],
        }
        if isinstance(cfg, LMSearchConfig):  # every candidate, for the report's "Budget search" section
            summary["rows"] = [
                {"name": r["name"], "status": r["status"], "val_perplexity": r.get("val_perplexity"),
                 "ppl_increase": r.get("ppl_increase"), "bytes": r.get("bytes"),
                 "decode_ms": (r.get("latency_ms") or {}).get("batch1")}
                for r in result.candidates
            ]  # fmt: skip
        return StageOutput(
            path,
            model=result.model,
            onnx=path,
            parity=manifest.raw.get("parity") or None,
            extra={"search": summary, "bundle": f"{out.name}/best"},
        )


class LMSearchStage(SearchStage):
    """Options are those of ``LMSearchConfig`` (``slimtune search --max-ppl-increase`` takes the same)."""

    def parse(self, raw: dict[str, Any], *, where: str) -> LMSearchConfig:  # type: ignore[override]
        return LMSearchConfig.from_dict(raw, where=where)


STAGES.add("search", SearchStage(), help="budget search over pruning, students, sparsity and int8; ships the best")
STAGES.add(
    "lm-search",
    LMSearchStage(),
    help="causal LMs: budget search over width/depth, sparsity, int4/int8 and combinations (an LM recipe's 'search')",
)
