from __future__ import annotations

import pytest
import torch

from slimtune.errors import ConfigError
from slimtune.quantize.affine import FakeQuantize, QuantSpec, compute_qparams, dequantize, fake_quantize, quantize


def test_qparams_by_hand() -> None:
    scale, zp = compute_qparams(-1.0, 3.0, QuantSpec(bits=2))
    assert float(scale) == pytest.approx(4 / 3) and int(zp) == 1
    scale, zp = compute_qparams(-2.0, 1.0, QuantSpec(bits=4, symmetric=True))
    assert float(scale) == pytest.approx(2 / 7) and int(zp) == 0
    scale, zp = compute_qparams(-1.0, 3.0, QuantSpec(bits=8, signed=True))  # asymmetric int8
    assert float(scale) == pytest.approx(4 / 255) and int(zp) == -128 + 64
    scale, zp = compute_qparams(-1.0, 1.0, QuantSpec(bits=8, symmetric=True, signed=False))  # symmetric uint8
    assert float(scale) == pytest.approx(1 / 127) and int(zp) == 128
    # ranges always include zero; a zero-width range gets scale 1
    scale, zp = compute_qparams(2.0, 5.0, QuantSpec(bits=8))
    assert float(scale) == pytest.approx(5 / 255) and int(zp) == 0
    scale, zp = compute_qparams(0.0, 0.0, QuantSpec(bits=8))
    assert float(scale) == 1.0 and int(zp) == 0


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_seed_formula_matches_asymmetric_quantize(bits: int) -> None:
    levels = 2**bits - 1
    # on the grid (−min/scale an integer) the formula and quantize agree everywhere
    lo, hi = -1.0, float(levels - 1)
    x = torch.rand(5000) * (hi - lo) + lo
    formula = torch.round((x - lo) / (hi - lo) * levels)
    scale, zp = compute_qparams(lo, hi, QuantSpec(bits=bits))
    assert torch.equal(quantize(x, scale, zp, QuantSpec(bits=bits)), formula.int())
    # any range: quantize is the formula over the range nudged so that zero is exact ...
    lo, hi = -0.37, 1.91
    scale, zp = compute_qparams(lo, hi, QuantSpec(bits=bits))
    nlo = -float(zp) * float(scale)
    nhi = nlo + float(scale) * levels
    x = torch.rand(5000) * (nhi - nlo) + nlo
    q = quantize(x, scale, zp, QuantSpec(bits=bits))
    assert torch.equal(q, torch.round((x - nlo) / (nhi - nlo) * levels).int())
    # ... and at most one level away from it over the raw range
    raw = torch.round((x - lo) / (hi - lo) * levels).clamp(0, levels)
    assert int((q - raw).abs().max()) <= 1


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("per_channel", [False, True])
def test_round_trip_error_at_most_half_a_step(bits: int, symmetric: bool, per_channel: bool) -> None:
    x = torch.randn(6, 40) * torch.tensor([0.01, 0.1, 1.0, 5.0, 20.0, 0.5]).unsqueeze(1) + 0.3
    spec = QuantSpec(bits=bits, symmetric=symmetric, per_channel=per_channel)
    lo, hi = torch.aminmax(x, dim=1) if per_channel else torch.aminmax(x)
    scale, zp = compute_qparams(lo, hi, spec)
    assert scale.shape == ((6,) if per_channel else ())
    q = quantize(x, scale, zp, spec)
    qmin, qmax = spec.qrange
    assert q.dtype == torch.int32 and int(q.min()) >= qmin and int(q.max()) <= qmax
    back = dequantize(q, scale, zp)
    step = scale.unsqueeze(1) if per_channel else scale
    assert bool(((back - x).abs() <= step / 2 * (1 + 1e-5) + 1e-7).all())
    assert torch.equal(fake_quantize(x, scale, zp, spec), back)


