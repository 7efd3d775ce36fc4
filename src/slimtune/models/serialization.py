"""Save and load models as ``spec.json`` + ``model.safetensors`` — never pickle.

The spec names the architecture and its options so the module can be rebuilt; tensors that are
mostly zero (pruned) are stored as a packed bitmask plus the non-zero values, so the file really
shrinks with sparsity and loads back to the identical dense tensor.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from slimtune._io import atomic_path, write_text
from slimtune.errors import ConfigError, DataError, UnsupportedModelError
from slimtune.models.structure import describe, restore

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
    model: nn.Module, folder: str | Path, *, sparse: bool = True, extra: dict[str, Any] | None = None
) -> Path:
    """Write ``folder/spec.json`` and ``folder/model.safetensors`` atomically; returns the folder."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    spec = dict(get_spec(model))
    if spec.get("arch") == "causal-lm":  # per-block shapes and a config that matches them
        from slimtune.models.lm_io import spec_for_save

        spec = spec_for_save(model, spec)
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
    with atomic_path(out / WEIGHTS_FILE) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "slimtune", "version": str(FORMAT_VERSION)})
    write_text(out / SPEC_FILE, json.dumps(spec, indent=2))
    return out


def read_spec(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / SPEC_FILE
    if not path.exists():
        raise DataError(f"no {SPEC_FILE} in '{folder}': not a saved slimtune model folder")
    spec: dict[str, Any] = json.loads(path.read_text())
    version = spec.get("format_version", 0)
    if version > FORMAT_VERSION:
        raise ConfigError(
            f"'{folder}' was saved by a newer slimtune (format {version} > {FORMAT_VERSION}); upgrade slimtune"
        )
    return spec


def load_model(folder: str | Path) -> nn.Module:
    """Rebuild the architecture from the spec and load the (possibly sparse-encoded) weights."""
    from slimtune.models.registry import rebuild

    spec = read_spec(folder)
    model = rebuild(spec)
    if "qat" in spec:  # fake-quant wrappers of quantization-aware training
        from slimtune.quantize.qat import apply_qat_spec

        apply_qat_spec(model, spec["qat"])
    if "layers" in spec:
        restore(model, spec["layers"])
    weights = Path(folder) / WEIGHTS_FILE
    if not weights.exists():
        raise DataError(f"'{folder}' has a spec but no {WEIGHTS_FILE}; the save was incomplete")
    state = decode_state(load_file(str(weights)), spec.get("sparse", {}))
    for alias, source in spec.get("tied", {}).items():
        state[alias] = state[source]
    load_state(model, state, source=str(weights))
    return model


def load_state(model: nn.Module, state: dict[str, torch.Tensor], *, source: str) -> None:
    """``load_state_dict`` with one clear line for missing/unexpected keys or shape mismatches."""
    own = model.state_dict()
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
    model.load_state_dict(state)


def load_torch_checkpoint(model: nn.Module, path: str | Path) -> None:
    """Load a ``.pt``/``.pth`` state dict safely (``weights_only=True``: no code runs)."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"checkpoint not found: {p}")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling refused: the file holds code, not just tensors
        raise DataError(f"'{p}' is not a plain tensor checkpoint (refused by weights_only loading): {exc}") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise DataError(f"'{p}' holds a {type(obj).__name__}, expected a state dict of tensors")
    load_state(model, obj, source=str(p))
