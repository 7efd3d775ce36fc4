"""``ops`` is a dimension of the search's candidates: ``int8-static`` (ops auto) quantizes a conv net's
whole chain, the opt-in ``int8-static-weights`` keeps weights-only static int8 beside it."""

from __future__ import annotations

from pathlib import Path

import pytest

from slimtune.errors import ConfigError
from slimtune.quantize.qdq_graph import fp32_round_trips
from slimtune.search.space import SearchConfig, build_space
from slimtune.search.techniques import export_variants
from slimtune.testing.tiny import tiny


def test_static_and_static_weights_variants_of_a_conv_net(tmp_path: Path) -> None:
    model, data = tiny("resnet-small")
    paths, _ = export_variants(model.eval(), ["int8-static", "int8-static-weights"], data, tmp_path, calibration=32)
    assert fp32_round_trips(paths["int8-static"]) == []
    assert fp32_round_trips(paths["int8-static-weights"])  # Relu between Q/DQ pairs, in fp32


def test_static_weights_is_opt_in() -> None:
    default = {c.precision for c in build_space(SearchConfig(techniques=("int8",)))}
    assert default == {"int8-dynamic", "int8-static", "int8-mixed"}
    both = {c.precision for c in build_space(SearchConfig(techniques=("int8",), int8=("static", "static-weights")))}
    assert both == {"int8-static", "int8-static-weights"}
    with pytest.raises(ConfigError, match="unknown int8 kind 'weights'"):
        SearchConfig(int8=("weights",))
