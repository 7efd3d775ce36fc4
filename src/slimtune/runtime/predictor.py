"""Serve a deploy bundle with ONNX Runtime and numpy only (``tokenizers`` for Hugging Face text models).

Nothing here imports torch: ``Predictor`` starts in a fraction of a second and runs where torch is absent.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from slimtune.errors import ConfigError, DataError, MissingDependencyError
from slimtune.runtime.bundle import Manifest, open_session, read_manifest
from slimtune.runtime.images import IMAGE_SUFFIXES, image_files, images_to_array, is_pil_image, open_images
from slimtune.runtime.text import length_buckets, word_ids

DYNAMIC_OPS = {"DynamicQuantizeLinear", "DynamicQuantizeMatMul", "DynamicQuantizeLSTM", "QAttention"}


def _dynamic_quantized(model: Path) -> bool:
    """True when the graph quantizes activations with scales computed from each batch (ORT dynamic int8)."""
    import onnx

    try:
        graph = onnx.load(str(model), load_external_data=False).graph
    except Exception:  # an unreadable file has already failed to load in ONNX Runtime
        return False
    return any(node.op_type in DYNAMIC_OPS for node in graph.node)


def _is_image_input(item: Any) -> bool:
    """A PIL image, a path, or a string naming an image file or a folder (never plain text)."""
    if is_pil_image(item) or isinstance(item, os.PathLike):
        return True
    return isinstance(item, str) and (item.lower().endswith(IMAGE_SUFFIXES) or os.path.isdir(item))


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=1, keepdims=True))


class Predictor:
    """``Predictor("bundle/").predict(inputs)``: labels and probabilities for images, rows or texts.

    Images: a numpy array of one image or a batch, shaped like the bundle's input (the channel axis may be
    left out for 1-channel images), or image files, folders of them (paths, or strings ending in an image
    suffix) and PIL images, in the order given (converted, resized and scaled per the
    bundle's input contract, see ``runtime.images``). Pixel arrays are scaled by their value range: integer
    arrays, and float arrays with any value above 1, are raw pixels (0–255, or the raw range the bundle was
    trained from, e.g. 0–16 for digits) and are scaled as in training; float arrays within [0, 1] are taken
    as already scaled. Values outside the raw range are an error. Texts: a string or a list of strings.

    Non-finite inputs (NaN, inf) are refused with one ``DataError`` naming the row. Bundles quantized with
    dynamic int8 compute their activation scales from the batch they see, so one extreme row would change
    every other row's result: their float rows are run one at a time, and a row's result never depends on the
    others. Text (token ids, bounded by the vocabulary) cannot hold an extreme row and runs in batches.
    """

    def __init__(self, bundle: str | Path, *, threads: int | None = None) -> None:
        self.manifest: Manifest = read_manifest(bundle)
        if self.manifest.kind == "lm":
            raise DataError(f"bundle '{bundle}' holds a language model: use `slimtune generate` (LMGenerator) for it")
        self.session = open_session(self.manifest, threads=threads)  # checked against bundle.json
        self.input_name = self.session.get_inputs()[0].name
        model = self.manifest.file("model")
        # only float inputs can hold an extreme row; token ids (text) are bounded, so text batches normally
        floats = "float" in str(self.session.get_inputs()[0].type)
        self.row_by_row = floats and self.manifest.raw.get("precision") == "int8" and _dynamic_quantized(model)
        self._tokenizer: Any = self._load_tokenizer() if self.kind == "text" else None

    @property
    def kind(self) -> str:
        return self.manifest.kind

    @property
    def labels(self) -> list[str]:
        return self.manifest.labels

    def _load_tokenizer(self) -> Any:
        spec = self.manifest.input.get("tokenizer", {})
        path = self.manifest.file("tokenizer")
        if spec.get("type") == "hf":
            try:
                from tokenizers import Tokenizer
            except ImportError as exc:
                raise MissingDependencyError("this text bundle needs tokenizers: pip install tokenizers") from exc
            try:
                return Tokenizer.from_file(str(path))
            except Exception as exc:  # the tokenizers library raises a bare Exception for a damaged file
                first = "".join(str(exc).strip().splitlines()[:1])[:160]
                raise DataError(f"{path} is not a readable tokenizer ({first}); copy the bundle again") from None
        try:
            vocab = json.loads(path.read_text(encoding="utf-8"))["vocab"]
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{path} is not slimtune's word vocabulary ({exc!r}); copy the bundle again") from None
        return {tok: i for i, tok in enumerate(vocab)}

    def preprocess(self, inputs: Any) -> np.ndarray:
        """The model's input array for ``inputs`` (texts → token ids; raw pixels → scaled floats)."""
        if self.kind == "text":
            return self._encode_texts(inputs)
        return self._prepare_arrays(inputs)

    def _encode_texts(self, inputs: Any) -> np.ndarray:
        texts = [inputs] if isinstance(inputs, str) else inputs
        if not isinstance(texts, Sequence) or not all(isinstance(t, str) for t in texts):
            raise DataError("this bundle takes text: pass a string or a list of strings")
        if not texts:
            raise DataError("no texts given: pass at least one string")
        empty = [i for i, t in enumerate(texts) if not t.strip()]
        if empty:
            raise DataError(f"text #{empty[0]} is empty; every input must contain some text")
        spec = self.manifest.input["tokenizer"]
        max_length = int(spec["max_length"])
        pad: int | None
        if isinstance(self._tokenizer, dict):
            ids = np.asarray(word_ids(self._tokenizer, list(texts), max_length=max_length), dtype=np.int64)
            pad = 0
        else:
            ids = np.asarray([e.ids for e in self._tokenizer.encode_batch(list(texts))], dtype=np.int64)
            pad = (self._tokenizer.padding or {}).get("pad_id")
        if spec.get("trim_padding") and pad is not None:  # checked at export: the model masks its padding
            used = np.nonzero((ids != pad).any(axis=0))[0]
            ids = ids[:, : int(used[-1]) + 1 if len(used) else 1]
        return ids

    def _prepare_arrays(self, inputs: Any) -> np.ndarray:
        shape = tuple(int(s) for s in self.manifest.input["shape"])
        items = inputs if isinstance(inputs, (list, tuple)) else [inputs]
        if items and all(_is_image_input(i) for i in items):
            if self.kind != "image":
                raise DataError(f"this bundle takes {self.kind} arrays shaped {shape}, not images; pass a numpy array")
            images = [im for i in items for im in ([i] if is_pil_image(i) else open_images(image_files(i)))]
            return images_to_array(images, self.manifest.input)
        if isinstance(inputs, str) or (isinstance(inputs, (list, tuple)) and inputs and isinstance(inputs[0], str)):
            raise DataError(f"this bundle takes {self.kind} arrays, not text: pass a numpy array shaped {shape}")
        try:
            x = np.asarray(inputs)
        except ValueError as exc:  # ragged nested lists
            raise DataError(f"expected a numeric array shaped {shape} or (N, *{shape}); {exc}") from None
        if x.dtype == object or x.size == 0 or x.dtype.kind not in "biuf":
            raise DataError(f"expected a numeric array shaped {shape} or (N, *{shape}); got {x.shape} {x.dtype}")
        squeezed = shape[1:] if len(shape) > 1 and shape[0] == 1 else None  # 1-channel image without channel axis
        if x.shape == shape or (squeezed is not None and x.shape == squeezed):
            x = x[None]
        if squeezed is not None and x.shape[1:] == squeezed:
            x = x[:, None]
        if x.shape[1:] != shape:
            what = "images" if self.kind == "image" else "rows"
            alt = f" or {squeezed}" if squeezed is not None else ""
            raise DataError(f"this bundle expects {what} of shape {shape}{alt}; got an array of shape {x.shape}")
        if x.dtype.kind == "f":
            bad = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1)
            if bad.any():
                rows = np.nonzero(bad)[0]
                more = f" (and {len(rows) - 1} more)" if len(rows) > 1 else ""
                raise DataError(
                    f"input row {int(rows[0])}{more} has NaN or infinite values; clean or drop it (every value must "
                    "be a finite number)"
                )
        if self.kind == "image":
            return self._scale_pixels(x)
        return x.astype(np.float32)

    def _scale_pixels(self, x: np.ndarray) -> np.ndarray:
        """Raw pixels (integers, or floats above 1) → the training scale; floats in [0, 1] are kept."""
        scale = self.manifest.input.get("pixel_scale")
        raw = x.dtype.kind in "biu" or (x.dtype.kind == "f" and float(x.max()) > 1.0)
        if not raw:
            return x.astype(np.float32)
        if scale is None:
            if x.dtype.kind == "f":
                return x.astype(np.float32)  # no raw-pixel contract: floats are the model's own inputs
            raise DataError("this bundle takes float inputs already scaled as in training; got integers")
        top = 1.0 / float(scale)
        low, high = float(x.min()), float(x.max())
        if low < 0 or high > top * (1 + 1e-6):
            row = int(np.nonzero(((x < 0) | (x > top * (1 + 1e-6))).reshape(len(x), -1).any(axis=1))[0][0])
            raise DataError(
                f"input row {row} has pixel values outside this bundle's raw range 0–{top:g} (got {low:g}..{high:g}); "
                f"pass raw pixels in 0–{top:g} or floats already scaled to [0, 1]"
            )
        return (x.astype(np.float32) * np.float32(scale)).astype(np.float32)

    def _trim_pad_id(self) -> int | None:
        """The pad id when export verified the model masks its padding (batches may be cut), else None."""
        spec = self.manifest.input.get("tokenizer", {})
        if self.kind != "text" or not spec.get("trim_padding"):
            return None
        if isinstance(self._tokenizer, dict):
            return 0
        pad = (self._tokenizer.padding or {}).get("pad_id")
        return None if pad is None else int(pad)

    def logits(self, inputs: Any, *, batch_size: int = 256) -> np.ndarray:
        x = self.preprocess(inputs)
        if self.row_by_row:
            batch_size = 1  # dynamic int8: a batch shares activation scales, so rows run alone
        pad = self._trim_pad_id()
        if pad is not None and len(x) > 1:  # length buckets: each batch padded only to its own longest text
            out: np.ndarray | None = None
            for rows, ids in length_buckets(x.tolist(), pad, batch_size):
                got = self.session.run(None, {self.input_name: np.asarray(ids, dtype=x.dtype)})[0]
                out = np.empty((len(x), *got.shape[1:]), got.dtype) if out is None else out
                out[rows] = got
            assert out is not None
            return out
        outs = [
            self.session.run(None, {self.input_name: x[i : i + batch_size]})[0] for i in range(0, len(x), batch_size)
        ]
        return np.concatenate(outs)

    def predict_proba(self, inputs: Any) -> np.ndarray:
        return softmax(self.logits(inputs))

    def predict(self, inputs: Any, *, top_k: int = 1) -> list[dict[str, Any]]:
        """One dict per input: ``label``, ``index``, ``probability`` and the ``top`` k (label, probability) pairs."""
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ConfigError(f"top_k (--top-k) must be a whole number >= 1, got {top_k!r}; e.g. --top-k 3")
        probs = self.predict_proba(inputs)
        k = min(top_k, probs.shape[1])  # more than there are labels: all of them
        out = []
        for row in probs:
            order = np.argsort(-row)[:k]
            top = [(self._label(int(i)), float(row[i])) for i in order]
            out.append({"label": top[0][0], "index": int(order[0]), "probability": top[0][1], "top": top})
        return out

    def _label(self, i: int) -> str:
        return self.labels[i] if i < len(self.labels) else str(i)

    def example_inputs(self, n: int) -> Any:
        """``n`` inputs for benchmarking: the bundle's stored test examples (tiled), or sample texts."""
        if self.kind == "text":
            base = self.manifest.raw.get("examples") or ["an example sentence for timing the model"]
            return [base[i % len(base)] for i in range(n)]
        stored = np.load(self.manifest.file("examples"), allow_pickle=False)
        reps = -(-n // len(stored))
        return np.concatenate([stored] * reps)[:n]
