"""DistributedDataParallel under torchrun: two CPU processes (gloo) against one plain process.

One script is run twice: by ``python -m torch.distributed.run --standalone --nproc_per_node=2`` (with
``--max-restarts=1``: rank 0 SIGKILLs itself once mid-run, torchrun restarts both workers and they
resume from the checkpoint) and, meanwhile, as a plain single process (this pytest process, via
runpy, so torch and the data are already loaded). Every rank writes its own JSON (history, best
epoch, test accuracy, weight checksum) and weights, so the test checks both that the ranks agree with
each other (exactly) and that two processes agree with one (closely). About 15 s on 2 CPU cores."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch

from slimtune.testing.ddp import read_report, read_weights, single_and_torchrun
from slimtune.train import TrainConfig
from slimtune.train.loop import _batches

SCRIPT = textwrap.dedent(
    """
    import contextlib, hashlib, json, os, signal, sys
    import torch
    import torch.distributed as dist
    from slimtune.data import load
    from slimtune.models import build
    from slimtune.train import Callback, TrainConfig, fit, predict

    out = sys.argv[1]
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    attempt = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", 0))  # torchrun restarts the group after a crash

    class KillRank0(Callback):
        # a hard crash of one worker mid-epoch 3, on the first attempt only
        def on_step_end(self, state):
            if rank == 0 and attempt == 0 and state.epoch == 2 and state.step == 3:
                open(os.path.join(out, "killed"), "w").close()
                os.kill(os.getpid(), signal.SIGKILL)

    def sha(model):
        h = hashlib.sha256()
        for k, v in model.state_dict().items():
            h.update(k.encode())
            h.update(v.detach().contiguous().numpy().tobytes())
        return h.hexdigest()

    def run(name, model, cfg, callbacks=()):
        # per-rank checkpoint dirs: shows that only rank 0 writes, and that resume needs no shared disk
        ckpt = os.path.join(out, f"ckpt-{name}.{rank}")
        with open(os.path.join(out, f"stderr-{name}.{rank}.txt"), "w") as err, contextlib.redirect_stderr(err):
            result = fit(model, data, config=cfg, checkpoint_dir=ckpt, resume=True, progress=True,
                         desc=f"fit-{name}", callbacks=callbacks)
        acc = float((predict(model, data.test.x).argmax(1) == data.test.y).float().mean())
        torch.save(model.state_dict(), os.path.join(out, f"weights-{name}.{rank}.pt"))
        return {"history": result.history, "best_epoch": result.best_epoch, "test_acc": acc, "sha": sha(model),
                "group_after_fit": dist.is_initialized()}

    def mlp():
        # rank 0's first-attempt weights are the single process's; the others must come from rank 0
        # (DDP's initial broadcast) or from the checkpoint (resume)
        torch.manual_seed(rank + 10 * attempt)
        return build("mlp", input_shape=data.input_shape, num_classes=10, hidden=[64])

    data = load("digits", seed=0, limit=600)  # 420 train examples
    report = {"rank": rank, "world": world, "attempt": attempt}

    # 420 = 14 batches of 30 = 14 x (2 ranks x 15): every shard has the same size, so the 2-rank update is
    # the 1-rank update up to float summation order. restore_best and patience are on.
    cfg = TrainConfig(epochs=5, batch_size=30, lr=5e-3, seed=1, patience=3, restore_best=True)
    report["mlp"] = run("mlp", mlp(), cfg)
    if world > 1:
        report["resumed"] = run("resumed", mlp(), cfg, [KillRank0()])

    # BatchNorm, and a process group the script created itself (fit must leave it alone)
    if world > 1:
        dist.init_process_group("gloo")
    torch.manual_seed(rank)
    cnn = build("resnet-small", input_shape=data.input_shape, num_classes=10, widths=[8], blocks=1)
    report["bn"] = run("bn", cnn, TrainConfig(epochs=2, batch_size=60, lr=1e-2, seed=2))
    if world > 1:
        shas = [None] * world
        dist.all_gather_object(shas, report["bn"]["sha"])
        report["bn"]["all_sha"] = shas
        dist.destroy_process_group()

    with open(os.path.join(out, f"report.{rank}.json"), "w") as f:
        json.dump(report, f)
    """
)

# The two runs are not bit-identical only because DDP sums two half-batch mean gradients (and
# all-reduces them) where one process sums the whole batch (with 2 threads here, 1 per torchrun
# worker): float32 summation order, ~1e-7 relative per step. Over 70 Adam steps that stays far below
# these bounds (measured: weights 1.8e-6, train loss 2e-8, val loss and every accuracy identical);
# they leave room for other CPUs/BLAS builds yet any real mismatch (unequal shards, a rank's
# gradient counted twice, a missed all-reduce, rank 0's loss logged alone) is ~1e-2 and fails.
WEIGHT_ATOL = 1e-4  # max |w_1proc - w_2proc| over all parameters
LOSS_ATOL = 1e-4  # train/val loss per epoch in the history
ACC_ATOL = 1.5 / 120  # test accuracy: at most one of the 120 test examples may flip


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    # two processes under torchrun (rank 0 is SIGKILLed once; torchrun restarts both, they resume), and
    # meanwhile the same script as a plain single process: this one (torch is loaded)
    return single_and_torchrun(SCRIPT, tmp_path_factory.mktemp("ddp"), max_restarts=1, timeout=120)


def test_two_ranks_match_one_process(runs: dict[str, Path]) -> None:
    one, two = read_report(runs["single"], 0)["mlp"], read_report(runs["ddp"], 0)["mlp"]
    assert one["best_epoch"] == two["best_epoch"]
    assert abs(one["test_acc"] - two["test_acc"]) <= ACC_ATOL and one["test_acc"] > 0.8
    assert len(one["history"]) == len(two["history"])
    for h1, h2 in zip(one["history"], two["history"]):
        assert abs(h1["train_loss"] - h2["train_loss"]) <= LOSS_ATOL, (h1, h2)
        assert abs(h1["val_loss"] - h2["val_loss"]) <= LOSS_ATOL, (h1, h2)
        assert abs(h1["val_accuracy"] - h2["val_accuracy"]) <= 1.5 / 60, (h1, h2)
    w1, w2 = read_weights(runs["single"], "mlp", 0), read_weights(runs["ddp"], "mlp", 0)
    assert max(float((w1[k] - w2[k]).abs().max()) for k in w1) <= WEIGHT_ATOL


@pytest.mark.parametrize("name", ["mlp", "resumed", "bn"])
def test_ranks_end_identical(runs: dict[str, Path], name: str) -> None:
    r0, r1 = read_report(runs["ddp"], 0), read_report(runs["ddp"], 1)
    assert (r0["world"], r1["world"]) == (2, 2)
    a, b = r0[name], r1[name]
    # same weights and buffers (BatchNorm running stats included), same history, same decisions
    assert a["sha"] == b["sha"]
    assert a["history"] == b["history"] and a["best_epoch"] == b["best_epoch"]
    wa, wb = read_weights(runs["ddp"], name, 0), read_weights(runs["ddp"], name, 1)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    if name == "bn":
        assert a["all_sha"] == [a["sha"], a["sha"]]
        assert any("running_mean" in k for k in wa)


def test_process_group_destroyed_only_if_fit_created_it(runs: dict[str, Path]) -> None:
    for rank in (0, 1):
        report = read_report(runs["ddp"], rank)
        assert report["mlp"]["group_after_fit"] is False  # fit created it, fit destroyed it
        assert report["resumed"]["group_after_fit"] is False  # ... and a second fit made a new one
        assert report["bn"]["group_after_fit"] is True  # the script created it: left alone


def test_only_rank0_writes_checkpoints_and_progress(runs: dict[str, Path]) -> None:
    out = runs["ddp"]
    for name in ("mlp", "resumed", "bn"):
        assert (out / f"ckpt-{name}.0" / "last.pt").exists()
        assert not (out / f"ckpt-{name}.1").exists()
        assert f"fit-{name}" in (out / f"stderr-{name}.0.txt").read_text()
        assert (out / f"stderr-{name}.1.txt").read_text() == ""


def test_resume_after_sigkill_under_ddp_matches_uninterrupted(runs: dict[str, Path]) -> None:
    # rank 0 was SIGKILLed mid-epoch 3 of "resumed"; torchrun restarted both ranks, which resumed
    # from rank 0's epoch-2 checkpoint (rank 1 has none: rank 0 sent it) and must end exactly where
    # the uninterrupted "mlp" run (same config, same data, same seed) ended
    assert (runs["ddp"] / "killed").exists()
    for rank in (0, 1):
        report = read_report(runs["ddp"], rank)
        assert report["attempt"] == 1
        assert report["resumed"] == report["mlp"]


@pytest.mark.parametrize(
    ("n", "batch_size", "world"), [(420, 30, 2), (421, 31, 2), (100, 32, 3), (7, 4, 3), (10, 3, 1)]
)
def test_every_rank_gets_an_equal_share_of_every_batch(n: int, batch_size: int, world: int) -> None:
    cfg = TrainConfig(batch_size=batch_size, seed=4)
    single = _batches(n, cfg, 3, 0, 1)
    shards = [_batches(n, cfg, 3, rank, world) for rank in range(world)]
    assert all(len(s) == len(shards[0]) for s in shards)  # same number of steps on every rank
    kept = 0
    for step, parts in enumerate(zip(*shards)):
        assert len({len(p) for p in parts}) == 1  # equal shards: DDP's mean of means is the batch mean
        merged = torch.cat(parts)
        assert len(set(merged.tolist())) == len(merged)  # no example on two ranks
        assert set(merged.tolist()) <= set(single[step].tolist())  # drawn from the same global batch
        assert len(single[step]) - len(merged) < world  # at most world - 1 examples cut
        kept += len(merged)
    if world == 1:
        assert kept == n  # one process uses every example
