"""Config dataclasses: frozen, keyword-only, validated, and built from plain dicts.

``from_dict`` checks every key and type before anything runs, so a recipe with a typo
fails in milliseconds with one line naming the key, not an hour into training.
"""

from __future__ import annotations

import dataclasses
import types
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from slimtune._registry import did_you_mean
from slimtune.errors import ConfigError

C = TypeVar("C", bound="Config")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """Base class. Subclasses add fields and validate them in ``__post_init__``."""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            out[f.name] = v.to_dict() if isinstance(v, Config) else (list(v) if isinstance(v, tuple) else v)
        return out

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any] | None, *, where: str = "") -> C:
        data = dict(data or {})
        where = where or cls.__name__
        hints = get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
        for key in data:
            if key not in fields:
                raise ConfigError(
                    f"{where}: unknown key '{key}'{did_you_mean(key, list(fields))}; allowed keys: {', '.join(fields)}"
                )
        kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in data.items()}
        try:
            return cls(**kwargs)
        except TypeError as exc:  # missing required field
            raise ConfigError(f"{where}: {exc}") from None


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
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        args = get_args(tp)
        item = args[0] if args else Any
        items = [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return dict(value)
    if isinstance(tp, type) and issubclass(tp, Config):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of {tp.__name__} options")
        return tp.from_dict(value, where=where)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            value = _parse_number(value, where)
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    return value


def _parse_number(value: Any, where: str) -> float:
    if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
        try:
            return float(value)
        except ValueError:
            pass
    raise ConfigError(f"{where}: expected a number, got {value!r}")


def check(cond: bool, message: str) -> None:
    """Raise ``ConfigError(message)`` unless ``cond``; for ``__post_init__`` validation."""
    if not cond:
        raise ConfigError(message)


__all__ = ["Config", "check"]
