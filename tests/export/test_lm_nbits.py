"""Weight-only quantized LMs export to ONNX Runtime's MatMulNBits with the model's own codes: every method ×
bits {4, 8} on tiny Llama and GPT-2 passes strict parity (accuracy_level 0) and the measured fast check
(accuracy_level 4), the file shrinks by the bit width, and a 4-bit bundle generates without torch."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
import torch

from slimtune.errors import UnsupportedModelError
from slimtune.export.lm_bundle import export_lm, export_lm_bundle
from slimtune.export.lm_nbits import quantized_bytes, rewrite_matmul_nbits
from slimtune.export.lm_onnx import LMExportConfig, export_lm_onnx
from slimtune.quantize.weight_only import AWQConfig, GPTQConfig, HQQConfig, RTNConfig, quantize_lm_
from slimtune.testing.tiny_lm import byte_tokenizer, tiny_gpt2, tiny_llama

IDS = torch.randint(0, 256, (8, 32), generator=torch.Generator().manual_seed(1))
CHECK = LMExportConfig(greedy_tokens=12, prompts=2, windows=2, window_length=24)
METHODS = {
    "rtn": lambda b: RTNConfig(bits=b, group_size=32),
    "hqq": lambda b: HQQConfig(bits=b, group_size=32),
    "gptq": lambda b: GPTQConfig(bits=b, group_size=32, samples=8, symmetric=False),
    "awq": lambda b: AWQConfig(bits=b, group_size=32, samples=8, grid=5),
}
MODELS = {"llama": tiny_llama, "gpt2": tiny_gpt2}


@pytest.fixture(scope="module")
def fp32_sizes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, int]:
    out = tmp_path_factory.mktemp("fp32")
    return {k: export_lm_onnx(make(), out / f"{k}.onnx").stat().st_size for k, make in MODELS.items()}


@pytest.mark.parametrize("family", list(MODELS))
@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_exports_to_matmul_nbits_with_parity(
    family: str, bits: int, method: str, tmp_path: Path, fp32_sizes: dict[str, int]
) -> None:
    model = MODELS[family]()
    quantize_lm_(model, METHODS[method](bits), calibration=IDS)
    report = export_lm(model, tmp_path / "q.onnx", config=CHECK)
    # accuracy_level 0: the codes are the model's own, up to fp32 rounding
    assert report["max_abs_diff"] < 1e-4 and report["greedy_identical"] and report["top1_agreement"] == 1.0
    assert report["accuracy_level"] == 4 and report["fast"]["top1_agreement"] >= 0.9
    graph = onnx.load(str(tmp_path / "q.onnx")).graph
    nodes = [n for n in graph.node if n.op_type == "MatMulNBits"]
    # llama: fused q|k|v and gate|up, so 4 per layer (q|k|v, o, gate|up, down); GPT-2: c_attn, c_proj, c_fc, c_proj
    assert len(nodes) == report["matmul_nbits"] == 8
    assert all(a.i == 4 for n in nodes for a in n.attribute if a.name == "accuracy_level")
    assert not [n for n in graph.node if n.op_type in ("MatMul", "Gemm") and "layers" in "".join(n.input)]
    # bytes on disk: the quantized part shrinks to its packed size, nothing else changes
    sizes = quantized_bytes(model)
    expected = fp32_sizes[family] - sizes["fp32"] + sizes["packed"]
    assert abs((tmp_path / "q.onnx").stat().st_size - expected) < 4096
    ratio = sizes["packed"] / sizes["fp32"]
    assert ratio < (0.17 if bits == 4 else 0.29)  # int4 g32 ~1/6 of fp32 (+ scales), int8 g32 ~0.28


def test_low_bits_and_per_channel_export_exactly(tmp_path: Path) -> None:
    # hidden 48 is no power of two: per-channel rows span padded 32-blocks; 2/3-bit codes ride in 4-bit containers
    for cfg, hidden in ((RTNConfig(bits=3, group_size=-1, symmetric=True), 48), (HQQConfig(bits=2, group_size=64), 64)):
        model = tiny_llama(hidden=hidden)
        quantize_lm_(model, cfg)
        report = export_lm(model, tmp_path / f"q{cfg.bits}.onnx", config=CHECK)
        assert report["max_abs_diff"] < 1e-4 and report["greedy_identical"]


def test_accuracy_level_zero_is_kept_and_a_changed_model_is_refused(tmp_path: Path) -> None:
    model = tiny_gpt2()
    quantize_lm_(model, RTNConfig(bits=4, group_size=32))
    cfg = LMExportConfig(greedy_tokens=4, prompts=1, windows=1, window_length=16, accuracy_level=0)
    report = export_lm(model, tmp_path / "a0.onnx", config=cfg)
    assert "fast" not in report and report["accuracy_level"] == 0
    nodes = [n for n in onnx.load(str(tmp_path / "a0.onnx")).graph.node if n.op_type == "MatMulNBits"]
    assert nodes and not any(a.name == "accuracy_level" for n in nodes for a in n.attribute)
    changed = copy.deepcopy(model)
    changed.transformer.h[0].mlp.c_fc.weight.data += 0.01
    path = export_lm_onnx(changed, tmp_path / "c.onnx")
    with pytest.raises(UnsupportedModelError, match=r"transformer\.h\.0\.mlp\.c_fc.*Re-quantize"):
        rewrite_matmul_nbits(changed, path)


def test_int4_bundle_generates_without_torch(tmp_path: Path) -> None:
    model = tiny_llama()
    quantize_lm_(model, GPTQConfig(bits=4, group_size=32, samples=8), calibration=IDS)
    bundle = export_lm_bundle(model, byte_tokenizer(), tmp_path / "b", config=CHECK, prompts=["Hello"])
    code = (
        "import sys, json; sys.modules['torch'] = None\n"
        "from slimtune.runtime import LMGenerator\n"
        f"g = LMGenerator({str(bundle)!r})\n"
        "out = g.generate(['Hello'], max_new_tokens=8)\n"
        f"m = json.load(open({str(bundle / 'bundle.json')!r}))\n"
        "loaded = [k for k, v in sys.modules.items() if v is not None]\n"
        "assert 'torch' not in loaded, loaded\n"
        "print('OK', m['precision'], len(out[0]) > 0)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "OK int4 True" in res.stdout


def test_quantized_lm_head_exports_too(tmp_path: Path) -> None:
    for make, layers in ((tiny_llama, 9), (tiny_gpt2, 9)):  # llama: fused q|k|v and gate|up, + lm_head
        model = make()
        quantize_lm_(model, RTNConfig(bits=4, group_size=32, lm_head=True))
        report = export_lm(model, tmp_path / "h.onnx", config=CHECK)
        assert report["matmul_nbits"] == layers and report["max_abs_diff"] < 1e-4 and report["greedy_identical"]


def test_onnxruntime_without_matmul_nbits_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxruntime as ort

    from slimtune.errors import MissingDependencyError
    from slimtune.export.lm_nbits import check_matmul_nbits

    check_matmul_nbits()  # the installed onnxruntime has it

    class NoContribOps:
        def __init__(self, *a: object, **k: object) -> None:
            raise RuntimeError("Could not find an implementation for MatMulNBits(1) node with name ''")

    monkeypatch.setattr(ort, "InferenceSession", NoContribOps)
    with pytest.raises(MissingDependencyError, match=r"cannot run MatMulNBits .*pip install -U onnxruntime") as err:
        check_matmul_nbits()
    assert "\n" not in str(err.value)
