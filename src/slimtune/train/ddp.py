"""DistributedDataParallel under ``torchrun``: detected from the environment, gloo on CPU, NCCL on GPUs
(each rank on ``cuda:LOCAL_RANK``; see :func:`slimtune.train.device.resolve_device`).

Launch the unchanged training script with one process per worker; ``fit`` notices ``WORLD_SIZE > 1``,
creates the process group (and destroys it again when it returns), wraps the model in DDP and gives
every rank an equal share of every global batch::

    torchrun --standalone --nproc_per_node=2 train.py
    # the same, without the console script:
    python -m torch.distributed.run --standalone --nproc_per_node=2 train.py

torchrun sets ``OMP_NUM_THREADS=1`` for each process unless it is already set; set it yourself to
give each rank more cores. With ``fit(..., checkpoint_dir=..., resume=True)``, adding
``--max-restarts=N`` makes torchrun restart all workers after one crashes, and they continue from the
last finished epoch.

What to expect, compared with one process:

- ``batch_size`` is the *global* batch; each of the ``W`` ranks trains on ``batch_size / W`` examples
  of it. A batch whose size is not a multiple of ``W`` is cut to one (the cut examples differ each
  epoch), because DDP averages the ranks' mean gradients, which equals the mean gradient of the
  whole batch only when every rank holds the same number of examples. With ``batch_size`` and the
  last batch divisible by ``W`` the updates match a single-process run up to float summation order.
- Validation runs on rank 0 only and its numbers are broadcast, so early stopping, the best epoch and
  ``restore_best`` decide the same on every rank; ``train_loss`` in the history is the global mean.
- Only rank 0 shows the progress bar (its running loss is rank 0's shard) and writes checkpoints;
  on ``resume`` rank 0 reads the checkpoint and sends it to the other ranks (no shared disk needed).
- Buffers (BatchNorm running statistics, pruning masks) follow DDP's ``broadcast_buffers``: rank 0's
  are copied to every rank before each forward and again after every epoch, so all ranks end with
  identical weights and buffers. BatchNorm batch statistics in training are per rank (per shard),
  so a BatchNorm model does not match a single-process run exactly.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

T = TypeVar("T")

_generation = 0  # process groups this module has created so far


def world() -> tuple[int, int]:
    """(rank, world_size); (0, 1) outside torchrun."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def _wanted() -> bool:
    return int(os.environ.get("WORLD_SIZE", 1)) > 1


def _backend(device: torch.device | None) -> str:
    if device is not None:
        return "nccl" if device.type == "cuda" else "gloo"
    return "nccl" if torch.cuda.is_available() else "gloo"


def init_if_needed(device: torch.device | None = None) -> bool:
    """Initialise the process group when launched by torchrun; returns whether training is distributed.

    The backend is nccl for a CUDA ``device`` and gloo otherwise (with no ``device``: nccl when CUDA is
    available). The caller owns a group created here; prefer :func:`process_group`, which cleans up.
    """
    if not _wanted():
        return False
    if not dist.is_initialized():
        _init_process_group(_backend(device))
    return True


def _init_process_group(backend: str) -> None:
    """``init_process_group`` through torchrun's store under a fresh key prefix each time.

    ``fit`` creates and destroys a group per call, and a plain env:// re-init after
    ``destroy_process_group`` reuses the previous group's store keys, as does a worker that torchrun
    restarted after a crash (the agent's store outlives its workers): a rank may then read another's
    stale address and fail to connect. The prefix names the restart and this process's group count;
    every rank creates the same groups in the same order, so the prefixes agree.
    """
    global _generation
    _generation += 1
    store, rank, world_size = next(dist.rendezvous("env://"))
    restart = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    prefixed = dist.PrefixStore(f"slimtune/restart-{restart}/pg-{_generation}/", store)
    dist.init_process_group(backend=backend, store=prefixed, rank=rank, world_size=world_size)


@contextmanager
def process_group(device: torch.device | None = None) -> Iterator[bool]:
    """Like :func:`init_if_needed` for a ``with`` block: yields whether training is distributed and
    destroys the process group on exit only if this block created it (a group the caller set up is
    left alone)."""
    created = _wanted() and not dist.is_initialized()
    distributed = init_if_needed(device)
    try:
        yield distributed
    finally:
        if created and dist.is_initialized():
            dist.destroy_process_group()


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def is_main() -> bool:
    return world()[0] == 0


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _comm_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(values: Sequence[float]) -> list[float]:
    """Sum each value over all ranks (in float64); the values unchanged outside DDP."""
    if not is_distributed():
        return list(values)
    t = torch.tensor(list(values), dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return [float(v) for v in t.tolist()]


def broadcast_floats(values: Sequence[float], src: int = 0) -> list[float]:
    """Rank ``src``'s values on every rank (float64, NaN preserved); unchanged outside DDP.
    Every rank must pass the same number of values."""
    if not is_distributed():
        return list(values)
    t = torch.tensor(list(values), dtype=torch.float64, device=_comm_device())
    dist.broadcast(t, src=src)
    return [float(v) for v in t.tolist()]


def broadcast_object(obj: T, src: int = 0) -> T:
    """Rank ``src``'s picklable ``obj`` on every rank (tensors come back on the CPU); ``obj`` outside DDP."""
    if not is_distributed():
        return obj
    box: list[Any] = [obj if dist.get_rank() == src else None]
    dist.broadcast_object_list(box, src=src, device=_comm_device())
    return box[0]  # type: ignore[no-any-return]


@torch.no_grad()
def sync_buffers(module: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s buffers (BatchNorm statistics, masks) to every rank; no-op outside DDP."""
    if not is_distributed():
        return
    for buf in module.buffers():
        dist.broadcast(buf, src=src)
