"""LM quantization candidates (the list an LM search runs): names, stage entries, configs, group fitting."""

from __future__ import annotations

import pytest

from slimtune.errors import ConfigError
from slimtune.quantize.smoothquant import SmoothQuantConfig
from slimtune.quantize.weight_only import GPTQConfig, RTNConfig
from slimtune.quantize.weight_only.candidates import lm_quant_candidates, stored_bits
from slimtune.testing.tiny_lm import tiny_llama


def test_candidates_cover_every_method_and_resolve_to_configs() -> None:
    cands = lm_quant_candidates(bits_budget=4.5, samples=4)
    names = [c.name for c in cands]
    assert len(set(names)) == len(names)
    assert {c.method for c in cands} == {"rtn", "hqq", "gptq", "awq", "smoothquant"}
    by = {c.name: c for c in cands}
    assert isinstance(by["int4-gptq-g128"].config(), GPTQConfig) and by["int4-gptq-g128"].config().samples == 4
    assert isinstance(by["int8-rtn-pc"].config(), RTNConfig) and by["int8-rtn-pc"].config().bits == 8
    assert isinstance(by["w8a8-smoothquant"].config(), SmoothQuantConfig)
    mixed = by["mixed-gptq-g128-b4.5"]
    assert mixed.stage()["bits_budget"] == 4.5 and mixed.stage()["method"] == "gptq"
    assert isinstance(mixed.config(), GPTQConfig)
    assert by["int4-rtn-g128"].bits == pytest.approx(4.25)
    assert by["int4-rtn-g128"].stage() is not by["int4-rtn-g128"].stage()  # a fresh dict each time


def test_group_size_falls_back_to_one_that_divides_every_layer() -> None:
    model = tiny_llama(hidden=96)  # widths 96 and 192: 128 does not divide 96, 32 divides both
    cands = lm_quant_candidates(model, group_size=128, methods=("rtn",), int8=False, smoothquant=False)
    assert [c.name for c in cands] == ["int4-rtn-g32"] and cands[0].stage()["group_size"] == 32


def test_stored_bits_count_the_scale_and_zero_point_overhead() -> None:
    assert stored_bits(4, 32, symmetric=True) == 5.0
    assert stored_bits(4, 32, symmetric=False) == 4 + 36 / 32
    assert stored_bits(3, 64, symmetric=True) == 4.5  # 3-bit codes travel in 4-bit containers
    assert stored_bits(8, -1, symmetric=True, in_features=576) == 9.0  # per-channel on 576: blocks of 32


def test_bad_candidate_requests() -> None:
    with pytest.raises(ConfigError, match="unknown weight-only method"):
        lm_quant_candidates(methods=("gptqq",))
    no_room = lm_quant_candidates(bits_budget=4.1)  # int4 g128 alone stores 4.25 bits: no 8-bit layer fits
    assert not any(c.name.startswith("mixed") for c in no_room)
