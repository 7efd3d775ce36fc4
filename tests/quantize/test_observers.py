from __future__ import annotations

import pytest
import torch

from slimtune.data import DataSplits
from slimtune.errors import ConfigError, DataError
from slimtune.quantize.affine import QuantSpec, fake_quantize
from slimtune.quantize.calibration import CalibrationDataset
from slimtune.quantize.observers import OBSERVERS, Observer, make_observer

NAMES = ["minmax", "moving-average", "percentile", "mse", "entropy"]


def _fed(name: str, x: torch.Tensor, **options: object) -> Observer:
    obs = make_observer(name, **options)
    for chunk in x.chunk(4):
        obs.update(chunk)
    return obs


def _error(x: torch.Tensor, obs: Observer, spec: QuantSpec) -> float:
    scale, zp = obs.qparams(spec)
    return float((fake_quantize(x, scale, zp, spec) - x).pow(2).sum())


def test_registry_lists_every_observer() -> None:
    assert OBSERVERS.names() == sorted(NAMES)
    with pytest.raises(ConfigError, match="unknown observer 'minmx' \\(did you mean 'minmax'\\?\\); known: entropy"):
        make_observer("minmx")
    with pytest.raises(ConfigError, match=r"observer 'minmax': .*unexpected keyword argument 'momentum'"):
        make_observer("minmax", momentum=0.5)
    with pytest.raises(ConfigError, match=r"percentile must be in \(50, 100\], got 40"):
        make_observer("percentile", percentile=40)
    with pytest.raises(ConfigError, match=r"momentum must be in \[0, 1\), got 1.5"):
        make_observer("moving-average", momentum=1.5)
    with pytest.raises(ConfigError, match="observer 'entropy' is per-tensor only"):
        make_observer("entropy", per_channel=True)


@pytest.mark.parametrize("name", NAMES)
def test_empty_calibration_is_an_error(name: str) -> None:
    obs = make_observer(name)
    obs.update(torch.empty(0, 3))  # an empty batch is ignored, not counted
    with pytest.raises(ConfigError, match=r"^observer saw no data: the calibration set is empty$"):
        obs.qparams(QuantSpec())


@pytest.mark.parametrize("name", NAMES)
def test_every_observer_covers_plain_data(name: str) -> None:
    x = torch.rand(4000) * 4 - 1  # uniform on [-1, 3]: nothing to clip
    lo, hi = _fed(name, x).range(QuantSpec(bits=8))
    assert -1.0 - 1e-6 <= float(lo) <= -0.95 and 2.9 <= float(hi) <= 3.0 + 1e-6, (float(lo), float(hi))


def test_minmax_per_channel_and_moving_average() -> None:
    w = torch.randn(3, 10, 2)
    obs = _fed("minmax", w, per_channel=True, channel_axis=1)
    lo, hi = obs.range()
    assert torch.equal(lo, w.amin(dim=(0, 2))) and torch.equal(hi, w.amax(dim=(0, 2)))
    ema = make_observer("moving-average", momentum=0.9)
    ema.update(torch.tensor([0.0, 1.0]))
    ema.update(torch.tensor([-1.0, 3.0]))
    lo, hi = ema.range()
    assert float(lo) == pytest.approx(-0.1) and float(hi) == pytest.approx(1.2)
    assert float(ema.min_val) == -1.0 and float(ema.max_val) == 3.0  # the exact extremes are kept too
    pc = make_observer("moving-average", per_channel=True)
    pc.update(torch.tensor([[1.0, 2.0], [3.0, -4.0]]))
    assert pc.range()[1].tolist() == [2.0, 3.0]


def test_percentile_clips_an_outlier_that_minmax_keeps() -> None:
    x = torch.randn(20000)
    x[123] = 60.0
    assert float(_fed("minmax", x).range()[1]) == 60.0
    lo, hi = _fed("percentile", x, percentile=99.99).range()
    assert 2.5 < float(hi) < 6.0 and -6.0 < float(lo) < -2.5
    assert float(_fed("percentile", x, percentile=100.0).range()[1]) == pytest.approx(60.0, abs=0.05)


def test_histogram_grows_with_wider_batches() -> None:
    obs = make_observer("percentile", percentile=100.0)
    obs.update(torch.rand(1000))
    obs.update(torch.rand(1000) * 10 - 5)
    lo, hi = obs.range()
    assert float(lo) == pytest.approx(-5.0, abs=0.05) and float(hi) == pytest.approx(5.0, abs=0.05)
    assert float(obs.hist.sum()) == 2000


@pytest.mark.parametrize("bits", [4, 8])
def test_mse_range_beats_minmax_on_heavy_tails(bits: int) -> None:
    x = torch.distributions.Laplace(0.0, 1.0).sample((20000,))
    spec = QuantSpec(bits=bits)
    mse, minmax = _fed("mse", x), _fed("minmax", x)
    margin = 0.6 if bits == 4 else 1.0  # clipping the tails pays most at few bits
    assert _error(x, mse, spec) < margin * _error(x, minmax, spec)
    sym = QuantSpec(bits=bits, symmetric=True)
    assert _error(x, mse, sym) < margin * _error(x, minmax, sym)


def test_entropy_range_lies_inside_minmax() -> None:
    x = torch.distributions.StudentT(3.0).sample((20000,))
    lo_mm, hi_mm = _fed("minmax", x).range()
    for spec in (QuantSpec(bits=8, symmetric=True), QuantSpec(bits=4)):
        lo, hi = _fed("entropy", x).range(spec)
        assert float(lo_mm) < float(lo) < 0 < float(hi) < float(hi_mm)
    relu = torch.relu(x)  # half exact zeros: left out of the histogram, so no collapse to a tiny range
    lo, hi = _fed("entropy", relu).range(QuantSpec(bits=8))
    assert float(lo) == 0.0 and 3.0 < float(hi) <= float(relu.max())


def test_calibration_dataset_sources(digits: DataSplits) -> None:
    x = torch.randn(70, 3)
    batches = list(CalibrationDataset(x, batch_size=32))
    assert [len(b) for b in batches] == [32, 32, 6] and len(CalibrationDataset(x, batch_size=32)) == 3
    split = digits.calibration(50)
    ds = CalibrationDataset(split, batch_size=20)
    assert len(ds) == 3 and torch.equal(torch.cat(list(ds)), split.x)  # type: ignore[arg-type]
    pairs = [(x[:10], torch.zeros(10)), (x[10:], torch.ones(60))]  # e.g. a DataLoader of (x, y)
    assert [len(b) for b in CalibrationDataset(pairs)] == [10, 60]
    doubled = CalibrationDataset(iter([x[:5], x[5:9]]), transform=lambda b: b * 2)
    assert len(doubled) == 2 and torch.equal(next(iter(doubled)), x[:5] * 2)
    assert list(CalibrationDataset(["a b", "c"], transform=len, batch_size=1)) == [1, 1]


def test_calibration_dataset_errors() -> None:
    for empty in (torch.empty(0, 4), [], iter([])):
        with pytest.raises(DataError, match=r"^empty calibration set: pass at least one example$"):
            CalibrationDataset(empty)
    with pytest.raises(DataError, match="calibration on text needs a transform"):
        CalibrationDataset(["some text"])
    with pytest.raises(ConfigError, match="batch_size must be >= 1, got 0"):
        CalibrationDataset(torch.ones(3, 1), batch_size=0)
