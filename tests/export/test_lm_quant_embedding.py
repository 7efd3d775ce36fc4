"""A quantized token embedding exports as GatherBlockQuantized; a tied embedding + lm_head share one packed
tensor (read by GatherBlockQuantized and MatMulNBits); ragged widths export exactly; parity holds and the file
shrinks to the bit width."""

from __future__ import annotations

import logging
from pathlib import Path

import onnx
import pytest
import torch
from onnx import numpy_helper

from slimtune.export.lm_bundle import export_lm
from slimtune.export.lm_nbits import quantized_bytes, rewrite_matmul_nbits
from slimtune.export.lm_onnx import LMExportConfig, export_lm_onnx
from slimtune.quantize.weight_only import RTNConfig, quantize_lm_
from slimtune.quantize.weight_only.api import quantized_layers
from slimtune.testing.tiny_lm import tiny_gpt2, tiny_llama

CHECK = LMExportConfig(greedy_tokens=8, prompts=2, windows=2, window_length=24)


def _ops(path: Path) -> dict[str, int]:
    graph = onnx.load(str(path)).graph
    out: dict[str, int] = {}
    for n in graph.node:
        out[n.op_type] = out.get(n.op_type, 0) + 1
    return out


@pytest.mark.parametrize("make, blocks", [(tiny_llama, 8), (tiny_gpt2, 8)])  # llama: fused q|k|v, gate|up
def test_tied_embedding_and_head_share_one_quantized_tensor(make, blocks: int, tmp_path: Path) -> None:
    fp32 = export_lm_onnx(make(), tmp_path / "fp32.onnx").stat().st_size
    model = make()
    quantize_lm_(model, RTNConfig(bits=4, group_size=32, symmetric=False, lm_head=True, embedding=True))
    emb, head = model.get_input_embeddings(), model.get_output_embeddings()
    assert head.weight is emb.weight and quantized_layers(model)["lm_head"][1] is emb.slimtune_qweight
    report = export_lm(model, tmp_path / "q.onnx", config=CHECK)
    assert report["max_abs_diff"] < 1e-4 and report["greedy_identical"] and report["top1_agreement"] == 1.0
    assert report["matmul_nbits"] == blocks + 1 and report["gather_block_quantized"] == 1 and not report["left_fp32"]
    graph = onnx.load(str(tmp_path / "q.onnx")).graph
    (gather,) = [n for n in graph.node if n.op_type == "GatherBlockQuantized"]
    vocab = emb.weight.shape[0]
    (head_node,) = [
        n for n in graph.node if n.op_type == "MatMulNBits" and any(a.name == "N" and a.i == vocab for a in n.attribute)
    ]
    assert head_node.input[1:] == [i.replace("_rows", "_B") if i.endswith("_rows") else i for i in gather.input[:1]] \
        + list(gather.input[2:])  # fmt: skip
    tables = [
        i.name for i in graph.initializer if list(i.dims) in (list(emb.weight.shape), list(emb.weight.shape)[::-1])
    ]
    assert not tables  # no fp32 copy of the [vocab, hidden] table is left
    # bytes: the fp32 file minus every quantized fp32 tensor plus its packing, the shared table counted once
    sizes = quantized_bytes(model)
    assert (
        abs((tmp_path / "q.onnx").stat().st_size - (fp32 - sizes["fp32"] + sizes["packed"])) < 8192
    )  # names, small nodes
    assert sizes["packed"] / sizes["fp32"] < 0.17  # int4 g32 asym: 1/8 codes + scales + zero points ≈ 0.16


def test_embedding_alone_unties_and_keeps_head_fp32(tmp_path: Path) -> None:
    model = tiny_llama()
    emb = model.get_input_embeddings().weight.detach().clone()
    quantize_lm_(model, RTNConfig(bits=8, group_size=32, embedding=True))
    assert torch.equal(model.lm_head.weight, emb) and not torch.equal(model.get_input_embeddings().weight, emb)
    report = export_lm(model, tmp_path / "e.onnx", config=CHECK)
    assert report["gather_block_quantized"] == 1 and report["matmul_nbits"] == 8 and report["greedy_identical"]
    assert report["max_abs_diff"] < 1e-4
    nbits = [n for n in onnx.load(str(tmp_path / "e.onnx")).graph.node if n.op_type == "MatMulNBits"]
    assert not [n for n in nbits if any(a.name == "N" and a.i == 257 for a in n.attribute)]  # lm_head stays fp32


