"""Recipe stages: each parses its own options (validated up front) and runs over a shared context.
A stage adapts a library verb (``fit``, ``prune_``, distillation, export, quantize) — no logic lives here
that the Python API lacks."""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from slimtune._registry import Registry, did_you_mean
from slimtune.config import Config
from slimtune.data.core import DataSplits
from slimtune.distill import (
    HINTS,
    KD_LOSSES,
    DistillationTask,
    KDConfig,
    StudentConfig,
    UnlabeledConfig,
    build_student,
    distill_,
)
from slimtune.distill.unlabeled import unlabeled_data
from slimtune.distill.views import ViewsConfig
from slimtune.errors import ConfigError
from slimtune.evaluate.size import layer_sparsity, layer_weights
from slimtune.export.onnx import ExportConfig, check_parity, export_onnx, parity
from slimtune.models import build, save_model
from slimtune.models.serialization import get_spec
from slimtune.prune import PRUNERS, MaskCallback, apply_masks_, masks_from_zeros, prune_summarized_
from slimtune.quantize import QUANTIZERS, QATCallback, QATConfig, export_qat_onnx, prepare_qat_
from slimtune.quantize.mixed import MixedPrecisionConfig, quantize_model
from slimtune.recipe.stages_lm_quant import LMQuantizeStage, LMQuantizeStageConfig, is_lm_method
from slimtune.train.loop import TrainConfig, fit


@dataclass
class Context:
    data: DataSplits
    model: nn.Module
    resume: bool = False
    progress: bool | None = None
    masks: dict[str, torch.Tensor] | None = None  # pruning masks that later training must keep
    onnx: Path | None = None  # the latest checked ONNX artefact of the current model (int8, QDQ, fp32)
    onnx_parity: dict[str, float] | None = None
    measure: Any = None  # causal LMs: what each row measures (slimtune.recipe.lm.LMMeasureConfig)


@dataclass
class StageOutput:
    artifact: Path
    model: nn.Module | None = None  # the new torch model, when the stage produced one
    onnx: Path | None = None  # an ONNX artefact to measure in ONNX Runtime instead
    parity: dict[str, float] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Stage(Protocol):
    def parse(self, raw: dict[str, Any], *, where: str) -> Any: ...
    def run(self, ctx: Context, cfg: Any, out: Path) -> StageOutput: ...


STAGES: Registry[Stage] = Registry("stage")


def _train(
    ctx: Context, model: nn.Module, cfg: TrainConfig, out: Path, *, desc: str, task: Any = None, extra: Any = ()
) -> None:
    callbacks = [*extra, *([MaskCallback(ctx.masks)] if ctx.masks else [])]
    fit(
        model,
        ctx.data,
        config=cfg,
        task=task,
        callbacks=callbacks,
        checkpoint_dir=out / "checkpoints",
        resume=ctx.resume,
        progress=ctx.progress,
        desc=desc,
    )


def _save(model: nn.Module, out: Path) -> Path:
    return save_model(model, out / "model")


@dataclass(frozen=True, kw_only=True)
class TrainStageConfig(Config):
    train: TrainConfig = TrainConfig()


class TrainStage:
    """Train (or fine-tune) the current model on the recipe's data."""

    def parse(self, raw: dict[str, Any], *, where: str) -> TrainStageConfig:
        return TrainStageConfig.from_dict(raw, where=where)

    def run(self, ctx: Context, cfg: TrainStageConfig, out: Path) -> StageOutput:
        _train(ctx, ctx.model, cfg.train, out, desc="train")
        return StageOutput(_save(ctx.model, out), model=ctx.model)


@dataclass(frozen=True)
class PruneStageConfig:
    method: str
    config: Config
    train: TrainConfig | None  # training while pruning, for methods that need it (movement, gradual, L1)
    recovery: TrainConfig | None  # fine-tuning after pruning, with the zeros held
    kd: Config | None = None  # recovery distilled from the model as it was before pruning


def check_keys(raw: dict[str, Any], cls: Any, stage_keys: tuple[str, ...], *, where: str) -> None:
    """Unknown keys of a stage whose options are a method's config plus the stage's own keys: the
    "did you mean" and the allowed list cover both (``recovry`` → 'recovery')."""
    allowed = [*(f.name for f in dataclasses.fields(cls) if f.init), *stage_keys]
    for key in raw:
        if key not in allowed:
            hint = did_you_mean(str(key), allowed)
            raise ConfigError(f"{where}: unknown key '{key}'{hint}; allowed keys: {', '.join(allowed)}")


def _parse_kd(kd: Any, *, where: str) -> Config:
    """``kd: {method: soft|hard|mixed|logits, temperature, alpha}`` (mixed by default) as a loss config."""
    if not isinstance(kd, dict):
        raise ConfigError(f"{where}.kd: expected a mapping like {{temperature: 4, alpha: 0.5}}")
    kd = dict(kd)
    return KD_LOSSES.get(str(kd.pop("method", "mixed"))).from_dict(kd, where=f"{where}.kd")