def test_per_channel_along_another_axis() -> None:
    x = torch.randn(3, 4, 5) * torch.tensor([1.0, 10.0, 100.0, 0.1]).reshape(1, 4, 1)
    spec = QuantSpec(bits=8, symmetric=True, per_channel=True, channel_axis=1)
    amax = x.abs().amax(dim=(0, 2))
    scale, zp = compute_qparams(-amax, amax, spec)
    back = dequantize(quantize(x, scale, zp, spec), scale, zp, axis=1)
    assert bool(((back - x).abs() <= scale.reshape(1, 4, 1) / 2 + 1e-6).all())
    assert torch.allclose(fake_quantize(x, scale, zp, spec), back)


def test_straight_through_gradient() -> None:
    spec = QuantSpec(bits=4)
    scale, zp = compute_qparams(-1.0, 1.0, spec)
    x = torch.tensor([-3.0, -0.9, -0.2, 0.0, 0.4, 0.95, 2.5], requires_grad=True)
    fake_quantize(x, scale, zp, spec).sum().backward()
    assert x.grad is not None
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0]
    # per channel, and 1-bit sign quantization
    spec = QuantSpec(bits=2, symmetric=True, per_channel=True)
    w = torch.tensor([[0.5, 3.0], [-13.0, 2.0]], requires_grad=True)
    fake_quantize(w, torch.tensor([1.0, 4.0]), torch.zeros(2, dtype=torch.int32), spec).sum().backward()
    assert w.grad is not None and w.grad.tolist() == [[1.0, 0.0], [0.0, 1.0]]
    sign = QuantSpec(bits=1, symmetric=True)
    v = torch.tensor([-2.0, -0.5, 0.0, 0.7, 5.0], requires_grad=True)
    out = fake_quantize(v, torch.tensor(1.0), torch.tensor(0), sign)
    out.sum().backward()
    assert out.tolist() == [-1.0, -1.0, 1.0, 1.0, 1.0]
    assert v.grad is not None and v.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]


def test_quant_spec_validation() -> None:
    for bits in (0, 9):
        with pytest.raises(ConfigError, match=r"bits must be in 1\.\.8"):
            QuantSpec(bits=bits)
    with pytest.raises(ConfigError, match="bits=1 is sign quantization: it needs symmetric=true"):
        QuantSpec(bits=1)
    with pytest.raises(ConfigError, match="unknown key 'bit'"):
        QuantSpec.from_dict({"bit": 4})
    assert QuantSpec.from_dict({"bits": 4, "symmetric": True}).qrange == (-8, 7)
    assert QuantSpec(bits=8, symmetric=True, narrow_range=True).qrange == (-127, 127)
    assert QuantSpec(bits=8).qrange == (0, 255) and QuantSpec(bits=8).onnx_dtype == torch.uint8
    assert QuantSpec.weights(8).onnx_dtype == torch.int8 and QuantSpec.weights(4).onnx_dtype is None


def test_fake_quantize_module_observes_then_quantizes() -> None:
    fq = FakeQuantize(QuantSpec.weights(8))
    w = torch.randn(5, 7) * torch.arange(1, 6).unsqueeze(1)
    assert torch.equal(fq(w), w)  # observing only
    fq.observe, fq.enabled = False, True
    fq.update_qparams()
    assert fq.scale.shape == (5,) and fq.zero_point.dtype == torch.int32
    lo, hi = torch.iinfo(torch.int8).min, torch.iinfo(torch.int8).max
    assert bool(((fq.zero_point >= lo) & (fq.zero_point <= hi)).all())
    out = fq(w)
    assert not torch.equal(out, w) and bool(((out - w).abs() <= fq.scale.unsqueeze(1) / 2 + 1e-6).all())
    fresh = FakeQuantize(QuantSpec.weights(8))
    fresh.load_state_dict(fq.state_dict())  # per-channel buffers resize on load
    fresh.observe, fresh.enabled = False, True
    assert torch.equal(fresh(w), out)
    acts = FakeQuantize(QuantSpec.activations(8), "moving-average", momentum=0.5)
    acts(torch.rand(4, 3) * 6)
    acts.update_qparams()
    assert 0 <= int(acts.zero_point) <= 255 and acts.scale.shape == (1,)
    assert "bits=8, asym, per-tensor" in repr(acts)