def test_ragged_embedding_and_layers_export_exactly(tmp_path: Path) -> None:
    model = tiny_llama(hidden=48)  # 48 = 32 + 16: every row ends with a short group, the gather slices padding off
    quantize_lm_(model, RTNConfig(bits=4, group_size=32, ragged_groups=True, lm_head=True, embedding=True))
    report = export_lm(model, tmp_path / "r.onnx", config=CHECK)
    assert report["max_abs_diff"] < 1e-4 and report["greedy_identical"] and report["gather_block_quantized"] == 1
    assert _ops(tmp_path / "r.onnx").get("Slice", 0) >= 1
    graph = onnx.load(str(tmp_path / "r.onnx")).graph
    b = next(numpy_helper.to_array(i) for i in graph.initializer if i.name.endswith("_nbits_B") and i.dims[0] == 257)
    assert b.shape == (257, 2, 16)  # K 48 padded to 2 blocks of 32


def test_a_weight_used_by_an_unknown_node_stays_fp32_and_is_reported(tmp_path: Path, caplog, monkeypatch) -> None:
    from slimtune.export import lm_fuse

    monkeypatch.setattr(lm_fuse, "unsupported_reason", lambda model: "traced in this test")  # one MatMul per Linear
    model = tiny_llama()
    quantize_lm_(model, RTNConfig(bits=4, group_size=32))
    path = export_lm_onnx(model, tmp_path / "m.onnx")
    proto = onnx.load(str(path))
    q = model.model.layers[0].self_attn.q_proj.weight.detach().numpy().T
    weight = next(i.name for i in proto.graph.initializer if list(i.dims) == [64, 64]
                  and (numpy_helper.to_array(i) == q).all())  # fmt: skip
    node = next(n for n in proto.graph.node if n.op_type == "MatMul" and n.input[1] == weight)
    node.op_type = "FusedMatMul"  # a consumer the rewrite does not know (e.g. a fused projection)
    node.domain = "com.microsoft"
    onnx.save(proto, str(path))
    with caplog.at_level(logging.WARNING):
        changed = rewrite_matmul_nbits(model, path)
    assert changed["left_fp32"] == ["model.layers.0.self_attn.q_proj"] and changed["matmul_nbits"] == 13
    assert "stay fp32" in caplog.text and "model.layers.0.self_attn.q_proj" in caplog.text


def test_fused_qkv_and_gate_up_weights_map_to_one_matmul_nbits_each(tmp_path: Path, monkeypatch) -> None:
    from slimtune.export import lm_onnx
    from slimtune.export.lm_graph import KVDecoder

    # an exporter that fuses q/k/v and gate/up of a quantized model: the rewrite finds the concatenated codes
    monkeypatch.setattr(lm_onnx, "KVDecoder", lambda model, fuse: KVDecoder(model, fuse=True))
    try:  # a directly written fused graph (lm_fuse), where present, would bypass the traced KVDecoder
        from slimtune.export import lm_fuse  # type: ignore[attr-defined]

        monkeypatch.setattr(lm_fuse, "unsupported_reason", lambda model: "traced in this test")
    except ImportError:
        pass
    model = tiny_llama()
    quantize_lm_(model, RTNConfig(bits=4, group_size=32, symmetric=False, lm_head=True, embedding=True))
    report = export_lm(model, tmp_path / "f.onnx", config=CHECK)
    assert report["matmul_nbits"] == 2 * 4 + 1 and not report["left_fp32"]  # qkv, o, gate_up, down per layer
    assert report["max_abs_diff"] < 1e-4 and report["greedy_identical"]


