from __future__ import annotations

from pathlib import Path

import onnxruntime as ort
import pytest
import torch

from slimtune.errors import ParityError
from slimtune.export import check_parity, export_onnx, parity
from slimtune.models import build


@pytest.mark.parametrize("arch", ["mlp", "lenet-300-100", "lenet5", "resnet-small", "transformer-small"])
def test_fp32_export_matches_pytorch_with_dynamic_batch(arch: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    if arch == "transformer-small":
        model, x = build(arch, input_shape=(12,), num_classes=3, vocab_size=50), torch.randint(0, 50, (9, 12))
        x[:, 8:] = 0  # padding
    else:
        model, x = build(arch, input_shape=(1, 8, 8), num_classes=10), torch.rand(9, 1, 8, 8)
    path = export_onnx(model, x[:1], tmp_path / "m.onnx")
    report = parity(model, path, x, torch.zeros(9, dtype=torch.long))
    assert report["max_abs_diff"] < 1e-4 and report["argmax_agreement"] == 1.0 and report["accuracy_delta"] == 0
    shape = ort.InferenceSession(str(path)).get_inputs()[0].shape
    assert isinstance(shape[0], str)  # batch axis is dynamic
    if arch == "transformer-small":
        assert isinstance(shape[1], str)  # sequence axis too
        short = x[:, :6].numpy()
        assert ort.InferenceSession(str(path)).run(None, {"input": short})[0].shape == (9, 3)


def test_check_parity_tolerances() -> None:
    ok = {"max_abs_diff": 1e-5, "argmax_agreement": 1.0, "argmax_agreement_beyond_ties": 1.0, "accuracy_delta": 0.0}
    check_parity(ok, what="m", max_abs_diff=1e-3, min_argmax_agreement=0.99, max_accuracy_drop=1.0)
    with pytest.raises(ParityError, match=r"m: ONNX Runtime output differs from PyTorch by 0.5 at 'logits'\[7, 2\]"):
        worst = {**ok, "max_abs_diff": 0.5, "worst_example": 7, "worst_logit": 2}
        check_parity(worst, what="m", max_abs_diff=1e-3, min_argmax_agreement=0.99)
    with pytest.raises(ParityError, match=r"agree on 95.00% of predictions that are not near ties"):
        check_parity(
            {**ok, "argmax_agreement": 0.9, "argmax_agreement_beyond_ties": 0.95},
            what="m",
            max_abs_diff=None,
            min_argmax_agreement=0.99,
        )
    with pytest.raises(ParityError, match=r"accuracy in ONNX Runtime is 2.50 points below PyTorch"):
        check_parity({**ok, "accuracy_delta": 2.5}, what="m", max_abs_diff=None, min_argmax_agreement=0.9,
                     max_accuracy_drop=1.0)  # fmt: skip


def test_near_ties_are_counted_separately(tmp_path: Path) -> None:
    model = torch.nn.Sequential(torch.nn.Linear(2, 2))
    with torch.no_grad():
        model[0].weight.copy_(torch.eye(2))
        model[0].bias.zero_()
    model.slimtune_spec = {}  # type: ignore[assignment]
    path = export_onnx(model, torch.rand(1, 2), tmp_path / "m.onnx")
    x = torch.tensor([[1.0, 1.0 + 1e-7], [2.0, 0.0]])  # the first row is a tie
    report = parity(model, path, x)
    assert report["argmax_agreement_beyond_ties"] == 1.0


@pytest.mark.parametrize("optimize", ["none", "basic", "all"])
def test_external_data_and_ort_optimisation_keep_parity(optimize: str, tmp_path: Path) -> None:
    from slimtune._io import path_bytes
    from slimtune.export.bundle import export_bundle
    from slimtune.runtime import Predictor
    from slimtune.testing.tiny import tiny

    model, data = tiny("lenet-300-100")
    assert isinstance(data.test.x, torch.Tensor)
    path = export_onnx(model, data.test.x[:1], tmp_path / "m.onnx", external_data=True, optimize=optimize)
    side = tmp_path / "m.onnx.data"
    assert side.is_file() and side.stat().st_size > 100_000 > 20 * path.stat().st_size  # weights left the graph
    assert path_bytes(path) == path.stat().st_size + side.stat().st_size
    assert parity(model, path, data.test.x)["max_abs_diff"] < 1e-4
    bundle = export_bundle(model, tmp_path / "b", data=data, onnx=path)  # the side file travels with it
    logits = Predictor(bundle).logits(data.test.x.numpy())
    with torch.no_grad():
        assert abs(logits - model.eval()(data.test.x).numpy()).max() < 1e-4


def test_parity_names_the_worst_output(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model, x = build("mlp", input_shape=(1, 8, 8), num_classes=10), torch.rand(9, 1, 8, 8)
    path = export_onnx(model, x[:1], tmp_path / "m.onnx")
    with torch.no_grad():
        model.net[-1].bias[4] += 1.0  # PyTorch now differs from the exported graph in logit 4 only
    report = parity(model, path, x)
    assert report["worst_logit"] == 4 and 0 <= report["worst_example"] < 9
