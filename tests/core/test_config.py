from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pytest

from slimtune._registry import Registry
from slimtune.config import Config, check
from slimtune.errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class Inner(Config):
    rate: float = 0.1


@dataclass(frozen=True, kw_only=True)
class Outer(Config):
    epochs: int = 3
    mode: Literal["a", "b"] = "a"
    widths: tuple[int, ...] = (4,)
    inner: Inner = Inner()
    limit: int | None = None

    def __post_init__(self) -> None:
        check(self.epochs >= 0, f"epochs must be >= 0, got {self.epochs}")


def test_from_dict_builds_nested_and_coerces() -> None:
    cfg = Outer.from_dict({"epochs": 5, "widths": [8, 16], "inner": {"rate": "1e-3"}, "limit": None})
    assert cfg == Outer(epochs=5, widths=(8, 16), inner=Inner(rate=0.001))
    assert Outer.from_dict(cfg.to_dict()) == cfg


def test_unknown_key_names_key_and_suggests() -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'epoch'.*did you mean 'epochs'"):
        Outer.from_dict({"epoch": 3})


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"epochs": "three"}, r"Outer.epochs: expected an integer"),
        ({"mode": "c"}, r"'c' is not one of 'a', 'b'"),
        ({"widths": 3}, r"expected a list"),
        ({"inner": {"rat": 1}}, r"Outer.inner: unknown key 'rat'"),
        ({"epochs": -1}, r"epochs must be >= 0"),
        ({"epochs": True}, r"expected an integer"),
    ],
)
def test_bad_values_are_one_line_errors(raw: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        Outer.from_dict(raw)
    assert "\n" not in str(info.value)


def test_registry_rejects_duplicates_and_suggests() -> None:
    reg: Registry[int] = Registry("thing")
    reg.add("alpha", 1)
    with pytest.raises(ConfigError, match="already registered"):
        reg.add("alpha", 2)
    with pytest.raises(ConfigError, match=r"unknown thing 'alpah'.*did you mean 'alpha'"):
        reg.get("alpah")
    assert reg.names() == ["alpha"] and "alpha" in reg
