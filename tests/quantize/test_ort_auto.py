"""ort-auto-int8: the grid it measures, the choice it makes, the reason it gives and how it fails. The
candidates are really quantized and loaded in ONNX Runtime; agreement and latency are faked where the test
needs a deterministic choice."""

from __future__ import annotations

import itertools
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch

from slimtune.data import DataSplits
from slimtune.errors import ConfigError, ParityError
from slimtune.export import export_onnx
from slimtune.models import build
from slimtune.quantize import OrtAutoInt8Config, ort_auto, quantize_onnx
from slimtune.quantize.ort_auto import Candidate, search_space

KEYS = ("kind", "reduce_range", "per_channel", "activation_type")


@pytest.fixture
def fp32(digits: DataSplits, tmp_path: Path) -> tuple[Path, torch.Tensor]:
    assert isinstance(digits.train.x, torch.Tensor)
    model = build("mlp", input_shape=digits.input_shape, num_classes=10, hidden=[32]).eval()
    return export_onnx(model, digits.train.x[:1], tmp_path / "fp32.onnx"), digits.train.x[:64]


class Fake:
    """Latencies and agreements handed out in build order: fp32 first, then each candidate ONNX Runtime
    built; every timing round sees the same ms per call."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, latencies: list[float], agreements: list[float]) -> None:
        self.latencies, self.agreements = latencies, iter(agreements)

        def timer(sessions: dict[str, Any], *_: Any) -> Any:
            table = dict(zip(sessions, self.latencies, strict=True))
            return lambda keys: {k: table[k] for k in keys}

        monkeypatch.setattr(ort_auto, "_round_timer", timer)
        monkeypatch.setattr(ort_auto, "_agreement", lambda *_: (a := next(self.agreements), a))


def _settings(row: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(row[k] for k in KEYS)


def test_grid_choice_and_reason(
    fp32: tuple[Path, torch.Tensor], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src, calibration = fp32
    config = OrtAutoInt8Config()
    expected = [("dynamic", rr, pc, "quint8") for rr in config.reduce_range_options
                for pc in config.per_channel_options]  # fmt: skip
    expected += [("static", *s) for s in itertools.product(
        config.reduce_range_options, config.per_channel_options, config.activation_type_options)]  # fmt: skip
    n = len(expected)
    latencies = [float(v) for v in random.Random(0).sample(range(1, n + 1), n)]  # candidate i takes latencies[i]
    agreements = [0.5 if v == 1.0 else 1.0 for v in latencies]  # the fastest candidate is not faithful
    Fake(monkeypatch, [10.0, *latencies], agreements)

    info = quantize_onnx(src, tmp_path / "int8.onnx", config, calibration=calibration)

    rows = info["candidates"]
    assert rows[0]["candidate"] == "fp32" and rows[0]["latency_ms"] == 10.0
    counts = Counter(_settings(r) for r in rows[1:])
    assert counts == Counter(expected) and set(counts.values()) == {1}  # (i) each combination exactly once
    assert [r["latency_ms"] for r in rows[1:]] == latencies and all("error" not in r for r in rows)
    faithful = [r for r in rows[1:] if r["agreement"] >= config.min_agreement]
    best = min(faithful, key=lambda r: r["latency_ms"])
    assert best["latency_ms"] == 2.0  # (ii) the fastest faithful one, not the fastest overall (1.0 ms, 50%)
    assert info["chosen"] == best["candidate"]
    assert {k: info[k] for k in KEYS[1:]} == {k: best[k] for k in KEYS[1:]}
    reason = info["reason"]  # (iii) names the winning settings, the rule and the speedup
    assert reason.startswith(best["candidate"]) and f"per_channel={best['per_channel']}" in reason
    assert "≥ 99%" in reason and "5.00× ORT fp32" in reason and "\n" not in reason
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fp32.onnx", "int8.onnx"]  # candidates cleaned up


def test_no_faithful_candidate_is_one_parity_error(
    fp32: tuple[Path, torch.Tensor], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src, calibration = fp32
    Fake(monkeypatch, [10.0, 5.0, 6.0], [0.90, 0.95])  # dynamic rr=False, then rr=True
    config = OrtAutoInt8Config(kinds=("dynamic",), per_channel_options=(True,))
    with pytest.raises(ParityError) as err:
        quantize_onnx(src, tmp_path / "int8.onnx", config, calibration=calibration)
    message = str(err.value)
    assert "\n" not in message and "no int8 variant agrees with fp32 on ≥ 99%" in message
    assert "best of 2: dynamic, reduce_range=True, per_channel=True at 95.00%" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fp32.onnx"]  # nothing written, nothing left


def test_excused_near_ties_do_not_pick_a_less_faithful_variant(
    fp32: tuple[Path, torch.Tensor], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both dynamic variants pass as parity checks judge (near ties excused), but the faster one flips 5% of
    predictions where the other flips 0.1%: the faithful one is chosen although it is slower."""
    src, calibration = fp32
    Fake(monkeypatch, [10.0, 6.0, 5.0], [])
    grades = iter([(0.995, 0.999), (0.995, 0.95)])  # (excused, raw): rr=False, then rr=True
    monkeypatch.setattr(ort_auto, "_agreement", lambda *_: next(grades))
    config = OrtAutoInt8Config(kinds=("dynamic",), per_channel_options=(True,))
    info = quantize_onnx(src, tmp_path / "int8.onnx", config, calibration=calibration)
    assert info["chosen"] == "dynamic, reduce_range=False, per_channel=True"
    assert "raw 99.90%" in info["reason"] and [r["raw_agreement"] for r in info["candidates"][1:]] == [0.999, 0.95]


