"""Bad LM quantization options on the command line (``slimtune stage quantize``): exit 2, one line, no folder."""

from __future__ import annotations

from pathlib import Path

import pytest

CASES = [
    ("bits-5", ["method=gptq", "bits=5"], ("bits must be one of 2, 3, 4, 8",)),
    ("alpha-above-one", ["method=smoothquant", "alpha=1.5"], ("alpha must be in [0, 1]",)),
    ("alpha-grid-out-of-range", ["method=smoothquant", "alpha_grid=[0.5, 2]"], ("alpha_grid values",)),
    ("mode-typo", ["method=smoothquant", "mode=statik"], ("'statik' is not one of", "did you mean 'static'")),
    ("fallback-typo", ["method=smoothquant", "fallback=outo"], ("fallback must be a count", "did you mean 'auto'")),
    ("calibrate-typo", ["method=smoothquant", "calibrate=percentil"], ("did you mean 'percentile'",)),
    ("alpha-scope-typo", ["method=smoothquant", "alpha_scope=layers"], ("'layers' is not one of",)),
    ("budget-on-smoothquant", ["method=smoothquant", "bits_budget=4.5"], ("bits_budget is for weight-only",)),
    ("high-bits-without-budget", ["method=rtn", "high_bits=8"], ("need bits_budget",)),
    ("high-bits-16", ["method=rtn", "bits_budget=4.5", "high_bits=16"], ("high_bits must be one of",)),
    ("granularity-typo", ["method=rtn", "bits_budget=4.5", "granularity=blok"], ("did you mean 'block'",)),
    ("classifier-int8-on-an-lm", ["method=ort-dynamic-int8"], ("smoothquant", "got 'ort-dynamic-int8'")),
]


@pytest.mark.parametrize(("sets", "needles"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_lm_quantize_option_is_one_line(
    sets: list[str], needles: tuple[str, ...], tmp_path: Path, cli, one_line_error
) -> None:
    argv = ["stage", "quantize", "--model", "tiny-llama", "--data", "shakespeare", "--out", "out"]
    for item in sets:
        argv += ["--set", item]
    one_line_error(cli(*argv, cwd=tmp_path), *needles)
    assert not (tmp_path / "out").exists()
