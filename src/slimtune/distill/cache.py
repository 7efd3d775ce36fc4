"""Teacher output cache: the teacher's logits over the training split, computed once and reused every epoch.

The training loop hands a task ``(model, x, y)`` for a shuffled batch, not the example indices, so the
cache is keyed by a 128-bit BLAKE2b digest of each input row's bytes. That is exact whatever the loop
does (shuffling, DDP shards, a batch of rows the cache has never seen): a row found in the cache gets
the logits the eval-mode teacher gave that same row; a row not found (augmented on the fly, say) is sent
through the teacher live. Hashing a batch of 64 rows costs tens of microseconds.

Saved as safetensors (``logits`` (N, C), ``digests`` (N, 16) uint8) with a fingerprint of the teacher's
weights, so a cache on disk is reused only for the same teacher (``TeacherCache.build(..., path=...)``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from slimtune._io import atomic_path
from slimtune.errors import DataError
from slimtune.train.loop import predict

DIGEST_BYTES = 16


def row_digests(x: torch.Tensor) -> list[bytes]:
    """One digest per row of ``x`` (any dtype, any shape after the first dimension)."""
    rows = x.detach().reshape(len(x), -1).cpu().contiguous().numpy()
    return [hashlib.blake2b(row.data, digest_size=DIGEST_BYTES).digest() for row in rows]


def fingerprint(model: nn.Module) -> str:
    """A digest of every parameter and buffer (names included): same weights ⇔ same fingerprint."""
    h = hashlib.blake2b(digest_size=16)
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().data)
    return h.hexdigest()


class TeacherCache:
    """Teacher logits for a set of input rows, looked up by row digest."""

    def __init__(self, digests: list[bytes], logits: torch.Tensor, *, teacher_fingerprint: str = "") -> None:
        if len(digests) != len(logits):
            raise DataError(f"teacher cache has {len(digests)} keys but {len(logits)} rows of logits")
        self.logits = logits.detach().cpu()
        self.digests = digests
        self.index = {d: i for i, d in enumerate(digests)}
        self.teacher_fingerprint = teacher_fingerprint
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self.digests)

    @classmethod
    def build(
        cls, teacher: nn.Module, x: torch.Tensor, *, path: str | Path | None = None, batch_size: int = 512
    ) -> TeacherCache:
        """The eval-mode teacher's logits for every row of ``x``; with ``path``, loaded from it when it was
        written for this teacher and holds every row, else computed and saved there."""
        print_ = fingerprint(teacher)
        digests = row_digests(x)
        if path is not None and Path(path).exists():
            cached = cls.load(path)
            if cached.teacher_fingerprint == print_ and all(d in cached.index for d in digests):
                return cached
        cache = cls(digests, predict(teacher, x, batch_size=batch_size), teacher_fingerprint=print_)
        if path is not None:
            cache.save(path)
        return cache

    def extend(self, teacher: nn.Module, x: torch.Tensor, *, batch_size: int = 512) -> torch.Tensor:
        """Add the rows of ``x`` not cached yet, with the eval-mode teacher's logits; returns the logits of
        every row of ``x`` (each row hashed once)."""
        digests = row_digests(x)
        new: dict[bytes, int] = {}
        for i, d in enumerate(digests):
            if d not in self.index:
                new.setdefault(d, i)
        if new:
            rows = torch.tensor(list(new.values()), dtype=torch.long)
            logits = predict(teacher, x[rows], batch_size=batch_size).detach().cpu()
            self.logits = torch.cat([self.logits, logits.to(self.logits.dtype)])
            for d in new:
                self.index[d] = len(self.digests)
                self.digests.append(d)
        return self.logits[torch.tensor([self.index[d] for d in digests], dtype=torch.long)]

    def lookup(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits for the rows found, boolean mask of the rows found), logits on ``x``'s device."""
        idx = torch.tensor([self.index.get(d, -1) for d in row_digests(x)], dtype=torch.long)
        found = idx >= 0
        self.hits += int(found.sum())
        self.misses += int((~found).sum())
        return self.logits[idx[found]].to(x.device), found.to(x.device)

    def logits_for(self, x: torch.Tensor, teacher: nn.Module) -> torch.Tensor:
        """Teacher logits for every row of ``x``: cached rows from the cache, the others from ``teacher``."""
        logits, found = self.lookup(x)
        if bool(found.all()):
            return logits
        with torch.no_grad():
            live = teacher(x[~found])
        out = torch.empty((len(x), *live.shape[1:]), dtype=live.dtype, device=live.device)
        out[~found] = live
        if len(logits):
            out[found] = logits.to(live.dtype)
        return out

    def save(self, path: str | Path) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        keys = torch.frombuffer(bytearray(b"".join(self.digests)), dtype=torch.uint8).view(-1, DIGEST_BYTES)
        with atomic_path(p) as tmp:
            save_file(
                {"logits": self.logits.contiguous(), "digests": keys.clone()},
                str(tmp),
                metadata={"teacher": self.teacher_fingerprint},
            )
        return p

    @classmethod
    def load(cls, path: str | Path) -> TeacherCache:
        from safetensors import safe_open

        try:
            tensors = load_file(str(path))
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
        except Exception as exc:
            raise DataError(f"cannot read the teacher cache '{path}': {exc}; delete it to recompute") from None
        keys = tensors["digests"].numpy()
        digests = [bytes(row) for row in keys]
        return cls(digests, tensors["logits"], teacher_fingerprint=meta.get("teacher", ""))