def test_gather_of_a_transposed_tied_table_becomes_one_row_gather(tmp_path: Path, monkeypatch) -> None:
    from onnx import helper

    from slimtune.export.lm_parity import lm_parity

    try:  # start from the traced graph (rows gather + Gemm lm_head), not a directly written fused one
        from slimtune.export import lm_fuse  # type: ignore[attr-defined]

        monkeypatch.setattr(lm_fuse, "unsupported_reason", lambda model: "traced in this test")
    except ImportError:
        pass
    model = tiny_llama()
    quantize_lm_(model, RTNConfig(bits=4, group_size=32, lm_head=True, embedding=True))
    path = export_lm_onnx(model, tmp_path / "t.onnx")
    proto = onnx.load(str(path))
    graph = proto.graph
    # the layout of a graph that stores the tied table once as [hidden, vocab] (lm_head MatMul on it, embedding
    # Gather along axis 1 + Transpose)
    gather = next(n for n in graph.node if n.op_type == "Gather" and "input_ids" in n.input)
    table = gather.input[0]
    init = next(i for i in graph.initializer if i.name == table)
    graph.initializer.append(numpy_helper.from_array(numpy_helper.to_array(init).T.copy(), "table_t"))
    nodes = []
    for n in graph.node:
        if n is gather:
            nodes += [helper.make_node("Gather", ["table_t", n.input[1]], ["cols"], axis=1),
                      helper.make_node("Transpose", ["cols"], [n.output[0]], perm=[1, 2, 0])]  # fmt: skip
        elif n.op_type == "Gemm" and n.input[1] == table:
            nodes += [helper.make_node("MatMul", [n.input[0], "table_t"], ["head"]),
                      helper.make_node("Add", ["head", n.input[2]], [n.output[0]])]  # fmt: skip
        else:
            nodes.append(n)
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.remove(init)
    onnx.save(proto, str(path))
    changed = rewrite_matmul_nbits(model, path, accuracy_level=0)
    assert changed["gather_block_quantized"] == 1 and changed["matmul_nbits"] == 15 and not changed["left_fp32"]
    ops = _ops(path)
    assert "Transpose" not in ops or all(
        n.output[0] != "cols" for n in onnx.load(str(path)).graph.node
    )  # the column gather and its transpose are gone
    assert not [i for i in onnx.load(str(path)).graph.initializer if i.name == "table_t"]
    report = lm_parity(model, path, windows=None, prompts=None, config=CHECK)
    assert report["max_abs_diff"] < 1e-4 and report["greedy_identical"]


def test_gptq_quantizes_the_tied_table_on_the_final_hidden_states(tmp_path: Path) -> None:
    """GPTQ's lm_head (head_gptq) fits the quantized model's own final hidden states: the logit error of the shared
    table is below RTN's on the same grid; the table stays one tensor and exports with parity."""
    from slimtune.models.blocks import observe_inputs
    from slimtune.quantize.weight_only import GPTQConfig

    torch.manual_seed(0)
    ids = torch.randint(0, 257, (12, 32))
    errors = {}
    for head_gptq in (False, True):
        model, ref = tiny_llama(), tiny_llama()
        cfg = GPTQConfig(bits=3, group_size=32, samples=8, batch_size=4, lm_head=True, embedding=True,
                         head_gptq=head_gptq)  # fmt: skip
        quantize_lm_(model, cfg, calibration=ids[:8])
        emb, head = model.get_input_embeddings(), model.get_output_embeddings()
        assert head.weight is emb.weight and quantized_layers(model)["lm_head"][1] is emb.slimtune_qweight
        hidden: list[torch.Tensor] = []
        observe_inputs(model, head, ids[8:], batch_size=4, observe=hidden.append)
        x = torch.cat(hidden).reshape(-1, head.weight.shape[1])
        errors[head_gptq] = float(((head.weight - ref.lm_head.weight) @ x.T).pow(2).mean())
        if head_gptq:
            report = export_lm(model, tmp_path / "g.onnx", config=CHECK)
            assert report["max_abs_diff"] < 1e-4 and report["greedy_identical"] and report["gather_block_quantized"]
    assert errors[True] < 0.9 * errors[False], errors
