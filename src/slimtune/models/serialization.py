"""Save and load models as ``spec.json`` + ``model.safetensors`` — never pickle.

The spec names the architecture and its options so the module can be rebuilt; tensors that are
mostly zero (pruned) are stored as a packed bitmask plus the non-zero values, so the file really
shrinks with sparsity and loads back to the identical dense tensor.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from slimtune._io import atomic_path, write_text
from slimtune.errors import (
    ConfigError,
    DataError,
    FileAccessError,
    MissingDependencyError,
    OutputExistsError,
    SlimtuneError,
    UnsupportedModelError,
)
from slimtune.models.custom import ARCH as CUSTOM_ARCH
from slimtune.models.custom import Factory, custom_spec, rebuild_custom
from slimtune.models.structure import describe, restore

T = TypeVar("T")

FORMAT_VERSION = 1
SPEC_FILE, WEIGHTS_FILE = "spec.json", "model.safetensors"
_MASK, _VALUES = ".__bitmask", ".__values"
SPARSE_MAX_DENSITY = 0.9  # below this density the bitmask encoding is smaller than dense


def get_spec(model: nn.Module) -> dict[str, Any]:
    spec = getattr(model, "slimtune_spec", None)
    if not isinstance(spec, dict):
        raise UnsupportedModelError(
            f"{type(model).__name__} has no slimtune spec; build it with slimtune.models.build/load "
            "so it can be saved and rebuilt"
        )
    return spec


def encode_state(state: dict[str, torch.Tensor], *, sparse: bool = True) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Dense tensors as they are; sparse float matrices as bitmask + values. Returns tensors, sparse names."""
    out: dict[str, torch.Tensor] = {}
    sparse_names: list[str] = []
    for name, t in state.items():
        t = t.detach().cpu()
        if sparse and t.is_floating_point() and t.ndim >= 2 and t.numel() >= 64:
            nz = t != 0
            if nz.float().mean().item() <= SPARSE_MAX_DENSITY:
                bits = np.packbits(nz.flatten().numpy().astype(np.uint8))
                out[name + _MASK] = torch.from_numpy(bits)
                out[name + _VALUES] = t[nz].clone()
                sparse_names.append(name)
                continue
        out[name] = t.contiguous().clone()
    return out, sparse_names


def decode_state(tensors: dict[str, torch.Tensor], sparse: dict[str, Any]) -> dict[str, torch.Tensor]:
    state = {k: v for k, v in tensors.items() if not (k.endswith(_MASK) or k.endswith(_VALUES))}
    for name, info in sparse.items():
        shape = tuple(info["shape"])
        n = math.prod(shape)
        mask = np.unpackbits(tensors[name + _MASK].numpy())[:n].astype(bool)
        dense = torch.zeros(n, dtype=tensors[name + _VALUES].dtype)
        dense[torch.from_numpy(mask)] = tensors[name + _VALUES]
        state[name] = dense.view(shape)
    return state


def tied_aliases(state: dict[str, torch.Tensor]) -> dict[str, str]:
    """``{alias: first name}`` for state entries that are the very same tensor as an earlier entry."""
    seen: dict[tuple[int, tuple[int, ...], tuple[int, ...]], str] = {}
    aliases: dict[str, str] = {}
    for name, t in state.items():
        if t.numel() == 0:
            continue
        key = (t.data_ptr(), tuple(t.shape), tuple(t.stride()))
        if key in seen:
            aliases[name] = seen[key]
        else:
            seen[key] = name
    return aliases


