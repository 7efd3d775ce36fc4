"""Recipe schema: the whole YAML file is parsed and validated before any stage runs."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from slimtune._registry import did_you_mean
from slimtune.config import Config, check
from slimtune.errors import ConfigError, DataError


@dataclass(frozen=True, kw_only=True)
class DataRef(Config):
    name: str
    seed: int = 0
    limit: int | None = None
    max_length: int = 64  # token ids per text example

    def __post_init__(self) -> None:
        check(self.limit is None or self.limit >= 10, f"data.limit must be >= 10, got {self.limit}")
        check(self.max_length >= 2, f"data.max_length must be >= 2, got {self.max_length}")


@dataclass(frozen=True, kw_only=True)
class ModelRef(Config):
    """A registered architecture (``name`` + ``options``) or a saved slimtune model folder (``load``)."""

    name: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    load: str | None = None
    checkpoint: str | None = None  # a .pt state dict loaded safely into the named architecture

    def __post_init__(self) -> None:
        check((self.name is None) != (self.load is None), "model: give exactly one of 'name' or 'load'")


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


TOP_KEYS = ("name", "data", "model", "stages", "warn_drop")


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
    data = DataRef.from_dict(raw["data"], where="data")
    model = ModelRef.from_dict(raw["model"], where="model")
    if model.name is not None:
        from slimtune.models import MODELS

        MODELS.get(model.name)
    if not isinstance(raw["stages"], list) or not raw["stages"]:
        raise ConfigError(f"{source}: 'stages' must be a non-empty list")
    stages = []
    for i, entry in enumerate(raw["stages"], 1):
        if not isinstance(entry, dict) or "stage" not in entry:
            raise ConfigError(f"stages[{i}]: each stage is a mapping with a 'stage' key, e.g. 'stage: train'")
        entry = dict(entry)
        kind = entry.pop("stage")
        label = str(entry.pop("label", kind))
        stage = STAGES.get(kind)
        warn = None  # the recipe's threshold; a stage's own null turns its warning off
        if "warn_drop" in entry:
            warn = _warn_drop(entry.pop("warn_drop"), where=f"stages[{i}] ({kind})")
            warn = math.inf if warn is None else warn
        check_stage_keys(kind, entry, where=f"stages[{i}] ({kind})")  # every key, with a did-you-mean
        stages.append(StageSpec(kind, label, stage.parse(entry, where=f"stages[{i}] ({kind})"), warn_drop=warn))
    labels = [s.label for s in stages]
    dupes = {lab for lab in labels if labels.count(lab) > 1}
    if dupes:
        raise ConfigError(f"stage labels must be unique; give a 'label:' to repeated stages {sorted(dupes)}")
    warn_drop = _warn_drop(raw["warn_drop"], where=source) if "warn_drop" in raw else DEFAULT_WARN_DROP
    return Recipe(
        str(raw.get("name", Path(source).stem)), data, model, tuple(stages), source, raw=raw, warn_drop=warn_drop
    )


def load_recipe(path: str | Path) -> Recipe:
    p = Path(path)
    if not p.exists():
        raise DataError(f"recipe not found: {p}")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {str(exc).splitlines()[0]}") from None
    return parse_recipe(raw, source=str(p))
