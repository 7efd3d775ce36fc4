"""The option reference of every stage and method, generated from their config dataclasses.

``slimtune list`` prints it; the recipe schema checks each stage's keys against it before the stage parses
them (so a typo of *any* key — ``recovry`` in a prune stage — gets a "did you mean", and a key this
reference does not know cannot be accepted). Only the shape of each stage is declared here (which key
picks a method from which registry, which keys hold a nested config); every field, type and default is read
from the dataclasses themselves, so the reference cannot drift from what the code accepts.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from slimtune._registry import did_you_mean
from slimtune.config import Config
from slimtune.errors import ConfigError


@dataclass(frozen=True)
class Option:
    """One recipe key (dotted when nested: ``recovery.epochs``), its type and its default as YAML shows it."""

    key: str
    type: str
    default: str
    note: str = ""

    def line(self) -> str:
        text = f"{self.key} = {self.default}"
        return f"{text:<38} {self.type}" + (f"  ({self.note})" if self.note else "")


@dataclass(frozen=True)
class Nested:
    """A key holding a config mapping (``train: {epochs: 3}``), expanded as ``train.epochs`` and so on."""

    key: str
    cls: type[Config]
    default: Any = "class"  # None: off unless given; a Config instance: the stage's own defaults


@dataclass(frozen=True)
class Select:
    """``key`` picks a method from a registry; the method's own options sit beside it (``flat``) or under
    ``key``'s parent mapping (``kd: {method: mixed, temperature: 4}``)."""

    key: str
    registry: Any
    default: str | None
    flat: bool = True
    optional: bool = False  # the whole mapping may be left out (then: no such step)


@dataclass(frozen=True)
class Choice:
    """``key`` picks one of a few config classes (``kind: binary|ternary``) whose fields sit beside it."""

    key: str
    kinds: tuple[tuple[str, type[Config]], ...]


@dataclass(frozen=True)
class Flat:
    """A config dataclass whose fields are the stage's own top-level keys."""

    cls: type[Config]
    defaults: tuple[tuple[str, Any], ...] = ()
    renames: tuple[tuple[str, str], ...] = ()  # dataclass field → recipe key


def _yaml(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Config):
        return "{...}"
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_yaml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_yaml(v)}" for k, v in value.items()) + "}"
    return str(value)


def _type(tp: Any) -> str:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        return " | ".join(_type(a) for a in get_args(tp))
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (tuple, list):
        args = [a for a in get_args(tp) if a is not Ellipsis]
        return f"list of {_type(args[0])}" if args else "list"
    if origin is dict:
        return "mapping"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _config_type(tp: Any) -> type[Config] | None:
    """The Config dataclass a field holds (``TrainConfig | None`` → TrainConfig), None for plain values."""
    args = get_args(tp) if get_origin(tp) in (Union, types.UnionType) else (tp,)
    for arg in args:
        if isinstance(arg, type) and issubclass(arg, Config) and arg is not Config:
            return arg
    return None


def _list_of_configs(tp: Any) -> type[Config] | None:
    if get_origin(tp) not in (tuple, list):
        return None
    args = [a for a in get_args(tp) if a is not Ellipsis]
    return _config_type(args[0]) if args else None


SEE_METHOD = "the method's options sit beside it: slimtune list METHOD shows them"
FIELD_REGISTRIES = {"kd": "KD_LOSSES", "hints": "HINTS"}  # fields typed as the abstract ``Config``