def save_model(
    model: nn.Module,
    folder: str | Path,
    *,
    sparse: bool = True,
    extra: dict[str, Any] | None = None,
    options: dict[str, Any] | None = None,
    input_shape: Sequence[int] | None = None,
) -> Path:
    """Write ``folder/spec.json`` and ``folder/model.safetensors`` atomically; returns the folder.

    A module slimtune did not build (your own ``nn.Module``) is saved with a spec naming its class and the
    keyword ``options`` it is built with (and its ``input_shape``, which bundles use); load it back with
    ``load_model(folder, custom=YourClass)``. Nothing is pickled.
    """
    out = Path(folder)
    if out.exists() and not out.is_dir():
        raise OutputExistsError(
            f"cannot save the model to '{out}': it is a file; give a folder path (spec.json and "
            f"{WEIGHTS_FILE} are written into it)"
        )
    own = getattr(model, "slimtune_spec", None)
    if isinstance(own, dict):
        if options is not None or input_shape is not None:
            raise ConfigError(
                f"options/input_shape describe your own modules; this {type(model).__name__} already has a "
                "slimtune spec: drop them"
            )
        spec = dict(own)
    else:
        spec = custom_spec(model, options=options, input_shape=input_shape)
    if spec.get("arch") == "causal-lm":  # per-block shapes and a config that matches them
        from slimtune.models.lm_io import spec_for_save

        spec = spec_for_save(model, spec)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except PermissionError:
        raise FileAccessError(f"cannot create '{out}': permission denied; choose a folder you can write") from None
    state = model.state_dict()
    tied = tied_aliases(state)  # tied weights (an LM's embedding and output head) are stored once
    state = {k: v for k, v in state.items() if k not in tied}
    tensors, sparse_names = encode_state(state, sparse=sparse)
    spec["format_version"] = FORMAT_VERSION
    spec["layers"] = describe(model)  # rebuilds shrunk/removed layers after structured pruning
    spec["sparse"] = {n: {"shape": list(state[n].shape)} for n in sparse_names}
    if tied:
        spec["tied"] = tied
    if extra:
        spec["extra"] = {**spec.get("extra", {}), **extra}
    try:
        with atomic_path(out / WEIGHTS_FILE) as tmp:
            save_file(tensors, str(tmp), metadata={"format": "slimtune", "version": str(FORMAT_VERSION)})
        write_text(out / SPEC_FILE, json.dumps(spec, indent=2))
    except PermissionError:
        raise FileAccessError(f"cannot write into '{out}': permission denied; choose a folder you can write") from None
    return out


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


def _not_a_model_folder(path: Path) -> DataError:
    """Why ``path`` is not a saved model folder, and the way to load what it is."""
    if not path.exists():
        return DataError(f"saved model folder not found: '{path}'; check the path")
    if path.is_file():
        if path.suffix in (".pt", ".pth", ".bin"):
            return DataError(
                f"'{path}' is a PyTorch checkpoint, not a saved model folder; load it into its architecture "
                f"with model: {{name: ARCH, checkpoint: {path}}} (or load_torch_checkpoint)"
            )
        if path.suffix == ".onnx":
            return DataError(
                f"'{path}' is an ONNX file, not a saved model folder; serve it as a bundle "
                "(export_bundle(model, out, onnx=...)) or load the saved model folder it came from"
            )
        return DataError(f"'{path}' is a file; give the saved model folder (spec.json + {WEIGHTS_FILE})")
    if (path / "config.json").is_file():
        return DataError(
            f"'{path}' is a Hugging Face folder, not a saved slimtune model; in a recipe write "
            f"model: {{name: hf, options: {{path: {path}}}}} (slimtune stage --load takes it too)"
        )
    return DataError(f"no {SPEC_FILE} in '{path}': not a saved slimtune model folder (spec.json + {WEIGHTS_FILE})")


def read_spec(folder: str | Path) -> dict[str, Any]:
    """The checked ``spec.json`` of a saved model folder (a ``spec.json`` path is taken as its folder)."""
    root = Path(folder)
    if root.name == SPEC_FILE and root.is_file():
        root = root.parent
    path = root / SPEC_FILE
    if not path.is_file():
        raise _not_a_model_folder(root)
    damaged = "the file is damaged: re-save the model or copy the folder again"
    try:
        raw: Any = json.loads(path.read_text(encoding="utf-8"))
    except PermissionError:
        raise FileAccessError(f"cannot read {path}: permission denied; make the model folder readable") from None
    except UnicodeDecodeError:
        raise DataError(f"{path} is not UTF-8 text; {damaged}") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is not valid JSON (line {exc.lineno}, column {exc.colno}); {damaged}") from None
    if not isinstance(raw, dict):
        raise DataError(f"{path} holds a JSON {type(raw).__name__}, not the model spec object; {damaged}")
    spec: dict[str, Any] = raw
    version = spec.get("format_version", 0)
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise DataError(f"{path}: format_version must be a whole number, got {version!r}; {damaged}")
    if version > FORMAT_VERSION:
        raise ConfigError(
            f"'{root}' was saved by a newer slimtune (format {version} > {FORMAT_VERSION}); upgrade slimtune"
        )
    if not isinstance(spec.get("arch"), str):
        raise DataError(f"{path} names no architecture ('arch'); {damaged}")
    for key, kind in (("options", dict), ("layers", dict), ("sparse", dict), ("input_shape", list)):
        if key in spec and not isinstance(spec[key], kind):
            raise DataError(f"{path}: '{key}' must be a JSON {'object' if kind is dict else 'list'}; {damaged}")
    return spec


def spec_input_shape(spec: dict[str, Any]) -> tuple[int, ...] | None:
    """The input shape a spec declares (without the batch axis), or None when it declares none."""
    shape = spec.get("input_shape")
    if isinstance(shape, list) and shape and all(isinstance(s, int) for s in shape):
        return tuple(shape)
    return None


