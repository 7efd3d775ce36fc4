"""Reading ``.npy``/``.npz`` files safely (never unpickling) with one-line reasons, without torch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from slimtune.errors import DataError

NPY_MAGIC, ZIP_MAGIC = b"\x93NUMPY", b"PK\x03\x04"


def numpy_problem(path: Path, exc: BaseException) -> str:
    """Why numpy could not read ``path``, in words a user can act on (never "use allow_pickle")."""
    try:
        head = path.read_bytes()[:6]
    except OSError as err:
        return f"cannot read it ({err.strerror or err})"
    if not head.startswith(NPY_MAGIC) and not head.startswith(ZIP_MAGIC):
        return "it is not a numpy file (no .npy header, not a .npz archive)"
    if "pickle" in str(exc).lower():
        return "it holds pickled Python objects, which slimtune never loads (numeric arrays only)"
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"it is damaged or truncated ({first})"


def load_array_file(path: Path) -> Any:
    """The array of a ``.npy`` file, or ``x`` (else the first array) of a ``.npz`` file."""
    import numpy as np

    try:
        loaded = np.load(path, allow_pickle=False)
        if path.suffix != ".npz":
            return loaded
        with loaded:
            arrays = {name: loaded[name] for name in loaded.files}
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"cannot read {path}: {numpy_problem(path, exc)}; save it with numpy.save") from None
    if not arrays:
        raise DataError(f"{path} holds no arrays; save one with numpy.savez(path, x=...)")
    return arrays["x"] if "x" in arrays else next(iter(arrays.values()))
