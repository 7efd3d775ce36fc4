"""The ``search`` stage: budget search over every technique from the current model, shipping the chosen
candidate as a deploy bundle (``NN-search/best``) that becomes the current model.

```yaml
stages:
  - {stage: train, train: {epochs: 20}}
  - {stage: search, max_accuracy_drop: 1.0, objective: latency, time_budget: 30m}
```
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from slimtune.recipe.stages import STAGES, Context, StageOutput, masks_if_sparse
from slimtune.search.space import SearchConfig

log = logging.getLogger("slimtune.search")


class SearchStage:
    """Options are those of ``SearchConfig`` (``slimtune search`` takes the same)."""

    def parse(self, raw: dict[str, Any], *, where: str) -> SearchConfig:
        return SearchConfig.from_dict(raw, where=where)

    def run(self, ctx: Context, cfg: SearchConfig, out: Path) -> StageOutput:
        from slimtune.models import save_model
        from slimtune.runtime.bundle import read_manifest
        from slimtune.search import search

        result = search(
            ctx.model, ctx.data, config=cfg, out=out, resume=ctx.resume, force=True, progress=lambda e: log.info(e.line)
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
        return StageOutput(
            path,
            model=result.model,
            onnx=path,
            parity=manifest.raw.get("parity") or None,
            extra={"search": summary, "bundle": f"{out.name}/best"},
        )


STAGES.add("search", SearchStage(), help="budget search over pruning, students, sparsity and int8; ships the best")
