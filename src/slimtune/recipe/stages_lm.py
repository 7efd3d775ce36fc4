"""Recipe stages that differ for causal LMs, plus ``evaluate`` (any model).

An LM recipe (its model is a causal LM, see ``slimtune.recipe.lm``) runs ``train``, ``finetune`` and
``distill`` through the same stage classes as a classifier (the loop, LoRA and LM distillation branch on
``data.kind == "lm"``); its ``export`` and ``bundle`` stages run these LM variants::

    - {stage: export, greedy_tokens: 16, prompts: 2}           # KV-cache ONNX + parity (lm-export)
    - {stage: bundle, generation: {max_new_tokens: 48}, prompt: "ROMEO:"}   # LM bundle (lm-bundle)

``evaluate`` measures the current model as it stands (a row for the pretrained model, before any change).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from slimtune.config import Config, check
from slimtune.export.lm_onnx import LMExportConfig
from slimtune.recipe.stages import STAGES, Context, StageOutput


@dataclass(frozen=True, kw_only=True)
class EvaluateStageConfig(Config):
    """No options: the row measures the current model as it is."""


class EvaluateStage:
    """Measure the current model without changing it (its report row is the baseline of the next stages)."""

    def parse(self, raw: dict[str, Any], *, where: str) -> EvaluateStageConfig:
        return EvaluateStageConfig.from_dict(raw, where=where)

    def run(self, ctx: Context, cfg: EvaluateStageConfig, out: Path) -> StageOutput:
        return StageOutput(out, extra={"evaluated": True})


def _windows(ctx: Context, cfg: LMExportConfig) -> torch.Tensor:
    """Held-out windows for the parity check: the first ``windows`` test windows, cut to ``window_length``."""
    x = ctx.data.test.x
    assert isinstance(x, torch.Tensor)
    return x[: cfg.windows, : cfg.window_length]


class LMExportStage:
    """KV-cache ONNX export of the current causal LM, parity-checked against PyTorch (logits through the cache
    on test windows, greedy tokens identical to ``generate``)."""

    def parse(self, raw: dict[str, Any], *, where: str) -> LMExportConfig:
        return LMExportConfig.from_dict(raw, where=where)

    def run(self, ctx: Context, cfg: LMExportConfig, out: Path) -> StageOutput:
        from slimtune.export.lm_bundle import export_lm

        path = out / "model.onnx"
        report = export_lm(ctx.model, path, windows=_windows(ctx, cfg), config=cfg)  # type: ignore[arg-type]
        return StageOutput(path, onnx=path, parity=report, extra={"lm_parity": report})


@dataclass(frozen=True, kw_only=True)
class LMBundleStageConfig(Config):
    """``export``: the KV-cache export and its parity check; ``generation``: the bundle's defaults
    (max_new_tokens, temperature, top_k, top_p, stop); ``prompt``: a text the finished bundle continues with
    onnxruntime alone (shown in the log and the report row)."""

    export: LMExportConfig = LMExportConfig()
    generation: dict[str, Any] = field(default_factory=dict)
    prompt: str | None = None

    def __post_init__(self) -> None:
        check(self.prompt is None or bool(self.prompt.strip()), "prompt: give some text, or leave it out")


class LMBundleStage:
    """An LM bundle (KV-cache decoder, tokenizer, chat template, generation defaults, parity report) that
    ``slimtune generate`` / ``bench`` and ``slimtune.runtime.LMGenerator`` serve without torch."""

    def parse(self, raw: dict[str, Any], *, where: str) -> LMBundleStageConfig:
        from types import SimpleNamespace

        from slimtune.errors import ConfigError
        from slimtune.export.lm_bundle import _generation

        cfg = LMBundleStageConfig.from_dict(raw, where=where)
        try:  # the check the export makes, before anything runs (no model: no model defaults to merge)
            _generation(SimpleNamespace(), cfg.generation)  # type: ignore[arg-type]
        except ConfigError as exc:
            raise ConfigError(f"{where}.generation: {exc}") from None
        return cfg

    def run(self, ctx: Context, cfg: LMBundleStageConfig, out: Path) -> StageOutput:
        from slimtune.export.lm_bundle import export_lm_bundle
        from slimtune.models import lm_tokenizer
        from slimtune.runtime.bundle import read_manifest

        tok = lm_tokenizer(ctx.model)
        folder = export_lm_bundle(
            ctx.model, tok.tokenizer, out / "bundle", windows=_windows(ctx, cfg.export),  # type: ignore[arg-type]
            chat_template=tok.chat_template, generation=cfg.generation or None, config=cfg.export,
            provenance={"from": "recipe bundle stage", "model": getattr(ctx.model, "slimtune_spec", {}).get("name")},
            force=True,
        )  # fmt: skip
        manifest = read_manifest(folder)
        model_path = manifest.file("model")
        extra: dict[str, Any] = {"bundle": f"{out.name}/bundle", "lm_parity": manifest.raw.get("parity")}
        if cfg.prompt is not None:
            from slimtune.runtime import LMGenerator

            extra["generated"] = {"prompt": cfg.prompt, "text": LMGenerator(folder).generate(cfg.prompt)}
        return StageOutput(model_path, onnx=model_path, parity=manifest.raw.get("parity"), extra=extra)


STAGES.add("evaluate", EvaluateStage(), help="measure the current model as it is (a baseline row), no change")
STAGES.add("lm-export", LMExportStage(), help="causal LMs: KV-cache ONNX + parity (an LM recipe's 'export')")
STAGES.add("lm-bundle", LMBundleStage(), help="causal LMs: LM bundle for torch-free generation ('bundle')")
