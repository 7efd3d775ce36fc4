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

from slimtune.errors import DataError, FileAccessError, MissingDependencyError

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
        name = self.raw["files"].get(key)
        if not isinstance(name, str) or not name:
            raise DataError(f"bundle '{self.folder}': {MANIFEST} names no '{key}' file; re-export the bundle")
        path = (self.folder / name).resolve()
        if self.folder.resolve() not in path.parents:
            raise DataError(f"bundle '{self.folder}': file '{name}' points outside the bundle; rebuild the bundle")
        if not path.is_file():
            raise DataError(f"bundle '{self.folder}' is missing '{name}'; copy the whole bundle folder")
        return path


def read_manifest(folder: str | Path) -> Manifest:
    """Load and check ``bundle.json``: the folder exists, the format is known and not newer than this slimtune."""
    root = Path(folder)
    make = "make one with a 'bundle' stage (slimtune stage bundle --load MODEL_FOLDER --data DATA --out DIR)"
    if root.is_file() and root.suffix == ".onnx":
        raise DataError(f"'{root}' is an ONNX file, not a bundle folder; {make}")
    if not root.is_dir():
        raise DataError(f"bundle not found: '{root}' is not a folder; {make}")
    path = root / MANIFEST
    if not path.is_file():
        saved = (root / "spec.json").is_file()
        what = "a saved model folder, not a bundle" if saved else f"not a slimtune bundle: it has no {MANIFEST}"
        raise DataError(f"'{root}' is {what}; {make}")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except PermissionError:
        raise FileAccessError(f"cannot read {path}: permission denied; make the bundle readable by this user") from None
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
    return Manifest(root, raw)  # the classifier contract is checked where it is used (open_session)


def check_contract(manifest: Manifest) -> None:
    """Every key the classifier runtime reads is there and has its type: a damaged manifest is one line, not a
    KeyError. (An LM bundle's contract is checked by the LM runtime.)"""
    path, raw = manifest.folder / MANIFEST, manifest.raw
    fix = "re-export the bundle or restore bundle.json"
    inp, files = raw["input"], raw["files"]
    if inp["kind"] == "text":
        tok = inp.get("tokenizer")
        if (
            not isinstance(tok, dict)
            or tok.get("type") not in ("hf", "word")
            or not _positive_int(tok.get("max_length"))
        ):
            raise DataError(f"{path}: input.tokenizer needs type (hf or word) and a positive max_length; {fix}")
        if not isinstance(files.get("tokenizer"), str):
            raise DataError(f"{path}: files.tokenizer is missing; a text bundle ships its tokenizer; {fix}")
    else:
        shape = inp.get("shape")
        if not isinstance(shape, list) or not shape or not all(_positive_int(s) for s in shape):
            raise DataError(
                f"{path}: input.shape must list the input's sizes without the batch axis (e.g. [1, 28, 28]), "
                f"got {shape!r}; {fix}"
            )
        scale = inp.get("pixel_scale")
        if scale is not None and not (isinstance(scale, (int, float)) and 0 < scale < float("inf")):
            raise DataError(f"{path}: input.pixel_scale must be a positive number, got {scale!r}; {fix}")
    labels = raw["output"].get("labels")
    if not isinstance(labels, list) or not labels or not all(isinstance(x, (str, int)) for x in labels):
        raise DataError(f"{path}: output.labels must list the class names, got {labels!r}; {fix}")
    if not isinstance(files.get("model"), str):
        raise DataError(f"{path}: files.model (the ONNX file's name) is missing; {fix}")


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def open_session(manifest: Manifest, *, threads: int | None = None) -> Any:
    """An ONNX Runtime session of the bundle's model, checked against the manifest's input shape and labels."""
    check_contract(manifest)
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise MissingDependencyError("the runtime needs onnxruntime: pip install onnxruntime") from exc
    model = manifest.file("model")
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = int(threads)
    opts.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    except PermissionError:
        raise FileAccessError(f"cannot read {model}: permission denied; make the bundle readable") from None
    except Exception as exc:  # onnxruntime's own error types: a truncated, garbage or foreign file
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        if "permission denied" in first.lower():
            raise FileAccessError(f"cannot read {model}: permission denied; make the bundle readable") from None
        raise DataError(
            f"{model} is not a loadable ONNX model ({first[:160]}); the bundle is damaged: copy it again "
            "or re-export it"
        ) from None
    check_session(manifest, session)
    return session


def check_session(manifest: Manifest, session: Any) -> None:
    """The ONNX graph takes what ``bundle.json`` says it takes and predicts as many classes as it lists labels."""
    shape = manifest.input.get("shape") if manifest.kind != "text" else None
    problem = contract_problem(session, kind=manifest.kind, shape=shape, labels=len(manifest.labels))
    if problem:
        raise DataError(
            f"{manifest.folder / MANIFEST}: {problem}; bundle.json was edited or damaged: restore it or "
            "re-export the bundle"
        )


def contract_problem(session: Any, *, kind: str, shape: list[int] | None, labels: int) -> str | None:
    """How an ONNX session disagrees with an input contract (kind, shape without batch axis, label count), or None."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if not inputs or not outputs:
        return "the ONNX model has no inputs or outputs"
    dtype = "tensor(int64)" if kind == "text" else "tensor(float)"
    if inputs[0].type != dtype:
        return f"input kind '{kind}' needs a {dtype} model input, but the ONNX model takes {inputs[0].type}"
    if shape is not None:
        declared = [int(s) for s in shape]
        dims = list(inputs[0].shape)[1:]
        if len(dims) != len(declared) or any(isinstance(d, int) and d != s for d, s in zip(dims, declared)):
            shown = [d if isinstance(d, int) else "?" for d in dims]
            return f"input.shape {declared} does not match the ONNX model, which takes {shown}"
    classes = list(outputs[0].shape)[-1] if outputs[0].shape else None
    if isinstance(classes, int) and classes != labels:
        return f"it lists {labels} labels but the ONNX model predicts {classes} classes"
    return None
