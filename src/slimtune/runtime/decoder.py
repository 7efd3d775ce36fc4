"""Run a KV-cache decoder graph with ONNX Runtime + numpy: prefill, then one token per step.

The graph (``slimtune.export.lm_onnx``, or any with the same names) takes ``input_ids``, ``attention_mask``
[b, past+s], ``position_ids`` and ``past_key_values.{i}.key|value`` [b, kv_heads, past, head_dim]; it returns
``logits`` and ``present.{i}.key|value``. Prompts of a batch are left-padded: padding is masked out and
positions count only real tokens, so a padded row generates what it would alone.

A graph without ``position_ids`` (slimtune's fused graph ``export.lm_fuse``, onnxruntime-genai's model builder:
GroupQueryAttention reads each row's length as ``sum(attention_mask) - 1`` and keeps its keys at cache slots
``0 .. length - 1``) cannot serve left padding; its prompts are right-padded instead, each row's next-token logits
are read at its own last prompt token, and each step's mask is ones over that row's tokens so far (its new key
lands in the row's next free slot). Such a graph decodes in place: each cache is one preallocated buffer of the
final length, bound (ONNX Runtime IO binding) as both the past input and the present output, so
GroupQueryAttention writes only the new keys — no copy of the cache per step (onnxruntime-genai's
``past_present_share_buffer``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from slimtune.errors import DataError, MissingDependencyError
from slimtune.runtime.sampling import Sampling, next_tokens

PAST = "past_key_values.{}.{}"
PRESENT = "present.{}.{}"


def ort_decoder_session(path: str | Path, *, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session with every graph optimisation on."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise MissingDependencyError("the runtime needs onnxruntime: pip install onnxruntime") from exc
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        opts.intra_op_num_threads = int(threads)
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


@dataclass
class Batch:
    """Left-padded prompts: ids and mask [b, n]; ``lengths`` are the real prompt lengths."""

    ids: np.ndarray
    mask: np.ndarray
    lengths: np.ndarray


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int, *, right: bool = False) -> Batch:
    """The prompts padded to one length with ``pad_id`` on the left (or, with ``right``, on the right)."""
    if not prompts or any(len(p) == 0 for p in prompts):
        raise DataError("every prompt must have at least one token; pass non-empty text")
    n = max(len(p) for p in prompts)
    ids = np.full((len(prompts), n), pad_id, dtype=np.int64)
    mask = np.zeros((len(prompts), n), dtype=np.int64)
    for row, p in enumerate(prompts):
        where = slice(0, len(p)) if right else slice(n - len(p), n)
        ids[row, where] = p
        mask[row, where] = 1
    return Batch(ids, mask, np.asarray([len(p) for p in prompts], dtype=np.int64))


class Decoder:
    """One KV-cache decoder graph: ``step`` runs it; ``generate`` loops it."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.past_shapes: list[tuple[int, int]] = []  # (kv heads, head_dim) per past tensor, in input order
        self.past_names: list[str] = []
        for inp in session.get_inputs():
            if inp.name.startswith("past_key_values."):
                self.past_names.append(inp.name)
                self.past_shapes.append((int(inp.shape[1]), int(inp.shape[3])))
        if not self.past_names or {"input_ids", "attention_mask"} - {i.name for i in session.get_inputs()}:
            raise DataError("this ONNX model is not a KV-cache decoder (no input_ids / past_key_values inputs)")
        self.present_names = [n.replace("past_key_values.", "present.") for n in self.past_names]
        self.uses_positions = "position_ids" in {i.name for i in session.get_inputs()}
        self.right_padded = not self.uses_positions  # see the module docstring

    @property
    def num_layers(self) -> int:
        return len(self.past_names) // 2

    def empty_past(self, batch: int) -> list[np.ndarray]:
        return [np.zeros((batch, kv, 0, d), dtype=np.float32) for kv, d in self.past_shapes]

    def step(
        self, ids: np.ndarray, mask: np.ndarray, positions: np.ndarray, past: list[np.ndarray]
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """Logits [b, s, vocab] and the new cache for ``ids`` [b, s] after ``past``; ``mask`` covers past + s."""
        feed: dict[str, np.ndarray] = {"input_ids": ids, "attention_mask": mask}
        if self.uses_positions:
            feed["position_ids"] = positions
        feed.update(zip(self.past_names, past))
        outs = self.session.run(["logits", *self.present_names], feed)
        return outs[0], outs[1:]

    def prefill(self, batch: Batch) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
        """Run the prompts; returns last-position logits [b, vocab], the cache and each row's next position."""
        positions = np.maximum(np.cumsum(batch.mask, axis=1) - 1, 0)
        logits, past = self.step(batch.ids, batch.mask, positions, self.empty_past(len(batch.ids)))
        last = batch.lengths - 1 if self.right_padded else np.full(len(batch.ids), -1)
        return logits[np.arange(len(batch.ids)), last], past, batch.lengths.copy()

    def steps(
        self,
        prompts: Sequence[Sequence[int]],
        *,
        max_new_tokens: int,
        sampling: Sampling | None = None,
        eos_ids: Sequence[int] = (),
        pad_id: int = 0,
        active: np.ndarray | None = None,
    ) -> Iterator[np.ndarray]:
        """Yield each step's new tokens [b] for a left-padded batch of prompts (``pad_id`` where a row has
        stopped). A row stops after yielding an EOS id, after ``max_new_tokens``, or when the caller sets it False
        in ``active`` (a bool array [b] it passes in, e.g. on a stop string)."""
        sampling = sampling or Sampling()
        rng = sampling.rng()
        batch = left_pad(prompts, pad_id, right=self.right_padded)
        active = np.ones(len(prompts), dtype=bool) if active is None else active
        if max_new_tokens <= 0:
            return
        logits, past, positions = self.prefill(batch)
        mask = batch.mask
        shared = _SharedCache(self, past, batch.ids.shape[1] + max_new_tokens) if self.right_padded else None
        eos = np.asarray(list(eos_ids), dtype=np.int64)
        for step in range(max_new_tokens):
            tokens = np.where(active, next_tokens(logits, sampling, rng), pad_id)
            yield tokens
            active &= ~np.isin(tokens, eos)
            if not active.any() or step == max_new_tokens - 1:
                return
            if self.right_padded:  # ones over each row's tokens so far, wherever the row stands
                mask = (np.arange(mask.shape[1] + 1)[None] <= positions[:, None]).astype(np.int64)
            else:
                mask = np.concatenate([mask, active[:, None].astype(np.int64)], axis=1)
            if shared is not None:
                step_logits = shared.step(tokens[:, None], mask)
            else:
                step_logits, past = self.step(tokens[:, None], mask, positions[:, None], past)
            logits = step_logits[:, -1]
            positions = positions + 1

    def generate(self, prompts: Sequence[Sequence[int]], **options: Any) -> list[list[int]]:
        """New token ids per prompt (an EOS id that stopped a row is included); options as ``steps``."""
        active = np.ones(len(prompts), dtype=bool)
        out: list[list[int]] = [[] for _ in prompts]
        for tokens in self.steps(prompts, active=active, **options):
            for row in np.nonzero(active)[0]:
                out[row].append(int(tokens[row]))
        return out


class _SharedCache:
    """The KV cache of a right-padded (GroupQueryAttention) graph as preallocated buffers [b, kv, capacity, d],
    each bound as both past input and present output, so a decode step appends in place (module docstring)."""

    def __init__(self, decoder: Decoder, past: list[np.ndarray], capacity: int) -> None:
        import onnxruntime as ort

        self.decoder = decoder
        self.arrays: list[np.ndarray] = []
        for arr in past:
            buffer = np.zeros((*arr.shape[:2], capacity, arr.shape[3]), dtype=np.float32)
            buffer[:, :, : arr.shape[2]] = arr
            self.arrays.append(buffer)  # kept alive: the OrtValues below alias this memory
        self.values = [ort.OrtValue.ortvalue_from_numpy(a) for a in self.arrays]
        self.binding = decoder.session.io_binding()
        # bound once (logits first: get_outputs() follows binding order); only the ids and mask change per step —
        # the cache buffers never move and the logits are allocated by each run
        self.binding.bind_output("logits", "cpu")
        for past_name, present_name, value in zip(decoder.past_names, decoder.present_names, self.values):
            self.binding.bind_ortvalue_input(past_name, value)
            self.binding.bind_ortvalue_output(present_name, value)

    def step(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        io = self.binding
        io.bind_cpu_input("input_ids", np.ascontiguousarray(ids, dtype=np.int64))
        io.bind_cpu_input("attention_mask", np.ascontiguousarray(mask, dtype=np.int64))
        self.decoder.session.run_with_iobinding(io)
        logits: np.ndarray = io.get_outputs()[0].numpy()
        return logits
