"""Causal-LM files: read Hugging Face folders and GGUF files, rebuild from a slimtune spec, write back a
plain Hugging Face folder, and keep a dequantized copy of built-in GGUF models in the cache.

Saving goes through ``slimtune.models.save_model`` like every model (``spec.json`` + safetensors, no
pickle); ``spec_for_save`` adds the per-block shapes (``lm_layers``) and a config that matches them,
and ``from_spec`` rebuilds the architecture, pruned blocks included, before the weights are loaded.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimtune.errors import DataError, UnsupportedModelError
from slimtune.models.gguf_info import gguf_info
from slimtune.models.lm import ARCH, attach_spec, from_config, plain_config, quiet_transformers, transformers_module
from slimtune.models.lm_layers import apply_layer_shapes, config_shape, layer_shapes, sync_config, uniform_shape
from slimtune.models.lm_tokenizer import LMTokenizer

ENCODER_TYPES = frozenset(
    {"bert", "roberta", "xlm-roberta", "xlm-roberta-xl", "electra", "camembert", "ernie", "data2vec-text",
     "roberta-prelayernorm", "rembert", "xmod", "megatron-bert", "big_bird", "bert-generation", "qdqbert"}
)  # fmt: skip
SAVE_KEYS = (
    "format_version",
    "layers",
    "sparse",
    "tied",
    "lm_layers",
    "qat",
)  # added by save_model, not builder options


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def load_hf_folder(folder: str | Path, *, name: str, options: Mapping[str, Any] | None = None) -> nn.Module:
    """A Hugging Face causal-LM folder (config.json, weights, fast tokenizer) as an fp32 slimtune LM."""
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise DataError(f"causal-LM folder not found: {path}")
    if not (path / "config.json").is_file():
        raise DataError(
            f"'{path}' has no config.json, so it holds no Hugging Face causal LM; point at the model folder"
        )
    with quiet_transformers() as tf:
        try:
            config = tf.AutoConfig.from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError, KeyError) as exc:
            raise DataError(f"cannot read the config in '{path}': {_first_line(exc)}") from None
        if not _is_causal(tf, config):
            raise DataError(
                f"'{path}' holds a '{config.model_type}' model, which is not a causal LM; "
                "give a decoder-only model folder (Llama, Qwen, Mistral, Gemma, GPT-2, Phi)"
            )
        try:
            model = tf.AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True, dtype=torch.float32)
            hf_tok = tf.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError, KeyError, ImportError) as exc:
            raise DataError(f"cannot load the causal LM in '{path}': {_first_line(exc)}") from None
    if getattr(model.config, "quantization_config", None) is not None:
        model = _plain_copy(model)
    precision = str(getattr(config, "dtype", None) or getattr(config, "torch_dtype", None) or "float32")
    source = {"format": "hf", "precision": precision.replace("torch.", ""), "path": str(path)}
    return attach_spec(model, LMTokenizer.from_hf(hf_tok, source=str(path)), name=name, source=source, options=options)


def _is_causal(tf: Any, config: Any) -> bool:
    """A decoder-only LM config: transformers has a causal-LM class for it, the folder's architectures (when
    named) include one, and it is not an encoder whose LM head only works as a decoder (BERT-family)."""
    if type(config) not in tf.MODEL_FOR_CAUSAL_LM_MAPPING or getattr(config, "is_encoder_decoder", False):
        return False
    archs = getattr(config, "architectures", None) or []
    if archs:
        names = set(tf.models.auto.modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())
        return any(a in names for a in archs)
    return config.model_type not in ENCODER_TYPES or bool(getattr(config, "is_decoder", False))


def _plain_copy(model: nn.Module) -> nn.Module:
    """The same weights in a model built from the config without quantization settings (saveable)."""
    plain = from_config(plain_config(model.config), init=False)
    plain.load_state_dict(model.state_dict())
    return plain


@contextlib.contextmanager
def _memoized_tensor_name_map() -> Iterator[None]:
    """transformers rebuilds gguf's (pure) tensor-name map once per submodule — hundreds of times for a
    30-layer model, most of the load time; memoize it for the duration of one load."""
    import gguf

    original = gguf.get_tensor_name_map
    gguf.get_tensor_name_map = functools.lru_cache(maxsize=8)(original)
    try:
        yield
    finally:
        gguf.get_tensor_name_map = original


def load_gguf(path: str | Path, *, name: str, options: Mapping[str, Any] | None = None) -> nn.Module:
    """A GGUF file through transformers' GGUF loader, dequantized to fp32; the source precision is recorded."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise DataError(f"GGUF file not found: {p}")
    info = gguf_info(p)
    with quiet_transformers() as tf:
        try:
            hf_tok = tf.AutoTokenizer.from_pretrained(str(p.parent), gguf_file=p.name, local_files_only=True)
            with _memoized_tensor_name_map():
                loaded = tf.AutoModelForCausalLM.from_pretrained(
                    str(p.parent), gguf_file=p.name, local_files_only=True, dtype=torch.float32
                )
        except (OSError, ValueError, KeyError, NotImplementedError, ImportError) as exc:
            raise DataError(f"cannot load the GGUF model '{p.name}': {_first_line(exc)}") from None
    model = _plain_copy(loaded)  # a GGUF-loaded model refuses save_pretrained; the plain copy saves
    del loaded
    source = {"format": "gguf", "path": str(p), **info}
    return attach_spec(model, LMTokenizer.from_hf(hf_tok, source=p.name), name=name, source=source, options=options)


