"""Export coverage: every export variant (dense, structured, sparse, clustered, binary, ternary, Deep
Compression, QAT QDQ, ORT dynamic, static and auto int8) on every tiny architecture exports to ONNX and meets
its parity tolerance; the fp32 ones also export to TorchScript with parity. Registering a variant or an
architecture adds its cells for free."""

from __future__ import annotations

from pathlib import Path

import pytest

from slimtune.export.coverage import VARIANTS, check_cell
from slimtune.quantize import ort_auto
from slimtune.testing.tiny import TINY, tiny


@pytest.fixture(autouse=True)
def same_latency_everywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    """ort-auto-int8 picks the fastest faithful variant; on untrained tiny models (all logits near ties) which
    one wins must not depend on the machine's load, so every variant times the same: all tie, and the most
    faithful (then smallest) one wins (timing itself is tested in tests/quantize/test_ort_auto.py)."""
    monkeypatch.setattr(ort_auto, "_round_timer", lambda *_: lambda keys: dict.fromkeys(keys, 1.0))


@pytest.mark.parametrize("arch", list(TINY))
@pytest.mark.parametrize("variant", VARIANTS.names())
def test_variant_exports_with_parity(variant: str, arch: str, tmp_path: Path) -> None:
    if arch == "tiny-bert":
        pytest.importorskip("transformers")
    model, data = tiny(arch)
    row = check_cell(model, data, variant, tmp_path)
    assert row["ok"], row.get("error")
    if row["precision"] == "fp32":
        assert row["max_abs_diff"] < 1e-4 and row["torchscript_max_abs_diff"] < 1e-4
    else:
        assert row["agreement"] >= 0.99
        # the raw agreement (near-tie flips counted) is recorded beside the tie-excused one, never above it
        assert 0 <= row["raw_agreement"] <= row["agreement"] and row["near_tie_flips"] >= 0
