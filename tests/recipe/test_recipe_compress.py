"""The ``compress`` (prune → cluster → Huffman) and ``lowbit`` (binary/ternary) recipe stages: the row's bytes
on disk are the real entropy-coded file, which decodes to the model the row measures; zeros survive, each
layer holds at most 2**bits shared values, and the result exports to ONNX like any other model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from slimtune.errors import ConfigError
from slimtune.models import load_model
from slimtune.quantize.binary import weight_kind
from slimtune.quantize.codec import load_compressed
from slimtune.recipe import parse_recipe, run_recipe


def _recipe(stages: list[dict]) -> dict:
    return {
        "data": {"name": "digits", "seed": 0, "limit": 600},
        "model": {"name": "mlp", "options": {"hidden": [64, 32]}},
        "stages": [{"stage": "train", "label": "dense", "train": {"epochs": 15, "lr": 0.003, "seed": 0}}, *stages],
    }


def test_prune_then_compress_writes_a_small_exact_file(tmp_path: Path) -> None:
    raw = _recipe(
        [
            {"stage": "prune", "sparsity": 0.8, "recovery": {"epochs": 5, "lr": 0.002}},
            {"stage": "compress", "bits": 3, "layer_bits": {"net\\.5": 5}, "train": {"epochs": 2, "lr": 1e-3}},
            {"stage": "export"},
        ]
    )
    report = run_recipe(parse_recipe(raw), tmp_path / "out")
    dense, pruned, packed, onnx = report.rows
    stdc = tmp_path / "out" / "03-compress" / "model.stdc"
    assert packed.artifact == "03-compress/model.stdc" and packed.bytes_on_disk == stdc.stat().st_size
    assert packed.extra["compressed"]["total"] == packed.bytes_on_disk
    assert packed.bytes_on_disk * 4 < pruned.bytes_on_disk < dense.bytes_on_disk / 3  # sparse fp32, then coded
    assert packed.nonzero_params <= pruned.nonzero_params  # the zeros of pruning stay zero
    assert packed.metrics["accuracy"] >= pruned.metrics["accuracy"] - 0.05
    decoded = load_compressed(stdc)
    for name, w in ((n, p) for n, p in decoded.named_parameters() if p.dim() == 2):
        bits = 5 if name.startswith("net.5") else 3
        assert len(torch.unique(w[w != 0])) <= 2**bits, name
    reloaded = load_model(tmp_path / "out" / "03-compress" / "model")  # what --resume would start from
    assert all(torch.equal(a, b) for a, b in zip(reloaded.state_dict().values(), decoded.state_dict().values()))
    assert onnx.parity is not None and onnx.parity["argmax_agreement"] >= 0.99


@pytest.mark.parametrize(("kind", "bits"), [("binary", 1.0), ("ternary", 1.585)])
def test_lowbit_stage_trains_folds_and_codes(kind: str, bits: float, tmp_path: Path) -> None:
    raw = _recipe([{"stage": "lowbit", "kind": kind, "train": {"epochs": 8, "lr": 3e-3}}, {"stage": "export"}])
    report = run_recipe(parse_recipe(raw), tmp_path / "out")
    dense, low, onnx = report.rows
    assert low.extra["lowbit"]["layers"] == {"net.1": "float", "net.3": kind, "net.5": "float"}
    assert low.extra["lowbit"]["bits_per_weight"] == pytest.approx(bits, abs=1e-3)
    model = load_compressed(tmp_path / "out" / "02-lowbit" / "model.stdc")
    assert weight_kind(model.get_submodule("net.3").weight) == kind
    assert low.bytes_on_disk < 0.9 * dense.bytes_on_disk  # the 64x32 layer codes in ~1-2 bits per weight
    assert low.metrics["accuracy"] > 0.6  # 10 classes: far above chance after STE training
    assert onnx.parity is not None and onnx.parity["argmax_agreement"] >= 0.99


@pytest.mark.parametrize(
    ("stage", "message"),
    [
        ({"stage": "lowbit", "kind": "quaternary"}, r"kind must be binary or ternary, got 'quaternary'"),
        ({"stage": "lowbit", "kind": "ternary", "threshold": 1.5}, r"threshold must be in \(0, 1\)"),
        ({"stage": "compress", "bits": 9}, r"bits must be an integer in 1\.\.8"),
        ({"stage": "compress", "bitz": 4}, r"unknown key 'bitz'"),
    ],
)
def test_bad_options_fail_before_any_work(stage: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        parse_recipe(_recipe([stage]))
    assert "\n" not in str(info.value)
