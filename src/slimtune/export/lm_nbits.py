"""Weight-only quantized LMs in ONNX Runtime: every quantized layer's MatMul becomes a ``MatMulNBits`` node
(com.microsoft) built from the model's own integer codes, scales and zero points — nothing is re-quantized, so
ONNX Runtime computes with exactly the weights the PyTorch fake-quant model holds.

The fp32 KV-cache export (``lm_onnx``) writes each Linear as ``MatMul(x, Wᵀ)`` and each GPT-2 Conv1D as
``Gemm(x, W, b)``; the initializer of a quantized layer is found by its exact values (the dequantized weight,
in either orientation), its node is replaced by ``MatMulNBits`` (+ ``Add`` of the bias for a Gemm), and the fp32
initializer is dropped. A quantized token embedding's ``Gather`` becomes ``GatherBlockQuantized``
(``lm_gather_quant``); a tied embedding and lm_head share one packed tensor. Weights an exporter fused side by
side (q/k/v, gate/up: the concatenated fp32 weight in the graph) are found as the concatenation of their layers'
codes and become one ``MatMulNBits``. A node that uses a quantized weight
in any other way (a fused or transposed copy) is left as it is, with its fp32 weight, and reported
(``left_fp32``, and a logged warning). Packing follows ONNX Runtime's layout: B is uint8 [N, k_blocks,
block·bits/8] with the element of even index in the low nibble, scales [N, k_blocks], zero points uint8
([N, ⌈k_blocks/2⌉] packed nibbles for 4 bits), omitted when they are the default 2^(bits-1); a width the block
does not divide (ragged groups) is padded to whole blocks with the zero point. 2- and 3-bit codes travel in 4-bit
containers (the kernel has no 3-bit path): exact, but they take 4 bits on disk. ``accuracy_level`` 4 lets the
kernel quantize activations to int8 per block (the fast decode path on AVX2; logits then differ from the
fake-quant model by that rounding); 0 keeps fp32 activations (parity up to fp32 rounding).
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from slimtune.errors import MissingDependencyError, UnsupportedModelError
from slimtune.export.lm_gather_quant import embedding_gather, gather_block_quantized
from slimtune.quantize.weight_only.api import quantized_layers
from slimtune.quantize.weight_only.grid import QuantizedWeight

log = logging.getLogger(__name__)
PER_CHANNEL_BLOCK = 32


def _key(arr: np.ndarray) -> tuple[tuple[int, ...], str]:
    return tuple(arr.shape), hashlib.sha1(np.ascontiguousarray(arr, dtype=np.float32).tobytes()).hexdigest()


def pack(qw: QuantizedWeight) -> dict[str, Any]:
    """The MatMulNBits inputs and attributes of ``qw`` (see the module docstring)."""
    codes = qw.codes.to(torch.int64).numpy()
    n, k = codes.shape
    scales, zeros = qw.scales.float().numpy(), qw.zeros.float().numpy()
    block = qw.group_size
    if block == k and (block & (block - 1) or block > 256):  # per-channel on a width no block fits
        block = PER_CHANNEL_BLOCK
        blocks = -(-k // block)
        scales, zeros = np.repeat(scales, blocks, axis=1), np.repeat(zeros, blocks, axis=1)
    elif block == k and block < 16:
        raise UnsupportedModelError(f"MatMulNBits needs an input width of at least 16, got {k}")
    blocks = -(-k // block)
    if blocks != scales.shape[1]:
        scales, zeros = np.repeat(scales, blocks, axis=1), np.repeat(zeros, blocks, axis=1)
    container = 8 if qw.bits == 8 else 4
    zero_int = zeros.astype(np.int64)
    padded = np.repeat(zero_int, block, axis=1)[:, : blocks * block].copy()  # pad with the zero point: 0.0
    padded[:, :k] = codes
    if container == 4:
        packed = (padded[:, 0::2] | (padded[:, 1::2] << 4)).astype(np.uint8).reshape(n, blocks, block // 2)
    else:
        packed = padded.astype(np.uint8).reshape(n, blocks, block)
    out: dict[str, Any] = {"B": packed, "scales": scales.astype(np.float32).reshape(n, blocks), "K": k, "N": n,
                           "bits": container, "block_size": block, "zero_points": None}  # fmt: skip
    if not (qw.symmetric and qw.bits == container and bool((zero_int == 2 ** (container - 1)).all())):
        if container == 4:
            if blocks % 2:
                zero_int = np.concatenate([zero_int, np.zeros((n, 1), dtype=np.int64)], axis=1)
            out["zero_points"] = (zero_int[:, 0::2] | (zero_int[:, 1::2] << 4)).astype(np.uint8)
        else:
            out["zero_points"] = zero_int.astype(np.uint8)
    return out


def check_matmul_nbits() -> None:
    """Raise ``MissingDependencyError`` (one line) when this onnxruntime cannot run a MatMulNBits node."""
    try:
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper
    except ImportError as exc:
        raise MissingDependencyError("MatMulNBits export needs onnx and onnxruntime: pip install onnxruntime") from exc
    b = numpy_helper.from_array(np.zeros((1, 1, 8), dtype=np.uint8), "B")
    s = numpy_helper.from_array(np.ones(1, dtype=np.float32), "S")
    node = helper.make_node("MatMulNBits", ["A", "B", "S"], ["Y"], domain="com.microsoft", K=16, N=1, bits=4,
                            block_size=16)  # fmt: skip
    graph = helper.make_graph([node], "probe", [helper.make_tensor_value_info("A", TensorProto.FLOAT, [1, 16])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 1])], [b, s])  # fmt: skip
    proto = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    )
    try:
        sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
        sess.run(None, {"A": np.ones((1, 16), dtype=np.float32)})
    except Exception as exc:
        raise MissingDependencyError(
            f"onnxruntime {getattr(ort, '__version__', '?')} cannot run MatMulNBits ({str(exc).splitlines()[0][:80]}); "
            "install onnxruntime >= 1.17 (`pip install -U onnxruntime`)"
        ) from None


def _attr(node: Any, name: str, default: float) -> float:
    for a in node.attribute:
        if a.name == name:
            return float(a.f if a.type == a.FLOAT else a.i)
    return default


def rewrite_matmul_nbits(
    model: nn.Module, onnx_path: str | Path, *, accuracy_level: int = 4, external_data: bool = False
) -> dict[str, Any]:
    """Rewrite the fp32 export at ``onnx_path`` in place (see the module docstring); returns what changed.
    Raises ``UnsupportedModelError`` when a quantized layer's weight is not found in the graph."""
    try:
        import onnx
        from onnx import helper, numpy_helper
    except ImportError as exc:
        raise MissingDependencyError("MatMulNBits export needs onnx: pip install onnx") from exc
    layers = quantized_layers(model)
    path = Path(onnx_path)
    proto = onnx.load(str(path))
    graph = proto.graph
    by_key: dict[tuple[tuple[int, ...], str], str] = {}
    arrays: dict[str, np.ndarray] = {}
    for init in graph.initializer:
        if init.data_type == onnx.TensorProto.FLOAT and len(init.dims) == 2:
            arr = numpy_helper.to_array(init)
            arrays[init.name] = arr
            by_key.setdefault(_key(arr), init.name)
    plan: dict[str, tuple[str, QuantizedWeight, bool]] = {}  # initializer → (layer, codes, stored as (in, out))
    covered: set[str] = set()
    for name, members, qw in _candidates(model, layers):
        w = qw.dequantize().numpy()
        for transposed, arr in ((True, w.T), (False, w)):
            found = by_key.get(_key(arr))
            if found is not None:
                plan[found] = (name, qw, transposed)
                covered.update(members)
                break
    missing = [name for name in layers if name not in covered]
    if missing:
        raise UnsupportedModelError(
            f"the quantized weight of '{missing[0]}' is not in the exported graph; was the model changed after "
            "quantize_lm_? Re-quantize, then export"
        )
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for i in node.input:
            consumers.setdefault(i, []).append(node)
    skip: set[int] = set()  # Transposes folded into a GatherBlockQuantized
    new_nodes: list[Any] = []
    packed_done: dict[str, dict[str, Any]] = {}
    done: dict[str, int] = {}  # initializer → nodes rewritten to read its codes
    counts = {"MatMulNBits": 0, "GatherBlockQuantized": 0}
    for node in graph.node:
        if id(node) in skip:
            continue
        target = _target(node, plan)
        gather = None if target is not None else embedding_gather(node, plan, consumers)
        if target is None and gather is None:
            new_nodes.append(node)
            continue
        init_name = node.input[0] if gather else target[0]  # type: ignore[index]
        layer, qw, _ = plan[init_name]
        prefix = f"{init_name}_nbits"
        if init_name not in packed_done:
            p = packed_done[init_name] = pack(qw)
            graph.initializer.extend([numpy_helper.from_array(p["B"], f"{prefix}_B"),
                                      numpy_helper.from_array(p["scales"], f"{prefix}_scales")])  # fmt: skip
            if p["zero_points"] is not None:
                graph.initializer.append(numpy_helper.from_array(p["zero_points"], f"{prefix}_zp"))
        p = packed_done[init_name]
        done[init_name] = done.get(init_name, 0) + 1
        if gather is not None:
            if gather is not node:  # Gather(Wᵀ, ids, axis=1) → Transpose: one gather of W's rows instead
                skip.add(id(gather))
            nodes, consts = gather_block_quantized(node, prefix, p, output=gather.output[0])
            new_nodes += nodes
            graph.initializer.extend(consts)
            counts["GatherBlockQuantized"] += 1
            continue
        bias = target[1]  # type: ignore[index]
        inputs = [node.input[0], f"{prefix}_B", f"{prefix}_scales"]
        if p["zero_points"] is not None:
            inputs.append(f"{prefix}_zp")
        out = node.output[0] if bias is None else f"{node.output[0]}_nobias"
        attrs = {k: p[k] for k in ("K", "N", "bits", "block_size")}
        if accuracy_level:
            attrs["accuracy_level"] = accuracy_level
        new_nodes.append(helper.make_node("MatMulNBits", inputs, [out], name=f"{node.name or layer}_nbits",
                                          domain="com.microsoft", **attrs))  # fmt: skip
        if bias is not None:
            new_nodes.append(helper.make_node("Add", [out, bias], [node.output[0]], name=f"{node.name}_bias"))
        counts["MatMulNBits"] += 1
    left = sorted(plan[i][0] for i in plan if i not in done)
    if left:
        log.warning("MatMulNBits export: %d quantized weight(s) are not read by a plain MatMul/Gemm/Gather and stay "
                    "fp32 in the graph: %s", len(left), ", ".join(left))  # fmt: skip
    del graph.node[:]
    graph.node.extend(new_nodes)
    used = {i for n in graph.node for i in n.input}
    keep = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    if not any(o.domain == "com.microsoft" for o in proto.opset_import):
        proto.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    if external_data:
        onnx.save_model(proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=f"{path.name}.data", size_threshold=1024)  # fmt: skip
    else:
        onnx.save_model(proto, str(path))
        path.with_name(f"{path.name}.data").unlink(missing_ok=True)
    return {"matmul_nbits": counts["MatMulNBits"], "gather_block_quantized": counts["GatherBlockQuantized"],
            "left_fp32": left, "accuracy_level": accuracy_level,
            "bits": sorted({qw.bits for _, qw in layers.values()})}  # fmt: skip


