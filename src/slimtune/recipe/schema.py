"""Recipe schema: the whole YAML file is parsed and validated before any stage runs."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slimtune._registry import did_you_mean
from slimtune.config import Config, check
from slimtune.errors import ConfigError, DataError


@dataclass(frozen=True, kw_only=True)
class DataRef(Config):
    """A dataset name or a user data path, plus the options of ``slimtune.data.load_path`` for user files
    (CLI: ``--data-option key=value``)."""

    name: str
    seed: int = 0
    limit: int | None = None
    max_length: int = 64  # token ids per text example
    text_column: str | None = None  # CSV/TSV/JSONL: the text column (default: text or a common alias)
    label_column: str | None = None  # ... the label column (default: label or a common alias)
    labels: list[str | int] | None = None  # the expected class names, in id order; other labels are errors
    label_map: dict[Any, Any] | None = None  # raw label → class name, e.g. {0: negative, 1: positive}
    drop_empty: bool = False  # drop rows with an empty text or label (counted) instead of failing
    min_class_rows: int | None = None  # a class in fewer rows is an error (merged rows); default 3
    image_size: int | list[int] | None = None  # image folders: resize to [height, width] (or a square side)
    window: int | None = None  # causal LMs: tokens per window (default 128); limit counts windows per split
    packing: bool = False  # causal LMs: concatenate documents into windows (else one document per window)

    def __post_init__(self) -> None:
        check(self.limit is None or self.limit >= 10, f"data.limit must be >= 10, got {self.limit}")
        check(self.max_length >= 2, f"data.max_length must be >= 2, got {self.max_length}")
        check(self.window is None or self.window >= 2, f"data.window must be >= 2 tokens, got {self.window}")
        check(self.min_class_rows is None or self.min_class_rows >= 1,
              f"data.min_class_rows must be >= 1, got {self.min_class_rows}")  # fmt: skip
        size = self.image_size
        check(size is None or (isinstance(size, int) and size > 0)
              or (isinstance(size, list) and len(size) == 2 and all(v > 0 for v in size)),
              f"data.image_size must be a positive int or [height, width], got {size!r}")  # fmt: skip
        for raw, name in (self.label_map or {}).items():
            ok = isinstance(raw, (str, int)) and isinstance(name, (str, int)) and not isinstance(name, bool)
            check(ok, f"data.label_map: map raw labels to class names ({{0: negative}}), got {raw!r}: {name!r}")

        if self.file_options():
            from slimtune.data import CORPORA, DATASETS

            check(self.name not in DATASETS and self.name not in CORPORA,
                  f"data: {', '.join(self.file_options())} only apply to your own data files, not to dataset "
                  f"'{self.name}'; remove them or give a file path")  # fmt: skip

    def file_options(self) -> dict[str, Any]:
        """The user-file options that were set, as keywords of ``slimtune.data.load``."""
        keys = ("text_column", "label_column", "labels", "label_map", "drop_empty", "min_class_rows", "image_size")
        out = {k: getattr(self, k) for k in keys if getattr(self, k) not in (None, False)}
        if self.labels is not None:
            out["labels"] = [str(v) for v in self.labels]
        return out


@dataclass(frozen=True, kw_only=True)
class ModelRef(Config):
    """A registered architecture (``name`` + ``options``) or a saved slimtune model folder (``load``)."""

    name: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    load: str | None = None
    checkpoint: str | None = None  # a .pt state dict loaded safely into the named architecture

    def __post_init__(self) -> None:
        check((self.name is None) != (self.load is None), "model: give exactly one of 'name' or 'load'")
        check(self.load is None or not self.options, "model.options: a saved model (load) keeps its own; drop them")
        check(
            self.load is None or self.checkpoint is None,
            "model.checkpoint: loads weights into a named architecture; use it with 'name', not 'load'",
        )


DEFAULT_WARN_DROP = 2.0  # points of accuracy one stage may lose (vs the stage before it) before the run warns


@dataclass(frozen=True)
class StageSpec:
    kind: str
    label: str
    config: Any
    warn_drop: float | None = None  # this stage's own accuracy-drop warning threshold (points), else the recipe's


@dataclass(frozen=True)
class Recipe:
    name: str
    data: DataRef
    model: ModelRef
    stages: tuple[StageSpec, ...]
    source: str = "<dict>"
    raw: dict[str, Any] = field(default_factory=dict, compare=False)
    warn_drop: float | None = DEFAULT_WARN_DROP  # points a stage may lose before the log and report warn
    measure: Any = None  # causal LMs: what each row measures (slimtune.recipe.lm.LMMeasureConfig)

    @property
    def is_lm(self) -> bool:
        return self.measure is not None


TOP_KEYS = ("name", "data", "model", "stages", "warn_drop", "measure")


def _warn_drop(value: Any, *, where: str) -> float | None:
    """``warn_drop``: points of accuracy (a number >= 0), or null for no accuracy-drop warnings."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise ConfigError(f"{where}: warn_drop must be a number of points >= 0 (e.g. 2.0) or null, got {value!r}")
    return float(value)