def _teacher_task(ctx: Context, kd: Config | None) -> DistillationTask | None:
    """A distillation task whose teacher is a frozen copy of the current model (before this stage changes it)."""
    return None if kd is None else DistillationTask(copy.deepcopy(ctx.model), kd)


class PruneStage:
    """Prune by a registered method, then recover accuracy by fine-tuning with the zeros held (``kd``: distilled
    from the model as it entered the stage)."""

    def parse(self, raw: dict[str, Any], *, where: str) -> PruneStageConfig:
        raw = dict(raw)
        method = raw.pop("method", "magnitude")
        train, recovery, kd = raw.pop("train", None), raw.pop("recovery", None), raw.pop("kd", None)
        check_keys(raw, PRUNERS.get(method), ("method", "train", "recovery", "kd"), where=where)
        cfg = PRUNERS.get(method).from_dict(raw, where=where)
        if kd is not None and recovery is None:
            raise ConfigError(f"{where}.kd: distillation runs during recovery; add recovery: {{epochs: 1}}")
        return PruneStageConfig(
            method,
            cfg,
            TrainConfig.from_dict(train, where=f"{where}.train") if train is not None else None,
            TrainConfig.from_dict(recovery, where=f"{where}.recovery") if recovery is not None else None,
            _parse_kd(kd, where=where) if kd is not None else None,
        )

    def run(self, ctx: Context, cfg: PruneStageConfig, out: Path) -> StageOutput:
        if ctx.masks:  # zeros from an earlier stage stay zero while this method trains
            apply_masks_(ctx.model, ctx.masks)
        task = _teacher_task(ctx, cfg.kd)
        done = prune_summarized_(
            ctx.model, cfg.config, data=ctx.data, train=cfg.train, progress=ctx.progress,
            checkpoint_dir=out / "checkpoints" / "prune", resume=ctx.resume,
        )  # fmt: skip
        ctx.masks = masks_if_sparse(ctx.model)
        if cfg.recovery is not None:
            _train(ctx, ctx.model, cfg.recovery, out, desc="recover", task=task)
        extra: dict[str, Any] = {"prune": done.record, **({"prune_groups": done.groups} if done.groups else {})}
        extra.update(layer_sparsity=layer_sparsity(ctx.model), layer_weights=layer_weights(ctx.model))
        return StageOutput(_save(ctx.model, out), model=ctx.model, extra=extra)


def masks_if_sparse(model: nn.Module) -> dict[str, torch.Tensor] | None:
    masks = masks_from_zeros(model)
    zeros = sum(int((~m).sum()) for m in masks.values())
    return masks if zeros > 0.01 * sum(m.numel() for m in masks.values()) else None


@dataclass(frozen=True, kw_only=True)
class StudentRef(Config):
    """A registered model (``name`` + ``options``) or a student cut from the teacher (``from_teacher``)."""

    name: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    from_teacher: StudentConfig | None = None

    def __post_init__(self) -> None:
        if (self.name is None) == (self.from_teacher is None):
            raise ConfigError(
                "student: give a registered model 'name' (and 'options') or 'from_teacher: {layers: [0, 2, 4]}'"
            )
        if self.from_teacher is not None and self.options:
            raise ConfigError(
                "student: 'options' go with 'name'; from_teacher takes layers, keep_every, hidden, heads_ratio or "
                "ffn_ratio"
            )


@dataclass(frozen=True, kw_only=True)
class DistillStageConfig(Config):
    student: StudentRef
    kd: Config = KDConfig()  # kd: {method: soft|hard|mixed, temperature, alpha}; mixed by default
    hints: tuple[Config, ...] = ()  # [{method: feature, pairs: {...}}, {method: attention, layers: {...}}]
    cache: bool = True  # teacher logits over the training split computed once, kept in the stage folder
    unlabeled: UnlabeledConfig | None = None  # {from: train|augment, min_confidence, soft, copies, labels}
    views: ViewsConfig | None = None  # {max_shift: 2, noise: 0.0, mixup: 1.0}: teacher labels each augmented view
    train: TrainConfig = TrainConfig()


