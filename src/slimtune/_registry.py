"""One generic registry used for datasets, models, stages and methods."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from slimtune.errors import ConfigError

T = TypeVar("T")


def did_you_mean(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


class Registry(Generic[T]):
    """Maps names to objects. Registering a name twice is an error."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._help: dict[str, str] = {}

    def register(self, name: str, *, help: str = "") -> Callable[[T], T]:
        def deco(obj: T) -> T:
            self.add(name, obj, help=help)
            return obj

        return deco

    def add(self, name: str, obj: T, *, help: str = "") -> None:
        if name in self._items:
            raise ConfigError(f"{self.kind} '{name}' is already registered; pick another name")
        self._items[name] = obj
        self._help[name] = help or (getattr(obj, "__doc__", None) or "").strip().split("\n")[0]

    def get(self, name: str) -> T:
        if not isinstance(name, str):  # e.g. a list or mapping from YAML
            raise ConfigError(
                f"a {self.kind} name is a word, got {type(name).__name__} {name!r}; one of: {', '.join(self.names())}"
            )
        if name not in self._items:
            known = ", ".join(sorted(self._items))
            raise ConfigError(f"unknown {self.kind} '{name}'{did_you_mean(name, list(self._items))}; known: {known}")
        return self._items[name]

    def help(self, name: str) -> str:
        return self._help.get(name, "")

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


C = TypeVar("C")
H = TypeVar("H")


class MethodRegistry(Registry[C], Generic[C, H]):
    """Method names → config classes (as a ``Registry``), plus config class → handler: torchao's
    'one verb, a config per method, a handler registered for the config type'."""

    def __init__(self, kind: str, verb: str) -> None:
        super().__init__(kind)
        self.verb = verb
        self._handlers: dict[object, H] = {}

    def register_handler(self, name: str, config_cls: C, *, help: str = "") -> Callable[[H], H]:
        def deco(handler: H) -> H:
            self.add(name, config_cls, help=help)
            self._handlers[config_cls] = handler
            return handler

        return deco

    def handler_for(self, config: object) -> H:
        handler = self._handlers.get(type(config))
        if handler is None:
            raise ConfigError(
                f"no {self.kind} handler for {type(config).__name__}; register one with {self.verb}(name, config_cls)"
            )
        return handler
