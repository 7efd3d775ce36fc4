"""Run one training script twice, under ``torchrun --nproc_per_node=2`` (gloo, CPU) and as a plain single
process, so a test can compare their results. The script takes its output folder as ``argv[1]`` and writes
``report.<rank>.json`` (and optionally ``weights-<name>.<rank>.pt``) there."""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

RANK_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "TORCHELASTIC_RESTART_COUNT")


def _run_in_this_process(script: Path, out: Path) -> None:
    saved_env = {k: os.environ.pop(k) for k in RANK_VARS if k in os.environ}
    saved_argv = sys.argv
    sys.argv = [str(script), str(out)]
    try:
        runpy.run_path(str(script), run_name="__main__")
    finally:
        sys.argv = saved_argv
        os.environ.update(saved_env)


def single_and_torchrun(
    script_text: str, root: Path, *, max_restarts: int = 0, timeout: float = 120
) -> dict[str, Path]:
    """Write the script into ``root``, start it under torchrun with 2 processes, meanwhile run it in this
    process, and return the two output folders ``{"single": ..., "ddp": ...}``. Raises if torchrun fails."""
    script = root / "script.py"
    script.write_text(script_text)
    single, two = root / "single", root / "ddp"
    single.mkdir()
    two.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in RANK_VARS[:3]}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd += [f"--max-restarts={max_restarts}", "--monitor-interval=0.1", str(script), str(two)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=two)
    try:
        _run_in_this_process(script, single)
        stdout, stderr = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:  # the single run failed or torchrun hangs: stop it (it stops its workers)
            proc.terminate()
            try:
                proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    if proc.returncode != 0:
        raise AssertionError(f"torchrun exit {proc.returncode}\n{stdout[-3000:]}\n{stderr[-6000:]}")
    return {"single": single, "ddp": two}


def read_report(out: Path, rank: int) -> dict[str, Any]:
    return dict(json.loads((out / f"report.{rank}.json").read_text()))


def read_weights(out: Path, name: str, rank: int) -> dict[str, torch.Tensor]:
    return dict(torch.load(out / f"weights-{name}.{rank}.pt", weights_only=True))
