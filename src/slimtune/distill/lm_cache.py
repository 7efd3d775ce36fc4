"""Teacher-logit cache for causal-LM distillation: the teacher's top-k logits and their token ids at
every position of every training window, computed once, written to disk, reused every epoch (and by
the next run with the same teacher), so the teacher runs once per token instead of once per epoch.

A full logit cache would hold ``windows × tokens × vocab`` floats (49,152 per token for SmolLM2); the
top ``k`` (default 32) hold most of a trained LM's probability mass. They are stored as log-probabilities
(normalised over the whole vocabulary), so the KD loss (:func:`slimtune.distill.lm.topk_kl`) also knows the
mass the teacher puts outside them and matches it as one more bucket: without it the loss pulls all of the
student's mass onto the teacher's k tokens (a student equal to its teacher does not minimise it), and
perplexity can rise on the tokens outside (SparseGPT-50% SmolLM2 distilled on the renormalised top 32 went
from +50% to +56%). Windows are keyed by the same 128-bit digest of their token ids as the classifier
cache (:mod:`slimtune.distill.cache`), so shuffling, DDP shards and micro-batches all find their rows; a
window not in the cache goes to the teacher live.

On disk: one safetensors file (``values`` float32 (N, T, k) log-probabilities, ``indices`` int32 (N, T, k),
``digests`` uint8 (N, 16)) whose metadata holds the teacher's fingerprint, k and ``values: logprobs`` (a cache
written before that held raw logits: it is recomputed). No pickle.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from slimtune._io import atomic_path
from slimtune.distill.cache import DIGEST_BYTES, fingerprint, row_digests
from slimtune.errors import ConfigError, DataError
from slimtune.train.device import model_device
from slimtune.train.lm import lm_forward


@torch.no_grad()
def teacher_topk(
    teacher: nn.Module, x: torch.Tensor, k: int, *, batch_size: int = 16
) -> tuple[torch.Tensor, torch.Tensor]:
    """The eval-mode teacher's top-``k`` log-probabilities (N, T, k) float32 (normalised over the whole
    vocabulary) and token ids (N, T, k) int64 for ``x``, on the CPU (the teacher's mode is restored)."""
    device = model_device(teacher)
    was_training = teacher.training
    teacher.eval()
    values, indices = [], []
    try:
        for i in range(0, len(x), batch_size):
            logits = lm_forward(teacher, x[i : i + batch_size].to(device)).float()
            if k > logits.shape[-1]:
                raise ConfigError(f"top_k {k} exceeds the teacher's vocabulary of {logits.shape[-1]}; lower top_k")
            v, ix = logits.topk(k, dim=-1)
            values.append((v - logits.logsumexp(dim=-1, keepdim=True)).cpu())
            indices.append(ix.cpu())
    finally:
        teacher.train(was_training)
    return torch.cat(values), torch.cat(indices)


class LMTeacherCache:
    """Top-k teacher logits per window, looked up by the window's digest."""

    def __init__(
        self, digests: list[bytes], values: torch.Tensor, indices: torch.Tensor, *, teacher_fingerprint: str = "",
        logprobs: bool = True,
    ) -> None:  # fmt: skip
        if not (len(digests) == len(values) == len(indices)) or values.shape != indices.shape:
            raise DataError(
                f"LM teacher cache is inconsistent: {len(digests)} keys, values {tuple(values.shape)}, "
                f"indices {tuple(indices.shape)}; delete it to recompute"
            )
        self.digests = digests
        self.values = values.detach().float().cpu()
        self.indices = indices.detach().long().cpu()
        self.index = {d: i for i, d in enumerate(digests)}
        self.teacher_fingerprint = teacher_fingerprint
        self.logprobs = logprobs  # values normalised over the vocabulary (False: raw logits of an older cache)
        self.hits = self.misses = 0

    @property
    def top_k(self) -> int:
        return int(self.values.shape[-1])

    def __len__(self) -> int:
        return len(self.digests)

    @classmethod
    def build(
        cls, teacher: nn.Module, x: torch.Tensor, *, top_k: int = 32, path: str | Path | None = None,
        batch_size: int = 16,
    ) -> LMTeacherCache:  # fmt: skip
        """The teacher's top-``top_k`` logits for every window of ``x``. With ``path``: loaded from it when
        it was written for this teacher with at least ``top_k`` and holds every window, else computed and
        written there."""
        if top_k < 1:
            raise ConfigError(f"top_k must be >= 1, got {top_k}")
        teacher_print = fingerprint(teacher)
        digests = row_digests(x)
        if path is not None and Path(path).exists():
            cached = cls.load(path)
            fits = cached.teacher_fingerprint == teacher_print and cached.top_k >= top_k and cached.logprobs
            if fits and all(d in cached.index for d in digests):
                return cached.truncated(top_k)
        values, indices = teacher_topk(teacher, x, top_k, batch_size=batch_size)
        cache = cls(digests, values, indices, teacher_fingerprint=teacher_print)
        if path is not None:
            cache.save(path)
        return cache

    def truncated(self, k: int) -> LMTeacherCache:
        """This cache keeping only the top ``k`` (``topk`` sorts, so these are the first ``k``)."""
        if k >= self.top_k:
            return self
        return LMTeacherCache(
            self.digests, self.values[..., :k], self.indices[..., :k], teacher_fingerprint=self.teacher_fingerprint,
            logprobs=self.logprobs,
        )  # fmt: skip

    def lookup(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(values, indices) of the windows found, and the boolean mask of the windows found, on ``x``'s device."""
        idx = torch.tensor([self.index.get(d, -1) for d in row_digests(x)], dtype=torch.long)
        found = idx >= 0
        self.hits += int(found.sum())
        self.misses += int((~found).sum())
        rows = idx[found]
        return self.values[rows].to(x.device), self.indices[rows].to(x.device), found.to(x.device)

    def topk_for(self, x: torch.Tensor, teacher: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k (values, indices) for every window of ``x``: cached ones from the cache, the others from
        ``teacher`` (live, not added)."""
        values, indices, found = self.lookup(x)
        if bool(found.all()):
            return values, indices
        live_v, live_i = teacher_topk(teacher, x[~found], self.top_k)
        out_v = torch.empty((len(x), *live_v.shape[1:]), dtype=torch.float32, device=x.device)
        out_i = torch.empty((len(x), *live_i.shape[1:]), dtype=torch.long, device=x.device)
        out_v[~found], out_i[~found] = live_v.to(x.device), live_i.to(x.device)
        if len(values):
            out_v[found], out_i[found] = values, indices
        return out_v, out_i

    def save(self, path: str | Path) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        keys = torch.frombuffer(bytearray(b"".join(self.digests)), dtype=torch.uint8).view(-1, DIGEST_BYTES)
        tensors = {
            "values": self.values.contiguous(),
            "indices": self.indices.to(torch.int32).contiguous(),
            "digests": keys.clone(),
        }
        with atomic_path(p) as tmp:
            meta = {"teacher": self.teacher_fingerprint, "top_k": str(self.top_k)}
            if self.logprobs:
                meta["values"] = "logprobs"
            save_file(tensors, str(tmp), metadata=meta)
        return p

    @classmethod
    def load(cls, path: str | Path) -> LMTeacherCache:
        from safetensors import safe_open

        try:
            tensors = load_file(str(path))
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
            values, indices, keys = tensors["values"], tensors["indices"], tensors["digests"]
        except Exception as exc:
            raise DataError(f"cannot read the LM teacher cache '{path}': {exc}; delete it to recompute") from None
        digests = [bytes(row) for row in keys.numpy()]
        return cls(digests, values, indices, teacher_fingerprint=meta.get("teacher", ""),
                   logprobs=meta.get("values") == "logprobs")  # fmt: skip
