"""Export coverage: every export variant (dense, structured, sparse, clustered, binary, QAT QDQ, ORT dynamic
and static int8) on every tiny architecture exports to ONNX and meets its parity tolerance; the fp32 ones
also export to TorchScript with parity. Registering a variant or an architecture adds its cells for free."""

from __future__ import annotations

from pathlib import Path

import pytest

from slimtune.export.coverage import VARIANTS, check_cell
from slimtune.testing.tiny import TINY, tiny


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
