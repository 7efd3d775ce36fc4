"""Deployment stages: ``bundle`` (a folder that runs anywhere with onnxruntime + numpy)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slimtune.config import Config, check
from slimtune.export.bundle import export_bundle
from slimtune.export.onnx import ExportConfig
from slimtune.recipe.stages import STAGES, Context, StageOutput
from slimtune.runtime.bundle import read_manifest


@dataclass(frozen=True, kw_only=True)
class BundleStageConfig(Config):
    """``source: latest`` ships the latest checked ONNX model (e.g. the int8 one of a quantize stage) or,
    when the current model has none, an fp32 export; ``source: fp32`` always exports fp32."""

    source: str = "latest"
    examples: int = 16
    export: ExportConfig = ExportConfig()

    def __post_init__(self) -> None:
        check(self.source in ("latest", "fp32"), f"source must be 'latest' or 'fp32', got '{self.source}'")
        check(self.examples >= 0, f"examples must be >= 0, got {self.examples}")


class BundleStage:
    """Write a deploy bundle; the recipe's report and a model card are added when the run ends."""

    def parse(self, raw: dict[str, Any], *, where: str) -> BundleStageConfig:
        return BundleStageConfig.from_dict(raw, where=where)

    def run(self, ctx: Context, cfg: BundleStageConfig, out: Path) -> StageOutput:
        use_onnx = ctx.onnx if cfg.source == "latest" else None
        folder = export_bundle(
            ctx.model, out / "bundle", data=ctx.data, onnx=use_onnx, parity_report=ctx.onnx_parity,
            export=cfg.export, examples=cfg.examples, force=True,
            provenance={"from": str(use_onnx.name) if use_onnx else "fp32 export"},
        )  # fmt: skip
        model_path = folder / "model.onnx"
        parity = read_manifest(folder).raw.get("parity") or None
        return StageOutput(model_path, onnx=model_path, parity=parity, extra={"bundle": f"{out.name}/bundle"})


STAGES.add("bundle", BundleStage(), help="a deploy folder: ONNX model, preprocessing, labels, report, model card")
