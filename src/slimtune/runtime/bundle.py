"""The deploy bundle's manifest (``bundle.json``): read and validated with the standard library only.

A bundle is a folder::

    bundle.json      this manifest: input contract, labels, precision, parity, provenance
    model.onnx       the model (fp32 or int8), input ``input``, output ``logits``
                     (kind "lm": a KV-cache decoder, see slimtune.export.lm_bundle)
    tokenizer.json   text models only: a Hugging Face ``tokenizers`` file or slimtune's word vocabulary
    examples.npy     a few preprocessed test inputs (image/tabular models), used by ``bench``
    report.*         the slimtune report of the run that made it (when made by a recipe)
    MODEL_CARD.md    what was done, metrics, parity, environment
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slimtune.errors import DataError

FORMAT = "slimtune-bundle"
FORMAT_VERSION = 1
MANIFEST = "bundle.json"


@dataclass(frozen=True)
class Manifest:
    folder: Path
    raw: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.raw["input"]["kind"])

    @property
    def input(self) -> dict[str, Any]:
        return dict(self.raw["input"])

    @property
    def labels(self) -> list[str]:
        return [str(x) for x in self.raw["output"]["labels"]]

    def file(self, key: str) -> Path:
        """A file the manifest names, checked to exist and to stay inside the bundle."""
        name = str(self.raw["files"][key])
        path = (self.folder / name).resolve()
        if self.folder.resolve() not in path.parents:
            raise DataError(f"bundle '{self.folder}': file '{name}' points outside the bundle; rebuild the bundle")
        if not path.is_file():
            raise DataError(f"bundle '{self.folder}' is missing '{name}'; copy the whole bundle folder")
        return path


def read_manifest(folder: str | Path) -> Manifest:
    """Load and check ``bundle.json``: the folder exists, the format is known and not newer than this slimtune."""
    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"bundle not found: '{root}' is not a folder (make one with a recipe 'bundle' stage)")
    path = root / MANIFEST
    if not path.is_file():
        raise DataError(f"'{root}' is not a slimtune bundle: it has no {MANIFEST}")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path} is not valid JSON ({exc}); re-export the bundle") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise DataError(f"{path} is not a slimtune bundle manifest (format must be '{FORMAT}')")
    version = raw.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise DataError(f"{path}: bad format_version {version!r}; re-export the bundle")
    if version > FORMAT_VERSION:
        raise DataError(
            f"bundle '{root}' has format version {version}, newer than this slimtune reads ({FORMAT_VERSION}); "
            "upgrade slimtune (pip install -U slimtune) or re-export with this version"
        )
    for key in ("input", "output", "files"):
        if not isinstance(raw.get(key), dict):
            raise DataError(f"{path}: missing '{key}' section; re-export the bundle")
    if raw["input"].get("kind") not in ("image", "text", "tabular", "lm"):
        raise DataError(f"{path}: input kind must be image, text, tabular or lm, got {raw['input'].get('kind')!r}")
    return Manifest(root, raw)
