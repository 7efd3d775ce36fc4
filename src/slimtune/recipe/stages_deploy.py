"""Deployment stages: ``bundle`` (a folder that runs anywhere with onnxruntime + numpy) and ``retarget``
(convert to the target precision, and fine-tune for it when conversion alone costs too much accuracy)."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

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
        model_path = read_manifest(folder).file("model")
        parity = read_manifest(folder).raw.get("parity") or None
        return StageOutput(model_path, onnx=model_path, parity=parity, extra={"bundle": f"{out.name}/bundle"})


@dataclass(frozen=True, kw_only=True)
class RetargetStageConfig(Config):
    """``target: int8``: post-training int8 first (``quantize``: the quantize stage's options); when it loses
    more than ``max_accuracy_drop`` points of validation accuracy, quantization-aware fine-tuning for the
    target (``qat``: the qat stage's options) runs and the better of the two is kept. ``finetune: always``
    runs the fine-tune regardless, ``never`` stops after post-training conversion."""

    target: Literal["int8"] = "int8"
    max_accuracy_drop: float = 0.5
    finetune: Literal["auto", "always", "never"] = "auto"
    quantize: dict[str, Any] = field(default_factory=lambda: {"method": "ort-auto-int8"})
    qat: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check(self.max_accuracy_drop >= 0, f"max_accuracy_drop must be >= 0 points, got {self.max_accuracy_drop}")


def _val_accuracy(ctx: Context, onnx: Path | None) -> float:
    from slimtune.export.onnx import ort_predict, ort_session
    from slimtune.train.loop import predict

    x, y = ctx.data.val.x, ctx.data.val.y
    assert isinstance(x, torch.Tensor)
    logits = predict(ctx.model, x).numpy() if onnx is None else ort_predict(ort_session(onnx), x.numpy())
    return float((np.argmax(logits, 1) == y.numpy()).mean())


class RetargetStage:
    """Re-targeting (the seeds' 重新训练/微调 for the new platform): convert, check, fine-tune if needed."""

    def parse(self, raw: dict[str, Any], *, where: str) -> tuple[RetargetStageConfig, Any, Any]:
        cfg = RetargetStageConfig.from_dict(raw, where=where)
        quantize = STAGES.get("quantize").parse(dict(cfg.quantize), where=f"{where}.quantize")
        qat = STAGES.get("qat").parse(dict(cfg.qat), where=f"{where}.qat")
        return cfg, quantize, qat

    def run(self, ctx: Context, parsed: tuple[RetargetStageConfig, Any, Any], out: Path) -> StageOutput:
        cfg, quantize_cfg, qat_cfg = parsed
        fp32 = _val_accuracy(ctx, None)
        ptq = STAGES.get("quantize").run(ctx, quantize_cfg, out / "ptq")
        ptq_acc = _val_accuracy(ctx, ptq.onnx)
        info: dict[str, Any] = {"target": cfg.target, "val_accuracy_fp32": fp32, "val_accuracy_ptq": ptq_acc}
        drop = 100 * (fp32 - ptq_acc)
        if cfg.finetune == "never" or (cfg.finetune == "auto" and drop <= cfg.max_accuracy_drop):
            info["decision"] = f"post-training {cfg.target} kept: {drop:+.2f} pt on validation"
            return StageOutput(ptq.artifact, onnx=ptq.onnx, parity=ptq.parity, extra={"retarget": info, **ptq.extra})
        source = copy.deepcopy(ctx.model)
        tuned = STAGES.get("qat").run(ctx, qat_cfg, out / "qat")
        qat_acc = _val_accuracy(ctx, tuned.onnx)
        info["val_accuracy_qat"] = qat_acc
        if qat_acc >= ptq_acc:
            info["decision"] = (
                f"fine-tuned for {cfg.target}: post-training lost {drop:.2f} pt on validation, "
                f"quantization-aware fine-tuning {100 * (fp32 - qat_acc):+.2f} pt"
            )
            return StageOutput(
                tuned.artifact, onnx=tuned.onnx, parity=tuned.parity, extra={"retarget": info, **tuned.extra}
            )
        ctx.model = source  # the fine-tune did not help: keep the post-training model
        info["decision"] = (
            f"post-training {cfg.target} kept: the fine-tune reached {100 * qat_acc:.2f}% < {100 * ptq_acc:.2f}%"
        )
        return StageOutput(ptq.artifact, onnx=ptq.onnx, parity=ptq.parity, extra={"retarget": info, **ptq.extra})


STAGES.add("retarget", RetargetStage(), help="convert to the target precision; fine-tune for it if accuracy drops")
STAGES.add("bundle", BundleStage(), help="a deploy folder: ONNX model, preprocessing, labels, report, model card")
