"""Mixed precision under a bit budget: the plan respects the budget (stored bits, scale overhead counted), puts
8 bits on the layer made most sensitive on purpose, applies per layer with every method, and exports mixed
4/8-bit MatMulNBits with parity."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import torch

from slimtune.errors import ConfigError, UnsupportedModelError
from slimtune.export.lm_bundle import export_lm
from slimtune.export.lm_onnx import LMExportConfig
from slimtune.quantize.weight_only import AWQConfig, GPTQConfig, RTNConfig, quantize_lm_, quantized_layers
from slimtune.quantize.weight_only.candidates import stored_bits
from slimtune.quantize.weight_only.mixed import BitsBudgetConfig, quantize_lm_mixed_
from slimtune.testing.tiny_lm import tiny_llama

IDS = torch.randint(0, 256, (8, 32), generator=torch.Generator().manual_seed(0))
SABOTAGED = "model.layers.1.mlp.down_proj"


def sabotaged_llama() -> torch.nn.Module:
    """A tiny Llama whose block-1 down_proj has a huge weight in every group of 32 on an input channel that is
    always 0 (its up_proj row is zeroed): the fp32 function is an ordinary model's, but int4 rounding flushes the
    rest of each group to zero, so rounding that layer moves the output most."""
    model = tiny_llama(seed=2)
    with torch.no_grad():
        model.model.layers[1].mlp.up_proj.weight[0::32] = 0.0
        w = model.get_submodule(SABOTAGED).weight
        w[:, 0::32] = w.abs().max() * 100
    return model


@pytest.mark.parametrize("config", [RTNConfig(bits=4, group_size=32), GPTQConfig(bits=4, group_size=32, samples=8),
                                    AWQConfig(bits=4, group_size=32, samples=8, grid=4)])  # fmt: skip
def test_plan_respects_the_budget_and_keeps_the_sabotaged_layer_at_8_bits(config: object) -> None:
    model = sabotaged_llama()
    plan = quantize_lm_mixed_(model, config, BitsBudgetConfig(bits_budget=5.5, windows=4), calibration=IDS)  # type: ignore[arg-type]
    assert max(plan["sensitivity"], key=plan["sensitivity"].get) == SABOTAGED
    assert plan["bits"][SABOTAGED] == 8
    assert plan["average_bits"] <= 5.5 and plan["average_bits"] > stored_bits(4, 32, symmetric=True)
    layers = quantized_layers(model)
    assert len(layers) == len(plan["bits"])  # every block Linear quantized, at its planned width
    assert all(qw.bits == plan["bits"][name] for name, (_, qw) in layers.items())
    sizes = {n: m.weight.numel() for n, (m, _) in layers.items()}
    avg = sum(stored_bits(qw.bits, 32, symmetric=True) * sizes[n] for n, (_, qw) in layers.items()) / sum(
        sizes.values()
    )
    assert avg == pytest.approx(plan["average_bits"])


def test_block_granularity_promotes_the_sabotaged_block_whole() -> None:
    model = sabotaged_llama()
    budget = BitsBudgetConfig(bits_budget=7.0, granularity="block")  # int4 g32: 5.0; one block at int8 g32: +2.0
    plan = quantize_lm_mixed_(model, RTNConfig(bits=4, group_size=32), budget, calibration=IDS)
    assert set(plan["sensitivity"]) == {"model.layers.0", "model.layers.1"}
    promoted = {n for n, b in plan["bits"].items() if b == 8}
    assert promoted == {n for n in plan["bits"] if n.startswith("model.layers.1.")}
    assert plan["average_bits"] == pytest.approx(7.0)


def test_the_plan_beats_uniform_int4_on_the_output() -> None:
    ref_model = sabotaged_llama()
    ref = ref_model(IDS).logits
    uniform = sabotaged_llama()
    quantize_lm_(uniform, RTNConfig(bits=4, group_size=32))
    mixed = sabotaged_llama()
    quantize_lm_mixed_(mixed, RTNConfig(bits=4, group_size=32), BitsBudgetConfig(bits_budget=5.5), calibration=IDS)
    err = lambda m: float((m(IDS).logits - ref).pow(2).mean())  # noqa: E731
    assert err(mixed) < 0.8 * err(uniform)


def test_mixed_export_writes_4_and_8_bit_matmulnbits_with_parity(tmp_path: Path) -> None:
    model = sabotaged_llama()
    quantize_lm_mixed_(model, RTNConfig(bits=4, group_size=32), BitsBudgetConfig(bits_budget=5.5), calibration=IDS)
    cfg = LMExportConfig(greedy_tokens=4, prompts=1, windows=2, window_length=16, accuracy_level=0)
    report = export_lm(model, tmp_path / "m.onnx", windows=IDS[:2], config=cfg)
    assert report["precision"] == "mixed" and report["greedy_identical"]
    nodes = [n for n in onnx.load(str(tmp_path / "m.onnx")).graph.node if n.op_type == "MatMulNBits"]
    bits = sorted({next(a.i for a in n.attribute if a.name == "bits") for n in nodes})
    assert bits == [4, 8]


def test_bad_budgets_are_one_line() -> None:
    with pytest.raises(ConfigError, match="below int4 g32"):
        quantize_lm_mixed_(tiny_llama(), RTNConfig(bits=4, group_size=32), BitsBudgetConfig(bits_budget=4.5),
                           calibration=IDS)  # fmt: skip
    with pytest.raises(ConfigError, match="high_bits must be one of"):
        BitsBudgetConfig(bits_budget=4.5, high_bits=16)
    model = tiny_llama()
    quantize_lm_(model, RTNConfig(bits=8, group_size=32))
    with pytest.raises(UnsupportedModelError, match="already quantized"):
        quantize_lm_mixed_(model, RTNConfig(bits=4, group_size=32), BitsBudgetConfig(bits_budget=5.5), calibration=IDS)