FUSABLE = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))


def _concat(qws: list[QuantizedWeight]) -> QuantizedWeight | None:
    """The quantized weight of Linears fused side by side (outputs concatenated), or None when grids differ."""
    first = qws[0]
    grid = (first.bits, first.group_size, first.symmetric, first.shape[1])
    if any((q.bits, q.group_size, q.symmetric, q.shape[1]) != grid for q in qws):
        return None
    return QuantizedWeight(torch.cat([q.codes for q in qws]), torch.cat([q.scales for q in qws]),
                           torch.cat([q.zeros for q in qws]), first.bits, first.group_size, first.symmetric,
                           first.method)  # fmt: skip


def _candidates(
    model: nn.Module, layers: dict[str, tuple[nn.Module, QuantizedWeight]]
) -> list[tuple[str, list[str], QuantizedWeight]]:
    """(name, layers it covers, codes) to look for in the graph: every quantized layer, and the side-by-side
    concatenations an exporter may fuse (q/k/v, gate/up) when their grids match."""
    out = [(name, [name], qw) for name, (_, qw) in layers.items()]
    for parent, module in model.named_modules():
        for names in FUSABLE:
            full = [f"{parent}.{n}" if parent else n for n in names]
            if all(hasattr(module, n) for n in names) and all(f in layers for f in full):
                fused = _concat([layers[f][1] for f in full])
                if fused is not None:
                    out.append(("+".join(full), full, fused))
    return out


