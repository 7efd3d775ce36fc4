"""Run a recipe: sequencing, output folders, resume and the report. Stages do the work."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from torch import nn

from slimtune._io import check_out_dir, prepare_out_dir, record_outputs, write_text
from slimtune._outputs import check_inputs_clear, record_files
from slimtune.errors import ConfigError, TrainingDivergedError
from slimtune.evaluate.report import Report, StageRow
from slimtune.evaluate.report_warnings import check_accuracy_drop
from slimtune.export.bundle import finish_bundle
from slimtune.recipe.measure import measure_onnx, measure_torch
from slimtune.recipe.schema import Recipe, load_recipe
from slimtune.recipe.stages import STAGES, Context, StageOutput

STAGE_DONE = "stage.json"
RECIPE_COPY = "recipe.json"
REPORT_FILES = ("report.json", "report.md", "report.html")


def run_recipe(
    recipe: Recipe | str | Path,
    out: str | Path,
    *,
    force: bool = False,
    resume: bool = False,
    progress: bool | None = None,
    log: Any = None,
) -> Report:
    """Run every stage in order, one subfolder each; write report.json/.md/.html into ``out``."""
    from slimtune import env as envinfo
    from slimtune.models.inputs import load_data, load_start_model

    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe)
    say = log or (lambda msg: None)
    # nothing is created before the data and the model have loaded: a typo leaves no folder behind
    check_out_dir(out, force=force, resume=resume)
    inputs = recipe_inputs(recipe)
    stage_dirs = [f"{i:02d}-{spec.label}" for i, spec in enumerate(recipe.stages, 1)]
    check_inputs_clear(Path(out), [RECIPE_COPY, *REPORT_FILES, *stage_dirs], inputs)
    if recipe.is_lm:  # a causal LM first: its tokenizer packs the corpus into windows
        from slimtune.recipe.lm import load_lm_inputs

        data, model = load_lm_inputs(recipe.data, recipe.model)
        say(f"data: {data.summary()}")
    else:
        data, preprocess = load_data(recipe.data, recipe.model)
        say(f"data: {data.summary()}")
        model = load_start_model(recipe.model, data, preprocess)
    out_dir = prepare_out_dir(out, force=force, resume=resume, inputs=inputs)
    record_outputs(out_dir, RECIPE_COPY)
    _check_same_recipe(out_dir / RECIPE_COPY, recipe, resume=resume)
    ctx = Context(data=data, model=model, resume=resume, progress=progress, measure=recipe.measure)
    report = Report(env=envinfo.collect())
    for i, spec in enumerate(recipe.stages, 1):
        stage_dir = out_dir / stage_dirs[i - 1]
        record_outputs(out_dir, stage_dir.name)
        done = stage_dir / STAGE_DONE
        raw_stage = recipe.raw["stages"][i - 1] if recipe.raw else {}
        if resume and done.exists():
            row = _restore(ctx, done, raw_stage)
            say(f"[{i}/{len(recipe.stages)}] {spec.label}: already done, loaded from {stage_dir}")
        else:
            say(f"[{i}/{len(recipe.stages)}] {spec.label} ...")
            t0 = time.perf_counter()
            stage_dir.mkdir(parents=True, exist_ok=True)
            try:
                result = STAGES.get(spec.kind).run(ctx, spec.config, stage_dir)
            except TrainingDivergedError as exc:
                raise TrainingDivergedError(f"stage '{spec.label}' ({spec.kind}): {exc}") from None
            if result.model is not None:
                ctx.model = result.model
            if result.onnx is not None or result.model is not None:  # a new model makes older ONNX stale
                ctx.onnx, ctx.onnx_parity = result.onnx, result.parity
            row = _measure(spec.label, result, ctx)
            limit = spec.warn_drop if spec.warn_drop is not None else recipe.warn_drop
            warning = check_accuracy_drop(row, report.rows[-1] if report.rows else None, limit=limit)
            if warning:
                say(f"WARNING: {warning}")
            row.artifact = os.path.relpath(result.artifact, out_dir)  # the output folder can move
            row.extra["seconds"] = round(time.perf_counter() - t0, 2)
            saved = {"row": row.to_dict(), "has_model": result.model is not None, "stage": raw_stage}
            write_text(done, json.dumps(saved, indent=2, default=str))
            shutil.rmtree(stage_dir / "checkpoints", ignore_errors=True)  # the stage is done: free the disk
            record_files(out_dir, stage_dir.name)
        report.add(row)
    record_outputs(out_dir, *REPORT_FILES)
    report.write(out_dir)
    for row in report.rows:  # bundles get the finished report and a model card
        if "bundle" in row.extra:
            finish_bundle(out_dir / row.extra["bundle"], report)
    record_files(out_dir, *stage_dirs)  # bundles got their report and model card
    return report


def recipe_inputs(recipe: Recipe) -> list[Path]:
    """Files and folders the recipe reads (its own file, data, ``load``/``checkpoint`` models, task data):
    every string in it that names an existing path. ``--force`` never removes or writes over them."""
    found: list[Path] = []
    if recipe.source != "<dict>" and Path(recipe.source).exists():
        found.append(Path(recipe.source))

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, (list, tuple)):
            for v in value:
                walk(v)
        elif isinstance(value, str) and value.strip() and len(value) < 4096:
            try:
                if Path(value).expanduser().exists():
                    found.append(Path(value).expanduser())
            except (OSError, ValueError):
                pass

    walk(recipe.raw or {"data": recipe.data.to_dict(), "model": recipe.model.to_dict()})
    return found


def _check_same_recipe(path: Path, recipe: Recipe, *, resume: bool) -> None:
    """Keep the recipe beside its outputs; refuse to resume a folder made from other data or another model.
    (Stages are checked one by one in ``_restore``, so appending stages to a finished run is fine.)"""
    if resume and path.exists():
        before = json.loads(path.read_text())
        for key in ("data", "model"):
            if before.get(key) != recipe.raw.get(key):
                raise ConfigError(
                    f"cannot resume in '{path.parent}': it was made by a recipe with a different '{key}' section; "
                    "use a new --out or --force"
                )
    write_text(path, json.dumps(recipe.raw, indent=2, default=str))


def _measure(label: str, result: StageOutput, ctx: Context) -> StageRow:
    if ctx.data.kind == "lm":
        from slimtune.recipe.lm import measure_lm_stage

        row = measure_lm_stage(label, result, ctx)
    elif result.onnx is not None:
        row = measure_onnx(label, result.onnx, ctx.model, ctx.data, parity=result.parity)
    else:
        row = measure_torch(label, ctx.model, ctx.data, artifact=result.artifact)
    row.extra.update(result.extra)
    return row


def _restore(ctx: Context, done: Path, raw_stage: dict[str, Any]) -> StageRow:
    from slimtune.models import load_model
    from slimtune.recipe.stages import masks_if_sparse

    saved = json.loads(done.read_text())
    if saved.get("stage") != json.loads(json.dumps(raw_stage, default=str)):
        raise ConfigError(
            f"cannot resume: stage '{done.parent.name}' was run with other options than the recipe now gives; "
            "use a new --out or --force"
        )
    if saved["has_model"]:
        model: nn.Module = load_model(done.parent / "model")
        ctx.model = model
        ctx.masks = masks_if_sparse(model)
        ctx.onnx, ctx.onnx_parity = None, None
    artifact = saved["row"].get("artifact")
    if artifact and str(artifact).endswith(".onnx"):
        ctx.onnx, ctx.onnx_parity = done.parent.parent / artifact, saved["row"].get("parity")
    return StageRow.from_dict(saved["row"])
