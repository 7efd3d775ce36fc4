"""benchmarks/gpu_check.py writes benchmarks/results only for a run that really used a GPU (its training is
stubbed here; the real run is the benchmark itself)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

from slimtune.errors import ConfigError

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fake_run(device: str, precision: str, *, quick: bool) -> dict[str, Any]:
    shift = 0.01 if device != "cpu" or precision != "fp32" else 0.0
    phase = {"val_loss": [3.0 + shift, 2.5 + shift], "train_loss": [3.1, 2.6], "test_perplexity": 12.0, "seconds": 1.0}
    return {"device": device, "precision": precision, "finetune": phase, "start_val_loss": 3.5,
            "distill": {**phase, "test_kl_to_teacher": 0.1}}  # fmt: skip


def test_cpu_run_writes_nothing_to_results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gc = _script()
    monkeypatch.setattr(gc, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(gc, "one_run", _fake_run)
    assert gc.main(["--device", "cpu"]) == 0
    assert not (tmp_path / "results").exists()
    assert gc.main(["--device", "cpu", "--out", str(tmp_path / "elsewhere")]) == 0
    md = (tmp_path / "elsewhere" / "gpu_check_cpu_only.md").read_text()
    assert "(cpu-only)" in md and "PASS" in md


def test_cuda_requested_without_a_gpu_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    gc = _script()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        gc.main(["--device", "cuda"])


def test_comparison_fails_when_the_device_run_drifts() -> None:
    gc = _script()
    ref = _fake_run("cpu", "fp32", quick=True)
    far = _fake_run("cuda", "bf16", quick=True)
    far["finetune"]["val_loss"] = [3.5, 3.2]
    out = gc.compare(far, ref, 0.05)
    assert not out["ok"] and not out["finetune"]["ok"] and out["distill"]["ok"]