def config_options(
    cls: type[Config],
    *,
    prefix: str = "",
    instance: Any = None,
    renames: dict[str, str] | None = None,
    defaults: dict[str, Any] | None = None,
) -> list[Option]:
    """Every option of ``cls`` with its default (``instance``'s values when given), nested configs flattened."""
    hints = get_type_hints(cls)
    out: list[Option] = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        key = prefix + (renames or {}).get(f.name, f.name)
        value = getattr(instance, f.name) if isinstance(instance, cls) else _default(f)
        if defaults and f.name in defaults:
            value = defaults[f.name]
        tp = hints[f.name]
        nested = _config_type(tp)
        if f.name in FIELD_REGISTRIES and nested is None:
            reg = _registry(FIELD_REGISTRIES[f.name])
            many = get_origin(tp) in (tuple, list)
            what = "list of mappings, each" if many else "mapping"
            default = _yaml(list(value)) if many else _method_default(reg, value)
            out.append(
                Option(
                    key,
                    f"{what} with a method: {', '.join(reg.names())}",
                    default,
                    "options: slimtune list METHOD shows its options",
                )
            )
        elif nested is not None:
            optional = type(None) in get_args(tp)
            if value is None or value is dataclasses.MISSING:
                note = "required" if value is dataclasses.MISSING else "null: off; a mapping turns it on"
                shown = "(required)" if value is dataclasses.MISSING else "null"
                out.append(Option(key, f"mapping ({nested.__name__})", shown, note))
                value = None
            elif optional:
                out.append(Option(key, f"mapping ({nested.__name__}) | null", "{...}", "null: off"))
            out += config_options(nested, prefix=f"{key}.", instance=value)
        elif _list_of_configs(tp) is not None:
            item = _list_of_configs(tp)
            assert item is not None
            out.append(
                Option(key, f"list of mappings ({item.__name__})", _yaml(value) if value is not None else "null")
            )
            out += config_options(item, prefix=f"{key}[].")
        else:
            default = "(required)" if value is dataclasses.MISSING else _yaml(value)
            note = f"the {f.name} stage's options" if f.name in ("quantize", "qat") and _type(tp) == "mapping" else ""
            out.append(Option(key, _type(tp), default, note))
    return out


def _method_default(reg: Any, value: Any) -> str:
    if value is None:
        return "null"
    for name in reg.names():
        if type(value) is reg.get(name):
            return f"{{method: {name}}}"
    return _yaml(value)


def _registry(name: str) -> Any:
    from slimtune import distill

    return getattr(distill, name)


def _shapes() -> dict[str, list[Any]]:
    """How each stage whose parse is not one plain ``Config.from_dict`` lays out its keys."""
    from slimtune.distill import KD_LOSSES
    from slimtune.export.onnx import ExportConfig
    from slimtune.prune import PRUNERS
    from slimtune.quantize import QUANTIZERS
    from slimtune.quantize.binary import BinaryConfig, TernaryConfig
    from slimtune.quantize.clustering import ClusterConfig
    from slimtune.quantize.mixed import MixedPrecisionConfig
    from slimtune.recipe.stages_deploy import RetargetStageConfig
    from slimtune.train.loop import TrainConfig

    return {
        "prune": [
            Select("method", PRUNERS, "magnitude"),
            Nested("train", TrainConfig, None),
            Nested("recovery", TrainConfig, None),
            Select("kd", KD_LOSSES, "mixed", flat=False, optional=True),
        ],
        "quantize": [
            Select("method", QUANTIZERS, "ort-dynamic-int8"),
            Nested("export", ExportConfig),
            Nested("mixed_precision", MixedPrecisionConfig, None),
        ],
        "compress": [
            Flat(ClusterConfig, defaults=(("dtype", "float16"),)),
            Nested("train", TrainConfig, TrainConfig(epochs=1, lr=1e-3)),
        ],
        "lowbit": [
            Choice("kind", (("binary", BinaryConfig), ("ternary", TernaryConfig))),
            Nested("train", TrainConfig, TrainConfig(epochs=3)),
        ],
        "retarget": [Flat(RetargetStageConfig)],
        "distill": [Flat(_distill_config(), renames=(("unlabeled.source", "unlabeled.from"),))],
    }


def _distill_config() -> type[Config]:
    from slimtune.recipe.stages import DistillStageConfig

    return DistillStageConfig


def _stage_shape(name: str) -> list[Any] | None:
    from slimtune.recipe.stages import STAGES

    shapes = _shapes()
    if name in shapes:
        return shapes[name]
    try:
        cls = get_type_hints(type(STAGES.get(name)).parse).get("return")
    except (NameError, TypeError):
        cls = None
    if not (isinstance(cls, type) and issubclass(cls, Config)):
        return None  # a user's stage whose parse returns something else: it checks its own keys
    return [Flat(cls)]