def load_model(folder: str | Path, *, custom: Factory | None = None) -> nn.Module:
    """Rebuild the architecture from the spec and load the (possibly sparse-encoded) weights.

    ``custom``: the class (or a function returning the module) of a model saved from your own ``nn.Module``;
    it is called with the options given to ``save_model``. slimtune never imports a class a file names.
    """
    from slimtune.models.registry import rebuild

    root = Path(folder)
    if root.name == SPEC_FILE and root.is_file():
        root = root.parent
    spec = read_spec(root)
    weights = root / WEIGHTS_FILE
    if not weights.is_file():
        raise DataError(f"'{root}' has a spec but no {WEIGHTS_FILE}; the save was incomplete: re-save the model")
    if spec["arch"] == CUSTOM_ARCH:
        model = rebuild_custom(spec, custom, root)
    elif custom is not None:
        raise ConfigError(f"'{root}' holds slimtune's '{spec['arch']}' model; load it without custom=")
    else:
        model = _guard(lambda: rebuild(spec), root / SPEC_FILE)
    if "qat" in spec:  # fake-quant wrappers of quantization-aware training
        from slimtune.quantize.qat import apply_qat_spec

        _guard(lambda: apply_qat_spec(model, spec["qat"]), root / SPEC_FILE)
    if "layers" in spec:
        _guard(lambda: restore(model, spec["layers"]), root / SPEC_FILE)
    if spec["arch"] == CUSTOM_ARCH:
        kept = {k: v for k, v in spec.items() if k not in ("layers", "sparse", "tied", "format_version")}
        model.slimtune_spec = kept  # type: ignore[assignment]  # it re-saves and bundles like a built model
    try:
        tensors = load_file(str(weights))
    except PermissionError:
        raise FileAccessError(f"cannot read {weights}: permission denied; make the model folder readable") from None
    except Exception as exc:  # safetensors' own error type: a truncated or foreign file
        raise DataError(
            f"{weights} is damaged or not a safetensors file ({_first_line(exc)}); copy the model folder again "
            "or re-save it"
        ) from None
    try:
        state = decode_state(tensors, spec.get("sparse", {}))
    except (KeyError, ValueError, TypeError, RuntimeError) as exc:
        raise DataError(
            f"{weights} does not match the sparse layout its spec.json records ({exc!r}); re-save the model"
        ) from None
    for alias, source in spec.get("tied", {}).items():
        state[alias] = state[source]
    load_state(model, state, source=str(weights))
    return model


def _guard(step: Callable[[], T], spec_path: Path) -> T:
    """Run a rebuild step; a spec it cannot follow becomes one DataError line naming the file."""
    try:
        return step()
    except MissingDependencyError:
        raise
    except (SlimtuneError, KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        raise DataError(
            f"{spec_path} describes a model this slimtune cannot rebuild ({_first_line(exc)}); the file is damaged "
            "or from another version: re-save the model"
        ) from None


def load_state(model: nn.Module, state: dict[str, torch.Tensor], *, source: str) -> None:
    """``load_state_dict`` with one clear line for missing/unexpected keys or shape mismatches."""
    own = model.state_dict()
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise DataError(f"{source} holds non-tensor values (e.g. '{bad[0]}'); it is not a state dict of weights")
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise DataError(
            f"weights in {source} do not match the architecture: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    for k, v in state.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise DataError(
                f"shape mismatch for '{k}' in {source}: file has {tuple(v.shape)}, model expects {tuple(own[k].shape)}"
            )
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise DataError(f"cannot load the weights in {source}: {_first_line(exc)}") from None


def load_torch_checkpoint(model: nn.Module, path: str | Path) -> None:
    """Load a ``.pt``/``.pth`` state dict safely (``weights_only=True``: no code runs)."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"checkpoint not found: {p}; check the path")
    if not p.is_file():
        raise DataError(f"checkpoint '{p}' is a folder; give the .pt/.pth file (a saved model folder goes in 'load')")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except PermissionError:
        raise FileAccessError(f"cannot read {p}: permission denied; make the checkpoint readable") from None
    except Exception as exc:
        if "weights only" in str(exc).lower():  # torch refused to unpickle objects other than tensors
            raise DataError(
                f"refused '{p}': it holds Python objects besides tensors, and loading those can run code; "
                "save a plain state dict instead (torch.save(model.state_dict(), path)) or safetensors"
            ) from None
        raise DataError(
            f"'{p}' is not a readable PyTorch checkpoint ({_first_line(exc)}); it is damaged or was not written "
            "by torch.save"
        ) from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise DataError(f"'{p}' holds a {type(obj).__name__}, expected a state dict of tensors")
    load_state(model, obj, source=str(p))