def cache_root() -> Path:
    return Path(os.environ.get("SLIMTUNE_CACHE") or Path.home() / ".cache" / "slimtune").expanduser()


def cached_load(path: Path, *, name: str, make: Callable[[], nn.Module]) -> nn.Module:
    """Load ``name`` from the cache folder keyed by the source file's size and mtime, else ``make`` it
    and store it there (a cache that cannot be written is skipped)."""
    from slimtune.models.serialization import SPEC_FILE, load_model, save_model

    stat = path.stat()
    folder = cache_root() / "models" / f"{name}-{stat.st_size}-{stat.st_mtime_ns}"
    if (folder / SPEC_FILE).is_file():
        try:
            return load_model(folder)
        except DataError:
            pass  # an interrupted or damaged cache entry: rebuild it
    model = make()
    for stale in folder.parent.glob(f"{name}-*"):  # copies of an older install of the same source
        if stale != folder:
            shutil.rmtree(stale, ignore_errors=True)
    with contextlib.suppress(OSError):
        save_model(model, folder, sparse=False)
    return model


def spec_for_save(model: nn.Module, spec: dict[str, Any]) -> dict[str, Any]:
    """The spec to write: a config that matches the blocks as they are now, and their shapes."""
    config = plain_config(model.config)
    try:
        shapes = layer_shapes(model)
    except UnsupportedModelError:  # a block layout without per-block shapes (e.g. fused qkv): as configured
        return {**spec, "hf_config": config.to_dict()}
    sync_config(config, shapes)
    return {**spec, "hf_config": config.to_dict(), "lm_layers": shapes}


def from_spec(spec: Mapping[str, Any]) -> nn.Module:
    """Rebuild a causal LM from its spec (random weights; no files, no download), pruned blocks included."""
    tf = transformers_module()
    raw = dict(spec.get("hf_config") or {})
    model_type = raw.get("model_type")
    if model_type not in tf.CONFIG_MAPPING:
        raise DataError(f"model spec names model type {model_type!r}, unknown to this transformers; upgrade it")
    config = tf.CONFIG_MAPPING[model_type].from_dict(raw)
    shapes = spec.get("lm_layers")
    if isinstance(shapes, list):
        config.num_hidden_layers = len(shapes)
    model = from_config(config, init=False)  # load_model fills every weight next
    if isinstance(shapes, list):
        apply_layer_shapes(model, shapes)
    model.slimtune_spec = {k: v for k, v in spec.items() if k not in SAVE_KEYS}  # type: ignore[assignment]
    return model.eval()


def save_hf_folder(model: nn.Module, folder: str | Path) -> Path:
    """Write a causal LM whose blocks are all alike as a plain Hugging Face folder (config.json,
    model.safetensors, tokenizer.json + tokenizer_config.json with the chat template) that transformers loads."""
    from slimtune.models.lm import lm_tokenizer

    shapes = layer_shapes(model)
    shape = uniform_shape(shapes)
    if shape is None:
        raise UnsupportedModelError(
            "the decoder blocks differ in shape (pruned per layer), which a Hugging Face config cannot describe; "
            "save it with slimtune.models.save_model instead"
        )
    config = plain_config(model.config)
    sync_config(config, shapes)
    with torch.device("meta"):
        probe = from_config(config)
    if layer_shapes(probe) != shapes or config_shape(config)["heads"] != shape["heads"]:
        raise UnsupportedModelError(
            f"a {config.model_type} config cannot describe blocks shaped {shape}; save it with save_model instead"
        )
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    old = model.config
    model.config = config
    try:
        with quiet_transformers():
            model.save_pretrained(str(out))  # type: ignore[operator]
    finally:
        model.config = old
    tok = lm_tokenizer(model)
    tf = transformers_module()
    special = {"eos_token": tok.token(tok.eos_id), "pad_token": tok.token(tok.pad_id)}
    if tok.bos_id is not None:
        special["bos_token"] = tok.token(tok.bos_id)
    fast = tf.PreTrainedTokenizerFast(tokenizer_object=tok.tokenizer, **special)
    if tok.chat_template:
        fast.chat_template = tok.chat_template
    fast.save_pretrained(str(out))
    return out


__all__ = ["ARCH", "from_spec", "gguf_info", "load_gguf", "load_hf_folder", "save_hf_folder", "spec_for_save"]