class DistillStage:
    """Train a new student from the current model's outputs; the student becomes the current model."""

    def parse(self, raw: dict[str, Any], *, where: str) -> DistillStageConfig:
        raw = dict(raw)
        raw["kd"] = _parse_kd(raw.pop("kd", None) or {}, where=where)
        hints = raw.pop("hints", None) or []
        if not isinstance(hints, list):
            raise ConfigError(f"{where}.hints: expected a list of mappings, each with a 'method'")
        raw["hints"] = [_parse_hint(h, where=f"{where}.hints[{i}]") for i, h in enumerate(hints)]
        unlabeled = raw.get("unlabeled")
        if isinstance(unlabeled, dict) and "from" in unlabeled:
            raw["unlabeled"] = {("source" if k == "from" else k): v for k, v in unlabeled.items()}
        return DistillStageConfig.from_dict(raw, where=where)

    def run(self, ctx: Context, cfg: DistillStageConfig, out: Path) -> StageOutput:
        torch.manual_seed(cfg.train.seed)
        student = _student(ctx, cfg.student)
        data = ctx.data if cfg.unlabeled is None else unlabeled_data(ctx.model, ctx.data, cfg.unlabeled)
        ctx.masks = None  # the student is a new, dense model
        distill_(
            student, teacher=ctx.model, data=data, config=cfg.kd, hints=cfg.hints, train=cfg.train,
            cache=out / "teacher_logits.safetensors" if cfg.cache and cfg.views is None else False, views=cfg.views,
            checkpoint_dir=out / "checkpoints", resume=ctx.resume, progress=ctx.progress,
        )  # fmt: skip
        ctx.model = student
        return StageOutput(_save(student, out), model=student, extra={"distill_train_examples": len(data.train)})


def _parse_hint(raw: Any, *, where: str) -> Config:
    if not isinstance(raw, dict) or "method" not in raw:
        raise ConfigError(f"{where}: each hint is a mapping with a 'method' ({', '.join(HINTS.names())})")
    raw = dict(raw)
    return HINTS.get(str(raw.pop("method"))).from_dict(raw, where=where)


def _student(ctx: Context, ref: StudentRef) -> nn.Module:
    if ctx.data.kind == "lm":
        from slimtune.recipe.lm import lm_student_for

        return lm_student_for(ctx.model, ref.name, ref.options, ref.from_teacher)
    if ref.from_teacher is not None:
        return build_student(ctx.model, ref.from_teacher)
    assert ref.name is not None
    data = ctx.data
    teacher_spec: dict[str, Any] = getattr(ctx.model, "slimtune_spec", {})
    options = dict(ref.options)
    if data.kind == "text" and "vocab_size" in teacher_spec.get("options", {}):
        options.setdefault("vocab_size", teacher_spec["options"]["vocab_size"])
    student = build(ref.name, input_shape=data.input_shape, num_classes=data.num_classes, **options)
    if "preprocess" in teacher_spec:  # the student reads the same tokenized inputs
        get_spec(student)["preprocess"] = teacher_spec["preprocess"]
    return student


class ExportStage:
    """Export the current model to ONNX (fp32) and check parity with PyTorch on the test split."""

    def parse(self, raw: dict[str, Any], *, where: str) -> ExportConfig:
        return ExportConfig.from_dict(raw, where=where)

    def run(self, ctx: Context, cfg: ExportConfig, out: Path) -> StageOutput:
        x = _tensor(ctx.data.test.x)
        path = export_onnx(ctx.model, x[:1], out / "model.onnx", opset=cfg.opset, external_data=cfg.external_data,
                           optimize=cfg.optimize)  # fmt: skip
        par = parity(ctx.model, path, x, ctx.data.test.y)
        check_parity(
            par,
            what="fp32 export",
            max_abs_diff=cfg.max_abs_diff,
            min_argmax_agreement=cfg.min_argmax_agreement,
            max_accuracy_drop=cfg.max_accuracy_drop,
        )
        return StageOutput(path, onnx=path, parity=par)


@dataclass(frozen=True)
class QuantizeStageConfig:
    method: str
    config: Config
    export: ExportConfig
    mixed_precision: MixedPrecisionConfig | None = None