def parse_recipe(raw: Any, *, source: str = "<dict>") -> Recipe:
    from slimtune.recipe.reference import check_stage_keys
    from slimtune.recipe.stages import STAGES

    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: a recipe must be a mapping with keys {', '.join(TOP_KEYS)}")
    for key in raw:
        if key not in TOP_KEYS:
            raise ConfigError(f"{source}: unknown key '{key}'{did_you_mean(str(key), list(TOP_KEYS))}")
    for key in ("data", "model", "stages"):
        if key not in raw:
            raise ConfigError(f"{source}: missing required key '{key}'")
    if not isinstance(raw.get("name", ""), str):
        raise ConfigError(f"name: the recipe's name is a string, got {type(raw['name']).__name__}")
    data = DataRef.from_dict(raw["data"], where="data")
    model = ModelRef.from_dict(raw["model"], where="model")
    if model.name is not None:
        check_model_options(model.name, model.options, where="model")
    from slimtune.recipe.lm import LMMeasureConfig, is_lm_ref, lm_quantize_entry, lm_stage_kind

    lm = is_lm_ref(model)
    if "measure" in raw and not lm:
        raise ConfigError(f"{source}: 'measure' sets what causal-LM rows measure; this recipe's model is no LM")
    measure = LMMeasureConfig.from_dict(raw.get("measure") or {}, where="measure") if lm else None
    if not isinstance(raw["stages"], list) or not raw["stages"]:
        raise ConfigError(f"{source}: 'stages' must be a non-empty list")
    stages = []
    for i, entry in enumerate(raw["stages"], 1):
        if not isinstance(entry, dict) or "stage" not in entry:
            raise ConfigError(f"stages[{i}]: each stage is a mapping with a 'stage' key, e.g. 'stage: train'")
        entry = dict(entry)
        kind = entry.pop("stage")
        if not isinstance(kind, str):
            raise ConfigError(f"stages[{i}].stage: a stage name is a word like 'train', got {type(kind).__name__}")
        label = _label(entry.pop("label", kind), where=f"stages[{i}] ({kind}).label")
        where = f"stages[{i}] ({kind})"
        warn = None  # the recipe's threshold; a stage's own null turns its warning off
        if "warn_drop" in entry:
            warn = _warn_drop(entry.pop("warn_drop"), where=where)
            warn = math.inf if warn is None else warn
        if lm:  # an LM recipe's export/bundle run their LM variants; stages without LM support are refused
            kind = lm_stage_kind(kind, where=where)
        if not (lm and lm_quantize_entry(kind, entry, where=where)):  # LM quantize methods check their own keys
            check_stage_keys(kind, entry, where=where)  # every key, with a did-you-mean
        try:
            config = STAGES.get(kind).parse(entry, where=where)
            student: Any = getattr(config, "student", None)  # a model the stage builds (distill's student)
            if getattr(student, "name", None) is not None:
                check_model_options(student.name, student.options, where=f"{where}.student")
        except ConfigError as exc:  # every stage error names its stage
            raise ConfigError(str(exc) if str(exc).startswith(f"stages[{i}]") else f"{where}: {exc}") from None
        stages.append(StageSpec(kind, label, config, warn_drop=warn))
    labels = [s.label for s in stages]
    dupes = {lab for lab in labels if labels.count(lab) > 1}
    if dupes:
        raise ConfigError(f"stage labels must be unique; give a 'label:' to repeated stages {sorted(dupes)}")
    warn_drop = _warn_drop(raw["warn_drop"], where=source) if "warn_drop" in raw else DEFAULT_WARN_DROP
    return Recipe(
        str(raw.get("name", Path(source).stem)),
        data,
        model,
        tuple(stages),
        source,
        raw=raw,
        warn_drop=warn_drop,
        measure=measure,
    )


def _label(value: Any, *, where: str) -> str:
    """A stage label names its output folder: a plain name."""
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise ConfigError(f"{where}: a label is a short name like 'teacher', got {type(value).__name__}")
    label = str(value)
    if not label.strip() or label.startswith(".") or any(c in label for c in '/\\:*?"<>|') or len(label) > 100:
        raise ConfigError(f"{where}: {label!r} cannot name a folder; use letters, digits, '-' and '_'")
    return label


def check_model_options(name: Any, options: dict[str, Any], *, where: str) -> None:
    """A registered model's options are checked against its builder before anything runs."""
    import inspect

    from slimtune.models import CAUSAL_LMS, MODELS

    if not isinstance(name, str):
        raise ConfigError(f"{where}.name: a model name is a word like 'mlp', got {type(name).__name__}")
    builder = CAUSAL_LMS.get(name) if name in CAUSAL_LMS else MODELS.get(name)
    try:
        params = inspect.signature(builder).parameters
    except (TypeError, ValueError):
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    allowed = [
        k for k, p in params.items() if k not in ("input_shape", "num_classes") and p.kind is not p.VAR_POSITIONAL
    ]
    for key in options:
        if key not in allowed:
            hint = did_you_mean(str(key), allowed)
            listed = f"its options: {', '.join(allowed)}" if allowed else "it takes no options"
            raise ConfigError(f"{where}.options: model '{name}' has no option '{key}'{hint}; {listed}")


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a recipe file; an error names the recipe path and, where known, its line/column."""
    from slimtune.recipe.yamlio import locate, read_yaml

    p = Path(path)
    if not p.exists():
        raise DataError(f"recipe not found: {p}")
    raw, positions = read_yaml(p)
    try:
        return parse_recipe(raw, source=str(p))
    except ConfigError as exc:
        raise ConfigError(locate(str(exc), positions, str(p))) from None