def test_failing_candidate_is_recorded_not_chosen(
    fp32: tuple[Path, torch.Tensor], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src, calibration = fp32
    real = ort_auto.quantize_static_onnx

    def flaky(src: Path, dst: Path, config: Any, calibration: Any) -> dict[str, Any]:
        if config.activation_type == "qint8":
            raise RuntimeError("NOT_IMPLEMENTED: no kernel for this\nsecond line")
        return real(src, dst, config, calibration)

    monkeypatch.setattr(ort_auto, "quantize_static_onnx", flaky)
    Fake(monkeypatch, [10.0, 4.0], [1.0])
    config = OrtAutoInt8Config(kinds=("static",), reduce_range_options=(False,), per_channel_options=(True,))
    info = quantize_onnx(src, tmp_path / "int8.onnx", config, calibration=calibration)
    failed = info["candidates"][2]
    assert failed["activation_type"] == "qint8" and failed["agreement"] is None
    assert failed["error"] == "NOT_IMPLEMENTED: no kernel for this"
    assert info["activation_type"] == "quint8" and (tmp_path / "int8.onnx").exists()


def test_search_space_deduplicates() -> None:
    config = OrtAutoInt8Config(
        kinds=("static", "static"),
        reduce_range_options=(True, True),
        per_channel_options=(False,),
        activation_type_options=("qint8", "quint8", "qint8"),
    )
    assert search_space(config) == [
        Candidate("static", True, False, "qint8"),
        Candidate("static", True, False, "quint8"),
    ]


@pytest.mark.parametrize(
    ("options", "match"),
    [
        (
            {"activation_type_options": ["int4"]},
            r"activation_type_options\[0\]: 'int4' is not one of 'quint8', 'qint8'",
        ),
        ({"kinds": ["dinamic"]}, r"kinds\[0\]: 'dinamic' is not one of 'dynamic', 'static'"),
        ({"per_channel_options": []}, "per_channel_options must name at least one of False, True"),
        ({"reduce_range_options": [1]}, r"reduce_range_options\[0\]: expected true or false, got 1"),
    ],
)
def test_bad_search_space_is_one_config_error(options: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match) as err:
        OrtAutoInt8Config.from_dict(options)
    assert "\n" not in str(err.value)
    ((key, value),) = options.items()
    with pytest.raises(ConfigError, match=key) as err:  # built in Python: __post_init__ checks it too
        OrtAutoInt8Config(**{key: tuple(value)})  # type: ignore[arg-type]
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(("faster_ms", "chosen_rr"), [(4.9, False), (4.0, True)])
def test_a_speed_tie_goes_to_the_more_faithful_variant(
    fp32: tuple[Path, torch.Tensor],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    faster_ms: float,
    chosen_rr: bool,
) -> None:
    """rr=True is a little less faithful: 2% faster is inside the 3% tie band (the faithful one ships),
    20% faster is not (the faster one ships). The timings carry a per-round load the ratios cancel."""
    src, calibration = fp32
    grades = iter([(1.0, 1.0), (0.998, 0.995)])
    monkeypatch.setattr(ort_auto, "_agreement", lambda *_: next(grades))
    rng = random.Random(0)

    def timer(sessions: dict[str, Any], *_: Any) -> Any:
        table = dict(zip(sessions, [10.0, 5.0, faster_ms], strict=True))

        def time_round(keys: list[str]) -> dict[str, float]:
            load = rng.choice([0.5, 1.0, 3.0])  # one load per round, ±0.5% jitter per call
            return {k: table[k] * load * rng.uniform(0.995, 1.005) for k in keys}

        return time_round

    monkeypatch.setattr(ort_auto, "_round_timer", timer)
    config = OrtAutoInt8Config(kinds=("dynamic",), per_channel_options=(True,))
    info = quantize_onnx(src, tmp_path / "int8.onnx", config, calibration=calibration)
    assert info["reduce_range"] is chosen_rr
    assert info["timing"]["rounds"] >= 15 and set(info["timing"]["ratio_to_reference"]) == {
        r["candidate"] for r in info["candidates"][1:]
    }
    assert ("as fast as it" in info["reason"]) is (not chosen_rr)


def test_ops_is_a_dimension_on_conv_nets(digits: DataSplits, tmp_path: Path) -> None:
    assert isinstance(digits.train.x, torch.Tensor)
    model = build("lenet5", input_shape=digits.input_shape, num_classes=10).eval()
    src = export_onnx(model, digits.train.x[:1], tmp_path / "conv.onnx")
    config = OrtAutoInt8Config(kinds=("static",), reduce_range_options=(True,), per_channel_options=(True,),
                               activation_type_options=("quint8",))  # fmt: skip
    from slimtune.quantize.qdq_graph import resolve_ops

    conv = search_space(config, lambda o: resolve_ops(o, src)[0])
    assert [c.ops for c in conv] == ["weights", "chain"] and conv[1].label.endswith("ops=chain")
    assert [c.ops for c in search_space(config)] == ["weights"]  # without a conv graph auto is weights: once


def test_dynamic_defaults_match_the_library_call(fp32: tuple[Path, torch.Tensor], tmp_path: Path) -> None:
    """slimtune's dynamic int8 with per_channel=False (its default) and reduce_range=False writes the same
    file as onnxruntime's quantize_dynamic with its defaults: it cannot lose to the call it wraps."""
    from onnxruntime.quantization import quantize_dynamic

    from slimtune.quantize import OrtDynamicInt8Config

    src, _ = fp32
    quantize_dynamic(str(src), str(tmp_path / "library.onnx"))
    info = quantize_onnx(src, tmp_path / "ours.onnx", OrtDynamicInt8Config(reduce_range=False))
    assert info["per_channel"] is False
    assert (tmp_path / "ours.onnx").read_bytes() == (tmp_path / "library.onnx").read_bytes()