def _target(node: Any, plan: dict[str, tuple[str, QuantizedWeight, bool]]) -> tuple[str, str | None] | None:
    """(initializer, bias input or None) when ``node`` multiplies by a planned initializer as x @ W."""
    if node.op_type == "MatMul" and len(node.input) == 2 and node.input[1] in plan:
        return (node.input[1], None) if plan[node.input[1]][2] else None
    if node.op_type == "Gemm" and len(node.input) >= 2 and node.input[1] in plan:
        if _attr(node, "transA", 0) or _attr(node, "alpha", 1.0) != 1.0:
            return None
        transposed = plan[node.input[1]][2]
        if bool(_attr(node, "transB", 0)) == transposed:  # Gemm(x, B, transB=1) needs B as (out, in)
            return None
        if len(node.input) > 2 and node.input[2] and _attr(node, "beta", 1.0) != 1.0:
            return None
        return node.input[1], (node.input[2] if len(node.input) > 2 and node.input[2] else None)
    return None


def quantized_bytes(model: nn.Module) -> dict[str, int]:
    """Bytes the quantized layers take as fp32 and as packed MatMulNBits inputs."""
    fp32 = packed = 0
    unique = {id(qw): qw for _, qw in quantized_layers(model).values()}  # a tied embedding + lm_head count once
    for qw in unique.values():
        n, k = qw.shape
        fp32 += 4 * n * k
        p = pack(qw)
        packed += p["B"].nbytes + p["scales"].nbytes + (0 if p["zero_points"] is None else p["zero_points"].nbytes)
    return {"fp32": fp32, "packed": packed}


