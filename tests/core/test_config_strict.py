"""The config layer refuses what it cannot use with one ConfigError line naming the path: from recipes and
from the Python API alike; recipe YAML is read strictly and errors point at the line."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from slimtune._registry import Registry
from slimtune.config import Config, check
from slimtune.errors import ConfigError
from slimtune.recipe.yamlio import locate, message_path, parse_yaml
from slimtune.train import TrainConfig


@dataclass(frozen=True, kw_only=True)
class Ranged(Config):
    rate: float = 0.5
    widths: tuple[int, ...] = (4,)

    def __post_init__(self) -> None:
        check(0 < self.rate < 1, f"rate must be in (0, 1), got {self.rate}")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"epochs": "3"}, r"^TrainConfig\.epochs: expected an integer, got '3'$"),
        ({"lr": float("inf")}, r"^TrainConfig\.lr: inf is not a finite number"),
        ({"lr": float("nan")}, r"^TrainConfig\.lr: nan is not a finite number"),
        ({"max_grad_norm": float("-inf")}, r"TrainConfig\.max_grad_norm: -inf is not a finite number"),
        ({"optimizer": "adam"}, r"TrainConfig\.optimizer: 'adam' is not one of .*did you mean 'adamw'"),
        ({"batch_size": 8.0}, r"TrainConfig\.batch_size: expected an integer"),
        ({"restore_best": "yes"}, r"TrainConfig\.restore_best: expected true or false"),
    ],
)
def test_python_api_configs_check_their_types(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        TrainConfig(**kwargs)
    assert "\n" not in str(info.value)


def test_python_api_configs_normalise_what_they_can_use() -> None:
    cfg = TrainConfig(lr=1, epochs=np.int64(3))
    assert type(cfg.lr) is float and type(cfg.epochs) is int and cfg.epochs == 3
    assert Ranged(widths=[8, 16]).widths == (8, 16)  # hashable, as the annotation says
    with pytest.raises(ConfigError, match=r"Ranged\.widths\[1\]: expected an integer"):
        Ranged(widths=[8, "x"])
    with pytest.raises(ConfigError, match=r"rate must be in \(0, 1\)"):  # the subclass's own check still runs
        Ranged(rate=2.0)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("fast", r"^stages\[2\] \(prune\)\.recovery: expected a mapping of options like \{key: value\}, got str"),
        (["a"], r"^stages\[2\] \(prune\)\.recovery: expected a mapping"),
        ({"lr": "1e400"}, r"^stages\[2\] \(prune\)\.recovery\.lr: inf is not a finite number"),
        ({"epochs": -1}, r"^stages\[2\] \(prune\)\.recovery: epochs must be >= 0"),
    ],
)
def test_from_dict_names_the_recipe_path(raw: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TrainConfig.from_dict(raw, where="stages[2] (prune).recovery")  # type: ignore[arg-type]


def test_range_errors_say_where_without_repeating_it() -> None:
    with pytest.raises(ConfigError, match=r"^stages\[1\] \(x\): rate must be in"):
        Ranged.from_dict({"rate": 3}, where="stages[1] (x)")
    with pytest.raises(ConfigError, match=r"^Ranged: rate must be in"):
        Ranged.from_dict({"rate": 3})


def test_registry_names_must_be_words() -> None:
    reg: Registry[int] = Registry("thing")
    reg.add("alpha", 1)
    for bad in (["alpha"], {"alpha": 1}, 3):
        with pytest.raises(ConfigError, match=r"a thing name is a word, got .*one of: alpha"):
            reg.get(bad)  # type: ignore[arg-type]


def test_yaml_duplicates_are_refused_but_merge_keys_may_override() -> None:
    with pytest.raises(ConfigError, match=r"^r.yaml:3:3: duplicate key 'lr' \(first given on line 2\)"):
        parse_yaml("train:\n  lr: 1\n  lr: 2\n", source="r.yaml")
    data, _ = parse_yaml("base: &b {lr: 1, epochs: 2}\ntrain:\n  <<: *b\n  lr: 3\n")
    assert data["train"] == {"lr": 3, "epochs": 2}


def test_yaml_recursive_and_exploding_aliases_are_bounded() -> None:
    with pytest.raises(ConfigError, match="aliases"):
        parse_yaml("a: &a [*a]\n")
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [{', '.join([f'*{p}'] * 10)}]\n" for p, c in zip("abcdef", "bcdefg", strict=True)
    )
    with pytest.raises(ConfigError, match=r"more than 100,000 values"):
        parse_yaml(bomb)


def test_errors_are_located_in_the_file() -> None:
    text = "data: {name: digits}\nstages:\n  - stage: train\n  - stage: prune\n    recovery: {lr: 2}\n"
    _, positions = parse_yaml(text)
    assert message_path("stages[2] (prune).recovery.lr: bad") == ("stages", 1, "recovery", "lr")
    assert message_path("stages[2] (prune): unknown key 'recovry'; ...") == ("stages", 1, "recovry")
    assert message_path("data.limit must be >= 10") == ("data", "limit")
    assert locate("stages[2] (prune).recovery.lr: bad", positions, "dir/r.yaml").endswith("(r.yaml line 5, column 16)")
    assert locate("stages[2] (prune): unknown key 'recovry'", positions, "r.yaml").endswith("line 4, column 5)")
    assert locate("unknown model 'mpl'", positions, "r.yaml") == "unknown model 'mpl'"  # names no path
