"""Training device and precision from the CLI: CUDA asked for on a machine without one, an unknown
device or precision: exit 2, one line, no output folder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

BASE = ["stage", "finetune", "--model", "mlp", "--option", "hidden=[8]", "--data", "digits", "--limit", "60"]


@pytest.mark.parametrize(
    ("sets", "needles"),
    [
        (["train.device=cuda"], ["device: cuda", "no CUDA GPU", "device: cpu or auto"]),
        (["train.device=cuda:1"], ["device: cuda:1", "no CUDA GPU"]),
        (["train.device=tpu"], ["device must be auto, cpu, cuda or cuda:N"]),
        (["train.precision=fp8"], ["train.precision", "'fp8' is not one of 'fp32', 'bf16', 'fp16'"]),
        (["train.grad_accum=0"], ["grad_accum must be >= 1"]),
    ],
)
def test_bad_training_device_or_precision(
    sets: list[str], needles: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli, one_line_error
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    argv = [*BASE, *(a for s in sets for a in ("--set", s)), "--out", "o"]
    one_line_error(cli(*argv, cwd=tmp_path), *needles)
    assert not (tmp_path / "o").exists()
