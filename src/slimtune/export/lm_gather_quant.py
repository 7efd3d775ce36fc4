"""A quantized token embedding in ONNX Runtime: ``Gather(table, ids)`` → ``GatherBlockQuantized`` (com.microsoft)
reading the very codes, scales and zero points the ``MatMulNBits`` packing (``lm_nbits.pack``) writes.

One packed tensor serves a tied embedding and lm_head (onnxruntime-genai's ``shared_embeddings`` layout):
``MatMulNBits`` reads B as [N, k_blocks, blob]; the gather reads the same initializer through a ``Reshape`` to
[N, k_blocks·blob] (rows of uint8, two 4-bit codes a byte, low nibble first, default zero point 2^(bits-1) as in
MatMulNBits), with ``gather_axis`` 0 and ``quantize_axis`` 1, scales [N, k_blocks] and zero points
[N, ⌈k_blocks/2⌉] packed (4-bit) or [N, k_blocks] (8-bit), the 2-D shapes both ops accept. A row padded to whole
blocks (a width the block does not divide) is gathered padded and then sliced back to the model's width. A graph
that keeps the tied table transposed ([hidden, vocab], for a MatMul lm_head) and gathers its columns
(``Gather(axis=1)`` → ``Transpose``) gets the same single row gather in place of both nodes.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def embedding_gather(node: Any, plan: dict[str, tuple[str, Any, bool]], consumers: dict[str, list[Any]]) -> Any:
    """The node whose output a GatherBlockQuantized of a planned table can produce, or None: ``node`` itself for
    ``Gather(W, ids, axis=0)`` on a table stored as W (rows); for ``Gather(Wᵀ, ids, axis=1)`` on a table stored
    transposed (a tied lm_head's [hidden, vocab] initializer) the ``Transpose`` that moves hidden last, when it is
    the gather's only consumer."""
    if node.op_type != "Gather" or len(node.input) != 2 or node.input[0] not in plan:
        return None
    axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
    transposed = plan[node.input[0]][2]
    if axis == 0 and not transposed:
        return node
    users = consumers.get(node.output[0], [])
    if axis != 1 or not transposed or len(users) != 1 or users[0].op_type != "Transpose":
        return None
    perm = list(next((a.ints for a in users[0].attribute if a.name == "perm"), []))
    return users[0] if perm and perm == [*range(1, len(perm)), 0] else None


def gather_block_quantized(
    node: Any, prefix: str, packed: dict[str, Any], *, output: str
) -> tuple[list[Any], list[Any]]:
    """The nodes and constant initializers replacing the Gather ``node`` by a GatherBlockQuantized over the packed
    tensors named ``{prefix}_B``, ``{prefix}_scales`` (and ``{prefix}_zp``) that writes the rows to ``output``;
    ``packed`` is ``lm_nbits.pack``'s."""
    from onnx import helper, numpy_helper

    n, k, block, bits = packed["N"], packed["K"], packed["block_size"], packed["bits"]
    row_bytes = int(np.prod(packed["B"].shape[1:]))
    padded_width = row_bytes * 8 // bits
    shape = numpy_helper.from_array(np.array([n, row_bytes], dtype=np.int64), f"{prefix}_rows_shape")
    inits = [shape]
    rows = f"{prefix}_rows"
    nodes = [helper.make_node("Reshape", [f"{prefix}_B", shape.name], [rows], name=f"{prefix}_rows_reshape")]
    inputs = [rows, node.input[1], f"{prefix}_scales"]
    if packed["zero_points"] is not None:
        inputs.append(f"{prefix}_zp")
    out = output if padded_width == k else f"{output}_padded"
    nodes.append(helper.make_node("GatherBlockQuantized", inputs, [out], name=f"{node.name or prefix}_quantized",
                                  domain="com.microsoft", bits=bits, block_size=block, gather_axis=0,
                                  quantize_axis=1))  # fmt: skip
    if padded_width != k:
        consts = {"starts": 0, "ends": k, "axes": -1}
        for key, value in consts.items():
            inits.append(numpy_helper.from_array(np.array([value], dtype=np.int64), f"{prefix}_slice_{key}"))
        nodes.append(helper.make_node("Slice", [out, *(f"{prefix}_slice_{key}" for key in consts)], [output],
                                      name=f"{prefix}_unpad"))  # fmt: skip
    return nodes, inits