class QuantizeStage:
    """Export to ONNX, quantize to int8 with ONNX Runtime (the most sensitive layers kept fp32 with
    ``mixed_precision: {max_fp32_layers: 2}`` or ``{min_sqnr_db: 20}``), and check int8 parity."""

    def parse(self, raw: dict[str, Any], *, where: str) -> Any:
        if is_lm_method(raw.get("method")):  # rtn|hqq|gptq|awq: weight-only LM quantization + MatMulNBits
            return LMQuantizeStage().parse(raw, where=where)
        raw = dict(raw)
        method = raw.pop("method", "ort-dynamic-int8")
        check_keys(raw, QUANTIZERS.get(method), ("method", "export", "mixed_precision"), where=where)
        export = ExportConfig.from_dict(raw.pop("export", None), where=f"{where}.export")
        mixed = raw.pop("mixed_precision", None)
        mixed_cfg = None if mixed is None else MixedPrecisionConfig.from_dict(mixed, where=f"{where}.mixed_precision")
        config = QUANTIZERS.get(method).from_dict(raw, where=where)
        if mixed_cfg is not None and not hasattr(config, "exclude_layers"):
            raise ConfigError(f"{where}: method '{method}' cannot keep layers in fp32: remove mixed_precision")
        return QuantizeStageConfig(method, config, export, mixed_cfg)

    def run(self, ctx: Context, cfg: QuantizeStageConfig, out: Path) -> StageOutput:
        if isinstance(cfg, LMQuantizeStageConfig):
            return LMQuantizeStage().run(ctx, cfg, out)  # type: ignore[no-any-return]
        x = _tensor(ctx.data.test.x)
        int8 = out / "model.int8.onnx"
        calibration = _tensor(ctx.data.calibration(min(len(ctx.data.train), 1024)).x)
        info = quantize_model(
            ctx.model, int8, cfg.config, example=x[:1], calibration=calibration,
            mixed_precision=cfg.mixed_precision, opset=cfg.export.opset, verify=False,
        )  # fmt: skip
        info.pop("precision")  # the report reads each layer's precision from the graph itself
        extra: dict[str, Any] = {"quantization": {"method": cfg.method, **info}}
        if "mixed_precision" in info:
            extra["mixed_precision"] = extra["quantization"].pop("mixed_precision")
        par = _int8_parity(ctx, int8, x, cfg.export, what="int8 model")
        return StageOutput(int8, onnx=int8, parity=par, extra=extra)


@dataclass(frozen=True, kw_only=True)
class QATStageConfig(Config):
    qat: QATConfig = QATConfig()
    train: TrainConfig = TrainConfig(epochs=2, lr=1e-4)
    export: ExportConfig = ExportConfig()
    kd: Config | None = None  # QAT distilled from the fp32 model as it entered the stage


class QATStage:
    """Quantization-aware training on the one loop (zeros from pruning held; ``kd``: distilled from the fp32
    model as it entered the stage), exported as an int8 QDQ graph."""

    def parse(self, raw: dict[str, Any], *, where: str) -> QATStageConfig:
        raw = dict(raw)
        kd = raw.pop("kd", None)
        cfg = QATStageConfig.from_dict(raw, where=where)
        return cfg if kd is None else dataclasses.replace(cfg, kd=_parse_kd(kd, where=where))

    def run(self, ctx: Context, cfg: QATStageConfig, out: Path) -> StageOutput:
        x = _tensor(ctx.data.test.x)
        calibration = _tensor(ctx.data.calibration(min(len(ctx.data.train), 256)).x)
        task = _teacher_task(ctx, cfg.kd)
        prepare_qat_(ctx.model, cfg.qat, calibration=calibration)
        _train(ctx, ctx.model, cfg.train, out, desc="qat", task=task, extra=[QATCallback(cfg.qat)])
        path = export_qat_onnx(ctx.model, x[:1], out / "model.int8.onnx", opset=max(cfg.export.opset, 13))
        par = _int8_parity(ctx, path, x, cfg.export, what="QAT int8 model")
        return StageOutput(path, onnx=path, parity=par, extra={"quantization": {"method": "qat", **cfg.qat.to_dict()}})


def _int8_parity(ctx: Context, path: Path, x: torch.Tensor, export: ExportConfig, *, what: str) -> dict[str, float]:
    """int8 parity: logits may move by quantization steps, so agreement and accuracy are what must hold."""
    par = parity(ctx.model, path, x, ctx.data.test.y)
    check_parity(
        par,
        what=what,
        max_abs_diff=None,
        min_argmax_agreement=export.min_argmax_agreement,
        max_accuracy_drop=export.max_accuracy_drop,
    )
    return par


def _tensor(x: torch.Tensor | list[str]) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise ConfigError("this stage needs tensor inputs; text must be tokenized first")
    return x


STAGES.add("train", TrainStage(), help="train or fine-tune the current model")
STAGES.add("prune", PruneStage(), help="prune by any registered method, then recovery fine-tuning (kd: distilled)")
STAGES.add("distill", DistillStage(), help="distil the current model into a smaller student")
STAGES.add("export", ExportStage(), help="export to ONNX fp32 with a parity check")
STAGES.add("quantize", QuantizeStage(), help="int8 in ONNX Runtime with a parity check")
STAGES.add("qat", QATStage(), help="quantization-aware training (kd: distilled), int8 QDQ ONNX with a parity check")
from slimtune.recipe import stages_compress as _stages_compress  # noqa: E402,F401  (registers compress, lowbit)
from slimtune.recipe import stages_deploy as _stages_deploy  # noqa: E402,F401  (registers deployment stages)
from slimtune.recipe import stages_lm as _stages_lm  # noqa: E402,F401  (registers evaluate, lm-export, lm-bundle)
from slimtune.recipe import stages_search as _stages_search  # noqa: E402,F401  (registers the search stage)
from slimtune.recipe import stages_transfer as _stages_transfer  # noqa: E402,F401  (registers finetune, multitask)
