"""Named exceptions. Every error a user can cause is a ``SlimtuneError`` whose message
names the problem and the fix in one line; the CLI prints it without a traceback."""

from __future__ import annotations


class SlimtuneError(Exception):
    """Base class of every error slimtune raises on purpose."""


class ConfigError(SlimtuneError, ValueError):
    """A config value or recipe key is wrong (unknown key, wrong type, impossible value)."""


class DataError(SlimtuneError, ValueError):
    """A dataset is missing, malformed or unusable (one class, ragged shapes, bad labels)."""


class UnsupportedModelError(SlimtuneError, TypeError):
    """A model or layer type a technique cannot handle."""


class ParityError(SlimtuneError):
    """An exported model's outputs differ from its PyTorch source beyond tolerance."""


class OutputExistsError(SlimtuneError, FileExistsError):
    """An output would overwrite existing files; pass ``force=True`` / ``--force``."""


class FileAccessError(SlimtuneError, PermissionError):
    """A file or folder this user may not read or write (or that is not where it should be)."""


class MissingDependencyError(SlimtuneError, ImportError):
    """An optional dependency is not installed; the message names the pip command."""


def missing_dependency(package: str, extra: str) -> MissingDependencyError:
    return MissingDependencyError(
        f"this feature needs the package '{package}'; install it with "
        f"`pip install -c constraints.txt 'slimtune[{extra}]'`"
    )


class OutputError(SlimtuneError, OSError):
    """An output folder cannot be created or written (permissions, a full disk)."""


class TrainingDivergedError(SlimtuneError, ArithmeticError):
    """Training produced a non-finite loss (NaN or inf); the message names the stage, the epoch and the fix."""
