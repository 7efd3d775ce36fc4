"""ONNX Runtime's own weight-only quantizer (``onnxruntime.quantization.matmul_nbits_quantizer``) on slimtune's fp32
SmolLM2 ONNX, for lm_quantization.py: RTN (DefaultWeightOnlyQuantConfig), HQQ (HQQWeightOnlyQuantConfig, asymmetric
only) and GPTQ (GPTQWeightOnlyQuantConfig: Intel Neural Compressor's code vendored in ORT; it runs the whole model once
per quantized MatMul input over the calibration windows, with fp32 activations, not block by block). Every MatMul with
a constant weight is quantized except the lm_head on the tied table (``lm_head_nodes``), which stays fp32 as ours.
Perplexity through ORT with the same windows (``slimtune.recipe.lm.onnx_perplexity``)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch


class _Reader:
    """ORT calibration reader: one prefill feed (empty KV cache) per calibration window, only the graph's inputs
    (the current export has no position_ids input)."""

    def __init__(self, windows: torch.Tensor, past: dict[str, np.ndarray], names: set[str]) -> None:
        feeds = [
            {"input_ids": w[None].numpy(), "attention_mask": np.ones((1, w.numel()), np.int64),
             "position_ids": np.arange(w.numel(), dtype=np.int64)[None], **past}
            for w in windows
        ]  # fmt: skip
        self.feeds = [{k: v for k, v in f.items() if k in names} for f in feeds]
        self.i = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.i >= len(self.feeds):
            return None
        self.i += 1
        return self.feeds[self.i - 1]

    def rewind(self) -> None:
        self.i = 0

    def __iter__(self) -> Any:
        return iter(self.feeds)


def _empty_past(session: Any) -> dict[str, np.ndarray]:
    """Zero-length KV-cache feeds [1, kv_heads, 0, head_dim] for every past input of the decoder."""
    return {
        i.name: np.zeros([1, *(d if isinstance(d, int) else 0 for d in i.shape[1:])], np.float32)
        for i in session.get_inputs()
        if i.name.startswith("past_key_values")
    }


def lm_head_nodes(model: Any) -> list[str]:
    """The MatMuls of the fused graph that read the tied embedding table (the lm_head): kept fp32, as ours."""
    vocab = {i.name for i in model.graph.initializer if len(i.dims) == 2 and max(i.dims) >= 10_000}
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and any(x in vocab for x in n.input)]


def ort_quantize(
    fp32: Path, out: Path, *, method: str, bits: int, group: int, symmetric: bool, calib: torch.Tensor
) -> float:
    """Write ORT's ``method`` (rtn | hqq | gptq) quantization of ``fp32`` to ``out``; returns the wall seconds."""
    import onnx
    from onnxruntime.quantization import matmul_nbits_quantizer as mnq

    model = onnx.load(str(fp32))
    t0 = time.perf_counter()
    if method == "rtn":
        algo: Any = mnq.DefaultWeightOnlyQuantConfig(block_size=group, is_symmetric=symmetric, bits=bits)
    elif method == "hqq":
        algo = mnq.HQQWeightOnlyQuantConfig(block_size=group, bits=bits)
    else:
        from slimtune.runtime.decoder import ort_decoder_session

        session = ort_decoder_session(fp32, threads=1)
        names = {i.name for i in session.get_inputs()}
        reader = _Reader(calib, _empty_past(session), names)
        algo = mnq.GPTQWeightOnlyQuantConfig(calibration_data_reader=reader, block_size=group, perchannel=True)
    quant = mnq.MatMulNBitsQuantizer(model, bits=bits, block_size=group, is_symmetric=symmetric, algo_config=algo,
                                     nodes_to_exclude=lm_head_nodes(model))  # fmt: skip
    quant.process()
    secs = time.perf_counter() - t0
    quant.model.save_model_to_file(str(out), use_external_data_format=False)
    return secs
