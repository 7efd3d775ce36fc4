"""Recipes: YAML files that chain stages; validated whole before anything runs."""

from pathlib import Path

from slimtune.recipe.schema import Recipe, load_recipe, parse_recipe

BUILTIN = Path(__file__).parent / "builtin"


def builtin_recipe(name: str) -> Path:
    from slimtune.errors import ConfigError

    path = BUILTIN / f"{name}.yaml"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in BUILTIN.glob("*.yaml")))
        raise ConfigError(f"no built-in recipe '{name}'; built-in recipes: {known}")
    return path


def run_recipe(*args, **kwargs):  # type: ignore[no-untyped-def]
    """Lazy wrapper around ``slimtune.recipe.runner.run_recipe`` (keeps ``import slimtune.recipe`` light)."""
    from slimtune.recipe.runner import run_recipe as _run

    return _run(*args, **kwargs)


__all__ = ["Recipe", "builtin_recipe", "load_recipe", "parse_recipe", "run_recipe"]