def set_accuracy_level(onnx_path: str | Path, accuracy_level: int) -> None:
    """Set ``accuracy_level`` on every MatMulNBits node of the graph at ``onnx_path`` (in place)."""
    import onnx
    from onnx import helper

    path = Path(onnx_path)
    external = path.with_name(f"{path.name}.data").is_file()
    proto = onnx.load(str(path))
    for node in proto.graph.node:
        if node.op_type == "MatMulNBits":
            kept = [a for a in node.attribute if a.name != "accuracy_level"]
            del node.attribute[:]
            node.attribute.extend(kept)
            if accuracy_level:
                node.attribute.append(helper.make_attribute("accuracy_level", accuracy_level))
    if external:
        onnx.save_model(proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=f"{path.name}.data", size_threshold=1024)  # fmt: skip
    else:
        onnx.save_model(proto, str(path))


def export_nbits_checked(
    model: nn.Module,
    onnx_path: str | Path,
    *,
    windows: torch.Tensor | None,
    prompts: Any,
    config: Any,
) -> dict[str, Any]:
    """Turn the fp32 export at ``onnx_path`` of the quantized ``model`` into MatMulNBits and check it twice.

    First with ``accuracy_level`` 0 (fp32 activations): logits and greedy tokens must match the fake-quant model
    within ``config``'s tolerances, which proves the codes, scales and zero points are the model's own. Then the
    requested ``config.accuracy_level`` is set; when it is not 0 the kernel rounds activations to int8, so its
    deviation is measured and reported (``fast``) and only its top-1 agreement is held to
    ``config.min_fast_top1_agreement``."""
    from slimtune.errors import ParityError
    from slimtune.export.lm_parity import check_lm_parity, lm_parity

    check_matmul_nbits()
    path = Path(onnx_path)
    external = path.with_name(f"{path.name}.data").is_file()
    changed = rewrite_matmul_nbits(model, path, accuracy_level=0, external_data=external)
    report = lm_parity(model, path, windows=windows, prompts=prompts, config=config)
    check_lm_parity(report, config, what="MatMulNBits export (accuracy_level 0)")
    level = int(config.accuracy_level)
    if level:
        set_accuracy_level(path, level)
        fast = lm_parity(model, path, windows=windows, prompts=prompts, config=config)
        report["fast"] = {k: fast[k] for k in ("max_abs_diff", "top1_agreement", "greedy_identical")}
        if fast["top1_agreement"] < config.min_fast_top1_agreement:
            raise ParityError(
                f"MatMulNBits with accuracy_level {level} agrees with the fake-quant model on the top-1 token at "
                f"only {fast['top1_agreement']:.2%} of positions (< {config.min_fast_top1_agreement:.0%}); "
                "export with accuracy_level 0"
            )
    bits = changed["bits"]
    report.update(changed, accuracy_level=level, precision=f"int{max(bits)}" if len(bits) == 1 else "mixed",
                  quantized_bytes=quantized_bytes(model))  # fmt: skip
    return report
