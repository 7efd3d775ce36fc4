"""One peer's weight-only quantization of a Hugging Face causal LM folder, run in the peer's own virtual environment
(for lm_quant_peers.py; this file imports neither slimtune nor the benchmark's modules, only torch, transformers,
safetensors and the peer). Writes the dequantized (fake-quant) weights of every quantized Linear as a safetensors
state dict plus a JSON with the peer's version, its settings, the quantize wall time, or the one-line error.

    <venv>/bin/python benchmarks/_peer_quant.py --peer llmc-gptq --model DIR --grid int3-g64-asym \
        --calib calib.safetensors --out weights.safetensors --meta meta.json

Peers: ``llmc-gptq`` (llm-compressor's GPTQModifier, its defaults: static act-order, dampening 0.01, 128-column
blocks; lm_head ignored), ``hqq`` (the hqq library's Quantizer with ``optimize=True``; ``--axis`` 0 or 1,
``--round-zero``, ``--no-optimize``), ``gptqmodel`` (GPTQModel's GPTQ on CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import time
import traceback
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file


def grid(text: str) -> dict[str, Any]:
    bits, group, sym = text.split("-")
    return {"bits": int(bits[3:]), "group_size": -1 if group == "pc" else int(group[1:]), "symmetric": sym == "sym"}


def block_linears(model: torch.nn.Module) -> dict[str, torch.nn.Linear]:
    """Every Linear of the decoder blocks (model.layers.*): the layers slimtune quantizes; lm_head stays fp32."""
    return {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and ".layers." in f".{n}"}


def load(folder: Path) -> Any:
    import transformers

    return transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()


Weights = tuple[dict[str, torch.Tensor], dict[str, Any]]


def llmc_gptq(folder: Path, g: dict[str, Any], calib: torch.Tensor, bypass: bool) -> Weights:
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
    from compressed_tensors.quantization.lifecycle.forward import fake_quantize
    from datasets import Dataset
    from llmcompressor import oneshot
    from llmcompressor.modifiers.quantization import GPTQModifier

    model = load(folder)
    args = QuantizationArgs(num_bits=g["bits"], type="int", symmetric=g["symmetric"], strategy="group",
                            group_size=g["group_size"])  # fmt: skip
    scheme = {"g": QuantizationScheme(targets=["Linear"], weights=args)}
    recipe = GPTQModifier(config_groups=scheme, ignore=["lm_head"], bypass_divisibility_checks=bypass)
    data = Dataset.from_dict({"input_ids": calib.tolist(), "attention_mask": torch.ones_like(calib).tolist()})
    t0 = time.perf_counter()
    oneshot(model=model, dataset=data, recipe=recipe, num_calibration_samples=calib.shape[0],
            max_seq_length=calib.shape[1], shuffle_calibration_samples=False)  # fmt: skip
    secs = time.perf_counter() - t0
    out, how = {}, "compressed_tensors fake_quantize"
    with torch.no_grad():
        for name, layer in block_linears(model).items():
            qargs = layer.quantization_scheme.weights
            try:  # the weights as compressed-tensors stores them
                w = fake_quantize(layer.weight, layer.weight_scale, layer.weight_zero_point, qargs)
            except Exception:  # a group that does not divide the width (bypass): GPTQ's own fake-quant weight
                w, how = layer.weight.detach().clone(), "GPTQ's weight (fake_quantize refuses ragged groups)"
            out[f"{name}.weight"] = w
    used = next(iter(block_linears(model).values())).quantization_scheme.weights
    settings = {"block_size": recipe.block_size, "dampening_frac": recipe.dampening_frac,
                "actorder": str(used.actorder), "observer": str(used.observer), "dequantized_by": how,
                "bypass_divisibility_checks": bypass}  # fmt: skip
    return out, {"seconds": secs, "settings": settings}


def hqq_lib(folder: Path, g: dict[str, Any], axis: int, round_zero: bool, optimize: bool) -> Weights:
    from hqq.core.quantize import Quantizer

    model = load(folder)
    out = {}
    t0 = time.perf_counter()
    with torch.no_grad():
        for name, layer in block_linears(model).items():
            w = layer.weight.data.float()
            group = w.shape[1] if g["group_size"] == -1 else g["group_size"]
            wq, meta = Quantizer.quantize(w, nbits=g["bits"], group_size=group, optimize=optimize, axis=axis,
                                          round_zero=round_zero, bitpack=False, compute_dtype=torch.float32,
                                          device="cpu")  # fmt: skip
            out[f"{name}.weight"] = Quantizer.dequantize(wq, meta).reshape(w.shape).contiguous()
    secs = time.perf_counter() - t0
    return out, {"seconds": secs, "settings": {"axis": axis, "optimize": optimize, "round_zero": round_zero,
                                                "symmetric": False}}  # fmt: skip


def gptqmodel(folder: Path, g: dict[str, Any], calib: torch.Tensor, fp32: bool) -> Weights:
    """GPTQModel's quantize, then its saved checkpoint loaded back with its torch kernel (BACKEND.TORCH) and each
    layer dequantized by that kernel's own ``dequantize_weight`` (as its ``dequantize_model`` does, kept fp32); the
    kernel's logits on one calibration window are compared with the dequantized model's as a check."""
    import tempfile

    from gptqmodel import BACKEND, GPTQModel, QuantizeConfig

    # its defaults otherwise; kept in memory (its default offloads finished layers to disk as meta tensors)
    cfg = QuantizeConfig(bits=g["bits"], group_size=g["group_size"], sym=g["symmetric"], offload_to_disk=False)
    dtype: Any = torch.float32 if fp32 else "auto"  # its auto dtype on CPU is bfloat16
    model = GPTQModel.load(str(folder), cfg, device="cpu", dtype=dtype)
    rows = [{"input_ids": r.tolist(), "attention_mask": [1] * len(r)} for r in calib]
    t0 = time.perf_counter()
    model.quantize(rows, batch_size=1)
    secs = time.perf_counter() - t0
    keys = ("bits", "group_size", "sym", "desc_act", "act_group_aware", "static_groups", "damp_percent", "mse")
    settings = {k: str(getattr(model.quantize_config, k, None)) for k in keys}
    settings["dtype"] = str(next(model.model.parameters()).dtype)
    with tempfile.TemporaryDirectory() as tmp:
        model.save(tmp)
        del model
        # its torch kernel takes fp16/bf16 only: fp16 keeps the saved fp16 scales as they are
        packed = GPTQModel.load(tmp, backend=BACKEND.TORCH, device="cpu", dtype=torch.float16 if fp32 else dtype)
        out = {}
        with torch.no_grad():
            for name, layer in packed.model.named_modules():
                if ".layers." in f".{name}" and hasattr(layer, "dequantize_weight"):
                    w = layer.dequantize_weight().float()  # [in, out]
                    out[f"{name}.weight"] = (w.T if w.shape[0] == layer.in_features else w).contiguous()
            ids = calib[:1]
            kernel = packed.model(input_ids=ids).logits.float()
            plain = load(folder)
            plain.load_state_dict(out, strict=False)
            settings["kernel_vs_dequantized_max_abs_logit"] = float((plain(input_ids=ids).logits - kernel).abs().max())
    return out, {"seconds": secs, "settings": settings}


def versions(peer: str) -> str:
    from importlib.metadata import version

    dist = {"llmc-gptq": "llmcompressor", "hqq": "hqq", "gptqmodel": "gptqmodel"}[peer]
    return f"{dist} {version(dist)}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--peer", required=True, choices=["llmc-gptq", "hqq", "gptqmodel"])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--grid", required=True)
    ap.add_argument("--calib", type=Path)
    ap.add_argument("--axis", type=int, default=1)
    ap.add_argument("--round-zero", action="store_true")
    ap.add_argument("--bypass", action="store_true", help="llm-compressor: bypass_divisibility_checks=True")
    ap.add_argument("--fp32", action="store_true", help="gptqmodel: load in fp32 (its CPU default is bfloat16)")
    ap.add_argument("--no-optimize", action="store_true", help="hqq: its min/max grid only (a control)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--meta", type=Path, required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    meta: dict[str, Any] = {"version": versions(args.peer), "torch": torch.__version__}
    calib = load_file(str(args.calib))["input_ids"] if args.calib else None
    g = grid(args.grid)
    try:
        if args.peer == "llmc-gptq":
            assert calib is not None, "--calib is required"
            weights, info = llmc_gptq(args.model, g, calib, args.bypass)
        elif args.peer == "hqq":
            weights, info = hqq_lib(args.model, g, args.axis, args.round_zero, not args.no_optimize)
        else:
            assert calib is not None, "--calib is required"
            weights, info = gptqmodel(args.model, g, calib, args.fp32)
        save_file(weights, str(args.out))
        meta.update(info)
    except Exception as exc:  # the peer's own refusal, kept as one line for the table
        frames = traceback.extract_tb(exc.__traceback__)  # the deepest frame in the peer's code, not torch's
        last = next((f for f in reversed(frames) if f"{os.sep}torch{os.sep}" not in f.filename), frames[-1])
        meta["error"] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        meta["error_at"] = f"{'/'.join(Path(last.filename).parts[-2:])}:{last.lineno}"
        traceback.print_exc()
    args.meta.write_text(json.dumps(meta, indent=2))


if __name__ == "__main__":
    main()
