"""The README states the int8 parity rule that the code applies (issue #18: it said "≥ 99 %" while 98.61 %
passed): its numbers are the defaults, and a 98.61 % run whose flips are near ties passes as it says."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from slimtune.errors import ParityError
from slimtune.export.onnx import MAX_TIE_SHARE, ExportConfig, check_parity

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")


def test_readme_numbers_are_the_code_defaults() -> None:
    rule = " ".join(README[README.index("The int8 rule") :].split()[:120])
    cfg = ExportConfig()
    assert f"at most {cfg.max_accuracy_drop:g} point below PyTorch (`export.max_accuracy_drop`)" in rule
    assert f"≥ {cfg.min_argmax_agreement:.0%}".replace("%", " %") in rule and "`export.min_argmax_agreement`" in rule
    floor = round(100 * (cfg.min_argmax_agreement - MAX_TIE_SHARE))
    assert re.search(rf"more than {round(100 * MAX_TIE_SHARE)} points below the bar \(< {floor} %\)", rule), rule


def test_near_tie_flips_pass_at_98_61_percent_and_other_flips_do_not() -> None:
    cfg = ExportConfig()
    kw = {"what": "int8", "max_abs_diff": None, "min_argmax_agreement": cfg.min_argmax_agreement}
    report = {"max_abs_diff": 0.05, "argmax_agreement": 0.9861, "argmax_agreement_beyond_ties": 1.0}
    check_parity(report, **kw)  # every flip is a near tie: passes, as the README says
    with pytest.raises(ParityError, match="not near ties"):
        check_parity({**report, "argmax_agreement_beyond_ties": 0.9861}, **kw)
    with pytest.raises(ParityError, match="near ties may excuse at most 10%"):
        check_parity({**report, "argmax_agreement": 0.85, "argmax_agreement_beyond_ties": 1.0}, **kw)