def stage_options(name: str) -> list[Option]:
    """Every key of stage ``name`` (``method``-selected options are listed per method: ``method_options``)."""
    out: list[Option] = []
    shape = _stage_shape(name)
    if shape is None:
        return [Option("(options)", "not described", "", "this stage's parse does not return a Config dataclass")]
    for part in shape:
        if isinstance(part, Option):
            out.append(part)
        elif isinstance(part, Choice):
            names = [k for k, _ in part.kinds]
            out.append(Option(part.key, " | ".join(repr(k) for k in names), "(required)"))
            for kind, cls in part.kinds:
                out += [dataclasses.replace(o, note=f"{part.key}: {kind}") for o in config_options(cls)]
        elif isinstance(part, Flat):
            renames, defaults = dict(part.renames), dict(part.defaults)
            options = config_options(part.cls, defaults=defaults)
            out += [dataclasses.replace(o, key=renames.get(o.key, o.key)) for o in options]
        elif isinstance(part, Nested):
            instance = part.default if isinstance(part.default, Config) else None
            if part.default is None:
                out.append(
                    Option(part.key, f"mapping ({part.cls.__name__})", "null", "null: off; a mapping turns it on")
                )
            out += config_options(part.cls, prefix=f"{part.key}.", instance=instance)
        elif isinstance(part, Select):
            kind = part.registry.kind
            if part.flat:
                out.append(
                    Option(part.key, f"one of: {', '.join(part.registry.names())}", str(part.default), SEE_METHOD)
                )
            else:
                kinds = ", ".join(part.registry.names())
                note = f"{{method: {part.default}, ...}}: slimtune list METHOD shows the rest"
                out.append(
                    Option(part.key, f"mapping with a method: {kinds}", "null" if part.optional else "{...}", note)
                )
    return out


def method_options(registry: Any, name: str) -> list[Option]:
    return config_options(registry.get(name))


def allowed_stage_keys(name: str, entry: dict[str, Any]) -> list[str] | None:
    """The top-level keys stage ``name`` takes, given the ``method`` its entry picks (None: not described)."""
    shape = _stage_shape(name)
    if shape is None:
        return None
    keys: list[str] = []
    for part in shape:
        if isinstance(part, Option):
            keys.append(part.key)
        elif isinstance(part, Choice):
            keys.append(part.key)
            chosen = [cls for kind, cls in part.kinds if kind == entry.get(part.key)] or [c for _, c in part.kinds]
            keys += [f.name for cls in chosen for f in dataclasses.fields(cls) if f.init and f.name not in keys]
        elif isinstance(part, Flat):
            renames = dict(part.renames)
            keys += [renames.get(f.name, f.name) for f in dataclasses.fields(part.cls) if f.init]
        elif isinstance(part, Nested):
            keys.append(part.key)
        elif isinstance(part, Select):
            keys.append(part.key)
            method = entry.get(part.key, part.default)
            if part.flat and not isinstance(method, str):
                return None  # a method that is not a name: the stage's own parse says what is wrong with it
            if part.flat:  # an unknown method is named first, with its did-you-mean
                keys += [f.name for f in dataclasses.fields(part.registry.get(method)) if f.init]
    return keys


def check_stage_keys(name: str, entry: dict[str, Any], *, where: str) -> None:
    """One line naming an unknown key of a stage, with the closest allowed key and all of them."""
    allowed = allowed_stage_keys(name, entry)
    if allowed is None:
        return
    for key in entry:
        if key not in allowed:
            raise ConfigError(
                f"{where}: unknown key '{key}'{did_you_mean(str(key), allowed)}; allowed keys: {', '.join(allowed)} "
                f"(slimtune list {name} shows each with its default)"
            )


def render(names: list[str] | None = None) -> str:
    """The reference as ``slimtune list`` prints it; ``names`` keeps only those stages/methods."""
    lines: list[str] = []
    for group, name, help_text, options in sections():
        if names and name not in names:
            continue
        lines.append(f"{group} {name}: {help_text}" if help_text else f"{group} {name}")
        lines += [f"    {o.line()}" for o in options] or ["    (no options)"]
    return "\n".join(lines)


def sections() -> Iterator[tuple[str, str, str, list[Option]]]:
    """``(group, name, help, options)`` for every stage and every method of every method registry."""
    from slimtune.distill import HINTS, KD_LOSSES
    from slimtune.prune import PRUNERS
    from slimtune.quantize import QUANTIZERS
    from slimtune.recipe.stages import STAGES

    for name in STAGES.names():
        yield "stage", name, STAGES.help(name), stage_options(name)
    for reg in (PRUNERS, QUANTIZERS, KD_LOSSES, HINTS):
        for name in reg.names():
            yield reg.kind, name, reg.help(name), method_options(reg, name)


__all__ = [
    "Option",
    "allowed_stage_keys",
    "check_stage_keys",
    "config_options",
    "method_options",
    "render",
    "sections",
    "stage_options",
]
