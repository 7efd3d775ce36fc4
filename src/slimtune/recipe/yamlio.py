"""Strict YAML reading for recipes: UTF-8 only, duplicate keys rejected, alias expansion bounded, and every
value's line/column kept so a ``ConfigError`` naming ``stages[2] (prune).recovery`` can point at the file."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from slimtune.errors import ConfigError

MAX_NODES = 100_000  # values a recipe may expand to through aliases (a real recipe has a few hundred)

Position = tuple[int, int]  # 1-based line, column
Key = tuple[str | int, ...]


class _Loader(yaml.SafeLoader):
    """SafeLoader whose mappings refuse duplicate keys."""

    source = "<recipe>"

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:
                raise ConfigError(
                    f"{_at(self.source, key_node)}: a mapping key must be a plain word or number"
                ) from None
            if first is not None:
                raise ConfigError(
                    f"{_at(self.source, key_node)}: duplicate key '{key}' (first given on line "
                    f"{first.start_mark.line + 1}); keep only one"
                )
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


def _at(source: str, node: yaml.Node) -> str:
    return f"{source}:{node.start_mark.line + 1}:{node.start_mark.column + 1}"


def _expanded_size(root: yaml.Node) -> int:
    """How many nodes the document has once every alias is expanded (memoised: linear time)."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:  # a recursive alias: infinite
            return MAX_NODES + 1
        active.add(key)
        total = 1
        if isinstance(node, yaml.MappingNode):
            total += sum(size(k) + size(v) for k, v in node.value)
        elif isinstance(node, yaml.SequenceNode):
            total += sum(size(v) for v in node.value)
        active.discard(key)
        sizes[key] = min(total, MAX_NODES + 1)
        return sizes[key]

    return size(root)


def _positions(root: yaml.Node) -> dict[Key, Position]:
    """Path of every mapping key and list item (``("stages", 1, "recovery")``) → where it is written."""
    out: dict[Key, Position] = {}

    def walk(node: yaml.Node, path: Key) -> None:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode):
                    sub = (*path, str(k.value))
                    out.setdefault(sub, (k.start_mark.line + 1, k.start_mark.column + 1))
                    walk(v, sub)
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                sub = (*path, i)
                out.setdefault(sub, (v.start_mark.line + 1, v.start_mark.column + 1))
                walk(v, sub)

    walk(root, ())
    return out


def read_yaml(path: str | Path) -> tuple[Any, dict[Key, Position]]:
    """The document at ``path`` and the positions of its values; every problem is one ``ConfigError`` line."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{p} is a folder; give the path of the recipe's .yaml file")
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read recipe {p} ({exc.strerror}); check the path and its permissions") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"{p}:{line}: the recipe is not UTF-8 text (byte 0x{data[exc.start]:02x}); save it as UTF-8"
        ) from None
    return parse_yaml(text, source=str(p))


def parse_yaml(text: str, *, source: str = "<recipe>") -> tuple[Any, dict[Key, Position]]:
    loader = _Loader(text)
    loader.source = source
    try:
        root = loader.get_single_node()
        if root is None:
            return None, {}
        if _expanded_size(root) > MAX_NODES:
            raise ConfigError(
                f"{source}: the YAML expands to more than {MAX_NODES:,} values through aliases (&name/*name); "
                "write the recipe out without nested aliases"
            )
        return loader.construct_document(root), _positions(root)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark is not None else source
        what = " ".join(str(part) for part in (exc.context, exc.problem) if part)
        raise ConfigError(f"{where}: not valid YAML: {what}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {str(exc).splitlines()[0]}") from None
    finally:
        loader.dispose()


_PATH = re.compile(r"^([A-Za-z_][\w-]*(?:\[\d+\])?(?: \([^)]*\))?(?:\.[A-Za-z_][\w-]*|\[\d+\])*)[:. ]")
_STEP = re.compile(r"\.?([A-Za-z_][\w-]*)|\[(\d+)\]|\s\([^)]*\)")
_UNKNOWN = re.compile(r"unknown key '([^']+)'")


def message_path(message: str) -> Key:
    """The recipe path a ConfigError message starts with: ``stages[2] (prune).recovery: ...`` →
    ``("stages", 1, "recovery")`` (stages are counted from 1 in messages); an unknown key is appended."""
    m = _PATH.match(message)
    if not m:
        return ()
    path: list[str | int] = []
    for step in _STEP.finditer(m.group(1)):
        if step.group(1):
            path.append(step.group(1))
        elif step.group(2):
            index = int(step.group(2))
            path.append(index - 1 if path == ["stages"] else index)
    unknown = _UNKNOWN.search(message)
    if unknown:
        path.append(unknown.group(1))
    return tuple(path)


def locate(message: str, positions: dict[Key, Position], source: str) -> str:
    """``message`` with `` (recipe.yaml line L, column C)`` for the deepest part of its path that is written
    in the file; unchanged when it names none."""
    path = message_path(message)
    while path and path not in positions:
        path = path[:-1]
    if not path:
        return message
    line, col = positions[path]
    return f"{message} ({Path(source).name} line {line}, column {col})"
