"""Config dataclasses: frozen, keyword-only, validated, and built from plain dicts.

``from_dict`` checks every key and type before anything runs, so a recipe with a typo
fails in milliseconds with one line naming the key, not an hour into training.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import types
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from slimtune._registry import did_you_mean
from slimtune.errors import ConfigError

C = TypeVar("C", bound="Config")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """Base class. Subclasses add fields and validate them in ``__post_init__``.

    Every field is checked against its annotation when the object is made, from a recipe or from Python
    (``TrainConfig(epochs='3')``, ``TrainConfig(lr=float('inf'))`` raise one-line ``ConfigError``s), after
    a subclass's own ``__post_init__`` (whose messages are more specific) has run."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("__post_init__")
        if own is not None and not getattr(own, "_checks_fields", False):

            @functools.wraps(own)
            def post_init(self: Config) -> None:
                _check_finite(self)  # NaN would slip through the class's own range checks (nan > 0 is False)
                try:  # the class's own checks first: their messages are the most specific
                    own(self)
                except ConfigError:
                    raise
                except Exception:  # e.g. '3' >= 0: a wrong type, which the field check names
                    _check_fields(self)
                    raise
                _check_fields(self)

            post_init._checks_fields = True  # type: ignore[attr-defined]
            cls.__post_init__ = post_init  # type: ignore[method-assign]

    def __post_init__(self) -> None:
        _check_fields(self)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            out[f.name] = v.to_dict() if isinstance(v, Config) else (list(v) if isinstance(v, tuple) else v)
        return out

    @classmethod
    def from_dict(cls: type[C], data: Mapping[str, Any] | None, *, where: str = "") -> C:
        where = where or cls.__name__
        if data is not None and not isinstance(data, Mapping):
            example = {"data": "{name: digits}", "model": "{name: mlp}"}.get(where, "{key: value}")
            raise ConfigError(
                f"{where}: expected a mapping of options like {example}, got {type(data).__name__} {_kind(data)}"
            )
        data = dict(data or {})
        for key in data:
            if not isinstance(key, str):
                raise ConfigError(f"{where}: option names are words, got {_kind(key)}")
        hints = _hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
        for key in data:
            if key not in fields:
                raise ConfigError(
                    f"{where}: unknown key '{key}'{did_you_mean(key, list(fields))}; allowed keys: {', '.join(fields)}"
                )
        kwargs = {k: _coerce(v, hints.get(k, Any), f"{where}.{k}") for k, v in data.items()}
        try:
            return cls(**kwargs)
        except TypeError as exc:  # missing required field
            raise ConfigError(f"{where}: {exc}") from None
        except ConfigError as exc:  # a range check in __post_init__: say where in the recipe it is
            raise ConfigError(_located(str(exc), where)) from None


def _located(message: str, where: str) -> str:
    """``message`` led by ``where`` (``stages[2] (prune): sparsity must be...``), without saying it twice."""
    if message.startswith(where):
        return message
    leaf = where.rsplit(".", 1)[-1]
    if message.startswith(leaf) and message[len(leaf) : len(leaf) + 1] in (":", ".", " "):
        return where + message[len(leaf) :]
    return f"{where}: {message}"


def _kind(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        try:
            _HINTS[cls] = get_type_hints(cls)
        except (NameError, TypeError):  # e.g. a class defined in a function: check what resolves
            _HINTS[cls] = {f.name: f.type for f in dataclasses.fields(cls) if not isinstance(f.type, str)}
    return _HINTS[cls]


def _check_finite(obj: Config) -> None:
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{type(obj).__name__}.{f.name}: {value} is not a finite number; give a finite value")


def _check_fields(obj: Config) -> None:
    """Check (and normalise: list → tuple, int → float) every field against its annotation."""
    cls = type(obj)
    hints = _hints(cls)
    for f in dataclasses.fields(obj):
        if f.name not in hints:
            continue
        value = getattr(obj, f.name)
        new = _coerce(value, hints[f.name], f"{cls.__name__}.{f.name}")
        if new is not value:
            object.__setattr__(obj, f.name, new)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} matches none of {tp}")
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            hint = did_you_mean(str(value), [str(a) for a in allowed])
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(repr, allowed))}{hint}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {_kind(value)}")
        args = get_args(tp)
        item = args[0] if args else Any
        items = [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        if all(a is b for a, b in zip(items, value, strict=True)) and isinstance(value, origin):
            return value
        return tuple(items) if origin is tuple else items
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {_kind(value)}")
        for k, v in value.items():  # keys and values are the owner's to convert (YAML keys are often strings)
            if isinstance(v, float) and not math.isfinite(v):
                raise ConfigError(f"{where}.{k}: {v} is not a finite number; give a finite value")
        return value
    if isinstance(tp, type) and issubclass(tp, Config):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(
                f"{where}: expected a mapping of {tp.__name__} options, got {type(value).__name__} {_kind(value)}"
            )
        return tp.from_dict(dict(value), where=where)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            value = _parse_number(value, where)
        if not math.isfinite(value):
            raise ConfigError(f"{where}: {value} is not a finite number; give a finite value like 0.001")
        return value if type(value) is float else float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise ConfigError(f"{where}: expected an integer, got {_kind(value)}")
        return value if type(value) is int else int(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {_kind(value)}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {_kind(value)}")
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {_kind(value)}")
    return value


def _parse_number(value: Any, where: str) -> float:
    if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
        try:
            return float(value)
        except ValueError:
            pass
    raise ConfigError(f"{where}: expected a number, got {_kind(value)}")


def check(cond: bool, message: str) -> None:
    """Raise ``ConfigError(message)`` unless ``cond``; for ``__post_init__`` validation."""
    if not cond:
        raise ConfigError(message)


__all__ = ["Config", "check"]
