"""The option reference: generated from the config dataclasses, printed by ``slimtune list`` and
``slimtune stage NAME --help``, and the key check every recipe stage goes through."""

from __future__ import annotations

import contextlib
import dataclasses
import io

import pytest
import yaml

from slimtune.distill import HINTS, KD_LOSSES
from slimtune.errors import ConfigError
from slimtune.prune import PRUNERS
from slimtune.quantize import QUANTIZERS
from slimtune.recipe import parse_recipe
from slimtune.recipe.reference import stage_options
from slimtune.recipe.stages import STAGES

BASE = {"data": {"name": "digits"}, "model": {"name": "mlp"}}
REQUIRED = {
    "distill": {"student": {"name": "mlp"}},
    "lowbit": {"kind": "binary"},
    "multitask": {"tasks": [{"name": "digits"}]},
}
METHODS = [(reg, name) for reg in (PRUNERS, QUANTIZERS, KD_LOSSES, HINTS) for name in reg.names()]


def _cli(*argv: str) -> str:
    from slimtune.cli.main import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            assert main(list(argv)) == 0
        except SystemExit as exc:  # --help
            assert exc.code == 0
    return out.getvalue()


def _sections(text: str) -> dict[str, list[str]]:
    """``{"stage prune": [option lines], "pruning method magnitude": [...]}`` from ``slimtune list``."""
    out: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("    ") and current is not None:
            out[current].append(line.strip())
        elif not line.startswith(" ") and (line.startswith("stage ") or " method " in line or " loss " in line
                                           or " hint " in line):  # fmt: skip
            current = line.split(":")[0]
            out[current] = []
    return out


def test_list_prints_every_stage_and_method_with_every_option_and_default() -> None:
    sections = _sections(_cli("list"))
    for name in STAGES.names():
        lines = sections[f"stage {name}"]
        assert lines == ["(no options)"] or (lines and all(" = " in line for line in lines)), name
    for reg, name in METHODS:
        lines = sections[f"{reg.kind} {name}"]
        fields = [f for f in dataclasses.fields(reg.get(name)) if f.init]
        for f in fields:
            assert any(line.startswith(f"{f.name} = ") for line in lines), (name, f.name, lines)
        assert lines == ["(no options)"] or len(lines) == len(fields)
    prune = sections["stage prune"]
    for key in ("method = magnitude", "recovery = null", "recovery.epochs = 10", "kd = null", "train.lr = 0.001"):
        assert any(line.startswith(key) for line in prune), key
    assert any(line.startswith("sparsity = 0.8") for line in sections["pruning method magnitude"])
    assert any(line.startswith("temperature = 4.0") for line in sections["distillation loss mixed"])
    assert any(line.startswith("train.epochs = 2") for line in sections["stage qat"])  # the stage's own default


def test_stage_help_and_list_filter_show_one_stage() -> None:
    text = _cli("stage", "prune", "--help")
    assert "--set" in text and "options of stage 'prune'" in text and "recovery.epochs = 10" in text
    only = _cli("list", "structured")
    assert "pruning method structured" in only and "round_to = 1" in only and "stage prune" not in only


@pytest.mark.parametrize("stage", STAGES.names())
def test_every_listed_key_is_accepted_by_its_stage(stage: str) -> None:
    """The reference cannot promise a key the stage rejects (the other way round, the key check below
    rejects any key the reference does not list)."""
    for option in stage_options(stage):
        key = option.key
        if "." in key or "[" in key or key in REQUIRED.get(stage, {}):
            continue
        try:
            value = yaml.safe_load(option.default)
        except yaml.YAMLError:
            value = None
        if option.default in ("(required)", "{...}") or (isinstance(value, str) and value.startswith("<")):
            continue
        entry = {"stage": stage, **REQUIRED.get(stage, {}), key: value}
        if option.note.startswith("kind: "):  # lowbit: binary and ternary weights take different options
            entry["kind"] = option.note.removeprefix("kind: ")
        parse_recipe({**BASE, "stages": [entry]})  # must not raise


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"stage": "prune", "recovry": {"epochs": 1}}, r"unknown key 'recovry' \(did you mean 'recovery'\?\)"),
        ({"stage": "prune", "methd": "random"}, r"did you mean 'method'"),
        ({"stage": "prune", "method": "structured", "sparsity": 0.5}, r"unknown key 'sparsity'.*ratio"),
        ({"stage": "quantize", "mixed_precison": {}}, r"did you mean 'mixed_precision'"),
        ({"stage": "lowbit", "kind": "binary", "threshold": 0.5}, r"unknown key 'threshold'"),
        ({"stage": "prune", "method": "magnitud", "sparsity": 0.5}, r"unknown pruning method 'magnitud'"),
    ],
)
def test_every_stage_key_is_checked_with_a_did_you_mean(entry: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        parse_recipe({**BASE, "stages": [entry]})
    assert "\n" not in str(info.value)
    if "unknown key" not in message:
        return
    assert "allowed keys: " in str(info.value)
    if entry["stage"] == "prune":  # the stage's own keys are allowed beside the method's
        allowed = str(info.value).split("allowed keys: ")[1].split(" (")[0].split(", ")
        assert {"method", "train", "recovery", "kd"} <= set(allowed)
