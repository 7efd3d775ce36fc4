"""Serve a deploy bundle with ONNX Runtime and numpy only (``tokenizers`` for Hugging Face text models).

Nothing here imports torch: ``Predictor`` starts in a fraction of a second and runs where torch is absent.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from slimtune.errors import DataError, MissingDependencyError
from slimtune.runtime.bundle import Manifest, read_manifest
from slimtune.runtime.text import word_ids


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=1, keepdims=True))


class Predictor:
    """``Predictor("bundle/").predict(inputs)``: labels and probabilities for images, rows or texts.

    Images: a numpy array of one image or a batch, shaped like the bundle's input (the channel axis may be
    left out for 1-channel images). Integer arrays are raw pixels, scaled as in training; float arrays are
    taken as already scaled. Texts: a string or a list of strings.
    """

    def __init__(self, bundle: str | Path, *, threads: int | None = None) -> None:
        self.manifest: Manifest = read_manifest(bundle)
        if self.manifest.kind == "lm":
            raise DataError(f"bundle '{bundle}' holds a language model: use `slimtune generate` (LMGenerator) for it")
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise MissingDependencyError("the runtime needs onnxruntime: pip install onnxruntime") from exc
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = int(threads)
        opts.log_severity_level = 3
        model = self.manifest.file("model")
        self.session = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
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
            return Tokenizer.from_file(str(path))
        vocab = json.loads(path.read_text(encoding="utf-8"))["vocab"]
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
        if isinstance(inputs, str) or (isinstance(inputs, (list, tuple)) and inputs and isinstance(inputs[0], str)):
            raise DataError(f"this bundle takes {self.kind} arrays, not text: pass a numpy array shaped {shape}")
        x = np.asarray(inputs)
        if x.dtype == object or x.size == 0:
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
        if np.issubdtype(x.dtype, np.integer) and self.kind == "image":
            scale = self.manifest.input.get("pixel_scale")
            if scale is None:
                raise DataError("this bundle takes float inputs already scaled as in training; got integers")
            return (x.astype(np.float32) * np.float32(scale)).astype(np.float32)
        return x.astype(np.float32)

    def logits(self, inputs: Any, *, batch_size: int = 256) -> np.ndarray:
        x = self.preprocess(inputs)
        outs = [
            self.session.run(None, {self.input_name: x[i : i + batch_size]})[0] for i in range(0, len(x), batch_size)
        ]
        return np.concatenate(outs)

    def predict_proba(self, inputs: Any) -> np.ndarray:
        return softmax(self.logits(inputs))

    def predict(self, inputs: Any, *, top_k: int = 1) -> list[dict[str, Any]]:
        """One dict per input: ``label``, ``index``, ``probability`` and the ``top`` k (label, probability) pairs."""
        probs = self.predict_proba(inputs)
        k = max(1, min(int(top_k), probs.shape[1]))
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
