"""Peers' weight-only quantizers on SmolLM2-135M (issue #20), measured exactly as lm_quantization.py measures
slimtune's: the same test windows, calibration windows and threads (its option defaults), perplexity through the same
code, the same fp32 reference. Peers that run on this CPU:

  ort-gptq        ONNX Runtime's GPTQWeightOnlyQuantConfig (Intel Neural Compressor's code vendored in
                  onnxruntime.quantization) on slimtune's fp32 ONNX; perplexity through ORT (lm_quantization.ort_row).
  ort-gptq-cholfix  a diagnosis, not a peer: the same with ``upper_cholesky`` (see below) around ORT's quantizer.
  llmc-gptq       llm-compressor's GPTQModifier (its defaults), in its own venv (``--llmc-python``: it pins an older
                  transformers than slimtune's); the dequantized weights come back as safetensors (_peer_quant.py).
  llmc-gptq-bypass  the same with bypass_divisibility_checks=True (its refusal of g128 on width 576 lifted).
  hqq-lib-axis1   the hqq library's Quantizer (optimize=True), groups along the input columns of each row (axis=1;
                  where the group does not divide the width the groups run over the flattened weight across row ends);
  hqq-lib-axis0   the same with hqq's default axis=0 (groups of ``group`` elements strided down the flattened weight);
                  both in their own venv (``--hqq-python``). hqq is asymmetric only (float zero points).
  hqq-lib-axis1-minmax  a control: hqq's Quantizer with optimize=False (its min/max grid, float zero points).
  gptqmodel       GPTQModel (its defaults) in its own venv (``--gptqmodel-python``); gptqmodel-2workers: the same
                  with GPTQMODEL_CPU_WORKERS=2 (its default, (cpu_count + 1) // 2 = 1 worker here, is below the 2 its
                  own model-loader pool asks for). Its worker threads may run 2 layers at once; torch ops 1 thread.
                  Its CPU default loads the model in bfloat16; gptqmodel-2workers-fp32 loads it in fp32.
  slimtune-*      slimtune's own rtn / gptq / gptq-ao-mse (lm_quantization.ours) for a grid lm_quantization.md lacks.

The ORT GPTQ check (``ort_gptq_check``) runs ORT's own ``gptq()`` on single SmolLM2 layers with the Hessian of the
calibration windows and reports the layer output error tr(ΔW H ΔWᵀ) relative to ORT's RTN: as ORT has it, with the
Cholesky factor's row/column fixed, and after ORT's re-quantization of GPTQ's output into MatMulNBits codes.
Writes benchmarks/results/lm_quant_peers.{json,md}; rows merge by (grid, peer).
Run: ``PYTHONPATH=src python benchmarks/lm_quant_peers.py --peers hqq-lib-axis1 --grids int4-g128-sym``; the
peers' venvs (``--llmc-python`` etc.) are made as benchmarks/requirements.txt says (torch 2.13.0 CPU in each).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lm_quantization as lq
import numpy as np
import torch

from slimtune.data.lm_data import load_text
from slimtune.evaluate.lm import perplexity
from slimtune.models.lm import load_lm
from slimtune.models.lm_io import save_hf_folder
from slimtune.quantize.weight_only.api import block_targets

BENCH = Path(__file__).parent
HF = BENCH / ".cache" / "smollm2-135m-fp32-hf"  # the fp32 model as a Hugging Face folder, for the peers' venvs
ORT_GPTQ = {"actorder": False, "mse": False, "perchannel": True, "percdamp": 0.01, "blocksize": 128}  # its defaults
PEERS = ["ort-gptq", "llmc-gptq", "llmc-gptq-bypass", "hqq-lib-axis1", "hqq-lib-axis0", "hqq-lib-axis1-minmax"]
PEERS += ["gptqmodel", "gptqmodel-2workers", "gptqmodel-2workers-fp32", "ort-gptq-cholfix"]
OURS = ["slimtune-rtn", "slimtune-gptq", "slimtune-gptq-ao-mse"]  # for grids lm_quantization.md lacks (int4-g64-sym)
ORT_NO_3BIT = ("not run: ORT's GPTQ path is 4-bit only — MatMulNBitsQuantizer._generate_q4_node_config writes "
               "'bits': 4 for every MatMul and GPTQWeightOnlyQuantConfig has no bits option, so bits=3 would silently "
               "give int4 (its RTN/HQQ configs: 'Only support 2, 4 or 8 bits quantization')")  # fmt: skip


def commit() -> str:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()


def storage_mb(base: torch.nn.Module, bits: int, groups: int, zero_bytes: float) -> float:
    """MatMulNBits-style bytes: packed codes of the block Linears (K padded to whole groups) + fp32 scales +
    zero points (``zero_bytes`` per group) + every other parameter in fp32 (the tied embedding once)."""
    layers = block_targets(base).values()
    quantized = {id(m.weight) for m in layers}
    other = sum(4 * p.numel() for p in {id(p): p for p in base.parameters()}.values() if id(p) not in quantized)
    codes = sum(m.weight.numel() for m in layers)
    return (other + codes * bits / 8 + groups * (4 + zero_bytes)) / 1e6


def row_groups(base: torch.nn.Module, group: int) -> int:
    """Groups along each row's input columns (the last one shorter where the group does not divide the width)."""
    return sum(m.weight.shape[0] * math.ceil(m.weight.shape[1] / group) for m in block_targets(base).values())


def max_levels(w: torch.Tensor, group: int, flat: bool, axis: int) -> int:
    """Most distinct values in one group (≤ 2^bits when the weights really sit on the peer's grid). ``flat``: hqq's
    groups over the flattened weight (axis=1: consecutive elements; axis=0: strided); else groups along each row's
    columns, the last one shorter where the group does not divide the width."""
    if flat:
        v = w.reshape(-1)
        blocks = [v.reshape(group, -1).T if axis == 0 else v.reshape(-1, group)]
    else:
        blocks = [w[:, i : i + group] for i in range(0, w.shape[1], group)]
    most = 0
    for b in blocks:
        s = b.sort(dim=1).values
        most = max(most, int(((s[:, 1:] != s[:, :-1]).sum(1) + 1).max()))
    return most


def subprocess_peer(peer: str, grid: str, base: torch.nn.Module, test: torch.Tensor, calib: torch.Tensor,
                    args: argparse.Namespace) -> dict[str, Any]:  # fmt: skip
    """Run _peer_quant.py in the peer's venv, load its dequantized weights into a copy of ``base``, score them."""
    from safetensors.torch import load_file, save_file

    python = args.hqq_python if peer.startswith("hqq") else args.llmc_python
    python = args.gptqmodel_python if peer.startswith("gptqmodel") else python
    c = lq.parse_grid(grid)
    if not Path(python).is_file():
        return {"runs_here": f"no: {python} not found (see the install note in the report)", "impl": peer}
    axis = 0 if peer == "hqq-lib-axis0" else 1
    extra = {"hqq-lib-axis1-minmax": ["--no-optimize"], "llmc-gptq-bypass": ["--bypass"],
             "gptqmodel-2workers-fp32": ["--fp32"]}.get(peer, [])  # fmt: skip
    tool = (
        "hqq"
        if peer.startswith("hqq")
        else peer.removesuffix("-bypass").removesuffix("-fp32").removesuffix("-2workers")
    )
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        save_file({"input_ids": calib.contiguous()}, str(t / "calib.safetensors"))
        files = [
            "--calib",
            str(t / "calib.safetensors"),
            "--out",
            str(t / "w.safetensors"),
            "--meta",
            str(t / "meta.json"),
        ]
        cmd = ["nice", "-n", "5", python, str(BENCH / "_peer_quant.py"), "--peer", tool, "--model", str(HF),
               "--grid", grid, "--axis", str(axis), "--threads", str(args.threads), *files, *extra]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
        if peer.startswith(
            "gptqmodel-2workers"
        ):  # its default on a 2-core machine (1 CPU worker) refuses its own loader pool
            env["GPTQMODEL_CPU_WORKERS"] = "2"
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp)  # gptqmodel writes logs/ in cwd
        (BENCH / ".cache" / f"peer-{peer}-{grid}.log").write_text(proc.stdout + proc.stderr)
        if not (t / "meta.json").is_file():
            tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
            return {"runs_here": f"no: exit {proc.returncode}: {tail}", "impl": peer}
        meta = json.loads((t / "meta.json").read_text())
        if "error" in meta:
            return {"runs_here": f"no: {meta['error']} ({meta['error_at']})", "impl": meta["version"]}
        weights = load_file(str(t / "w.safetensors"))
    model = copy.deepcopy(base)
    missing = set(weights) - set(model.state_dict())
    assert not missing and len(weights) == len(block_targets(model)), f"unexpected weights {sorted(missing)[:3]}"
    model.load_state_dict(weights, strict=False)
    group = c["group_size"] if c["group_size"] > 0 else 576
    levels = max(max_levels(w, group, peer.startswith("hqq"), axis) for w in weights.values())
    ppl = perplexity(model, test, batch_size=4)["perplexity"]
    if peer.startswith("hqq"):  # float zero points, groups over the flattened weight
        groups, zero, tokens = sum(w.numel() for w in weights.values()) // group, 4.0, 0
    else:
        groups, zero, tokens = row_groups(base, group), 0 if c["symmetric"] else c["bits"] / 8, int(calib.numel())
    return {"perplexity": ppl, "seconds": meta["seconds"], "mb": storage_mb(base, c["bits"], groups, zero),
            "impl": meta["version"], "settings": meta["settings"], "calib_tokens": tokens, "max_levels": levels,
            "runs_here": "yes", "peer_torch": meta["torch"]}  # fmt: skip


@contextlib.contextmanager
def upper_cholesky() -> Iterator[None]:
    """ORT's gptq() takes ``np.linalg.cholesky(inv(H)).T`` (upper U) and then reads its columns ``Hinv[i:, i]``
    (zero below the diagonal); inside this context that call yields the lower factor, so the columns it reads are
    U's rows, the reference GPTQ's ``Hinv[i, i:]``."""
    orig = np.linalg.cholesky
    np.linalg.cholesky = lambda a: orig(a).T  # type: ignore[assignment]
    try:
        yield
    finally:
        np.linalg.cholesky = orig  # type: ignore[assignment]


def stored(q: np.ndarray, g: int) -> np.ndarray:
    """What ORT's gptq_quantize writes for a fake-quant Q [K, N]: quant_tensor(Q, 'sym', 'uint') per K group."""
    from onnxruntime.quantization.neural_compressor.weight_only import pad_tensor, quant_tensor

    k = q.shape[0]
    codes, scale, zero = quant_tensor(pad_tensor(q, g, math.ceil(k / g)).T, 4, g, "sym", "uint")
    return ((codes - zero) * scale).reshape(q.shape[1], -1)[:, :k].T  # type: ignore[no-any-return]


def out_err(q: np.ndarray, w: np.ndarray, hess: np.ndarray) -> float:
    d = q - w
    return float(np.trace(d.T @ hess @ d))


def ort_gptq_check(base: torch.nn.Module, calib: torch.Tensor, layers: list[str]) -> dict[str, Any]:
    """Layer output error of ORT's own gptq() relative to RTN on its grid (int4 g128 sym, ragged, layout W[K, N])."""
    from onnxruntime.quantization.neural_compressor.weight_only import gptq

    targets = block_targets(base)
    xs: dict[str, list[torch.Tensor]] = {n: [] for n in layers}
    hooks = [targets[n].register_forward_hook(lambda m, i, o, n=n: xs[n].append(i[0].reshape(-1, i[0].shape[-1])))
             for n in layers]  # fmt: skip
    with torch.no_grad():
        base(calib)
    for h in hooks:
        h.remove()
    out = {}
    for name in layers:
        x = torch.cat(xs[name]).double().numpy()
        hess = 2 * x.T @ x / x.shape[0]
        w = targets[name].weight.detach().double().numpy().T.copy()  # [K, N] as the ONNX initializer
        g = 128
        q_ort = gptq(w.copy(), hess.copy(), num_bits=4, group_size=g, scheme="sym")
        with upper_cholesky():
            q_fixed = gptq(w.copy(), hess.copy(), num_bits=4, group_size=g, scheme="sym")
        rtn = out_err(stored(w, g), w, hess)
        out[name] = {
            "ort_gptq_Q": out_err(q_ort, w, hess) / rtn,
            "ort_gptq_stored": out_err(stored(q_ort, g), w, hess) / rtn,
            "fixed_gptq_Q": out_err(q_fixed, w, hess) / rtn,
            "fixed_gptq_stored": out_err(stored(q_fixed, g), w, hess) / rtn,
        }
    return out


def main() -> None:
    d = lq.parser().parse_args([])  # lm_quantization.py's defaults: the same windows, calibration, threads
    ap = argparse.ArgumentParser()
    ap.add_argument("--peers", nargs="+", default=PEERS, choices=PEERS + OURS)
    ap.add_argument("--grids", nargs="+", default=d.grids)
    ap.add_argument("--threads", type=int, default=d.threads)
    ap.add_argument("--llmc-python", default="/work/venv-llmc/bin/python")
    ap.add_argument("--hqq-python", default="/work/venv-hqq/bin/python")
    ap.add_argument("--gptqmodel-python", default="/work/venv-gptqmodel/bin/python")
    ap.add_argument("--check", action="store_true", help="only the ORT gptq() layer check")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    base = load_lm("smollm2-135m")
    data = load_text("shakespeare", base, window=d.window, limit=max(d.eval, d.calib))
    test, calib = data.test.take(d.eval), data.train.x[: d.calib]
    ref = perplexity(base, test.x, batch_size=4)["perplexity"]
    ours = json.loads((lq.OUT / "lm_quantization.json").read_text())["setup"]["fp32_perplexity"]
    print(f"fp32 ppl {ref:.4f} (lm_quantization.json: {ours:.4f})", flush=True)
    setup = {"model": "smollm2-135m", "eval_tokens": int(test.x.numel()), "window": d.window, "threads": args.threads,
             "calib_tokens": int(calib.numel()), "ort_gptq_calib_tokens": d.ort_calib * d.window,
             "fp32_perplexity": ref, "fp32_perplexity_lm_quantization": ours}  # fmt: skip
    if args.check:
        layers = ["model.layers.0.self_attn.q_proj", "model.layers.14.mlp.down_proj", "model.layers.29.mlp.up_proj"]
        check = ort_gptq_check(base, calib[: d.ort_calib], layers)
        print(json.dumps(check, indent=1), flush=True)
        merge(setup, None, check)
        return
    if not (HF / "config.json").is_file():
        save_hf_folder(base, HF)
    for grid in args.grids:
        for peer in args.peers:
            load0 = os.getloadavg()[0]
            print(f"{grid} {peer} ...", flush=True)
            if peer in OURS:
                name = peer.removeprefix("slimtune-")
                row = lq.ours(name, lq.configs(grid, d.calib, d.awq_grid)[name], base, test.x, calib)
                tokens = 0 if name == "rtn" else int(calib.numel())
                row.update(runs_here="yes", settings=row.pop("options"), calib_tokens=tokens)
            elif peer.startswith("ort-gptq"):
                if lq.parse_grid(grid)["bits"] != 4:
                    row: dict[str, Any] = {"runs_here": ORT_NO_3BIT, "impl": "onnxruntime " + lq._ort_version()}
                else:
                    ensure_bundle(base, data.test.x)
                    fix = upper_cholesky() if peer == "ort-gptq-cholfix" else contextlib.nullcontext()
                    with fix:  # cholfix: ORT's own GPTQ with the factor's row read, its re-quantization unchanged
                        row = lq.ort_row("ort-gptq", grid, test, calib[: d.ort_calib], args.threads)
                    cfg = {**ORT_GPTQ, "cholesky_row_fixed": peer == "ort-gptq-cholfix"}
                    row.update(calib_tokens=int(calib[: d.ort_calib].numel()), runs_here="yes", settings=cfg)
            else:
                row = subprocess_peer(peer, grid, base, test.x, calib, args)
            row.update(grid=grid, peer=peer, load_avg=[load0, os.getloadavg()[0]], commit=commit())
            if "perplexity" in row:
                row["delta_pct"] = 100 * (row["perplexity"] / ref - 1)
            print(f"{grid} {peer}: {row.get('perplexity', '-')} {row.get('delta_pct', '')} {row['runs_here']}",
                  flush=True)  # fmt: skip
            merge(setup, row, None)


def ensure_bundle(base: torch.nn.Module, test_x: torch.Tensor) -> None:
    """slimtune's fp32 ONNX of SmolLM2 (lm_baseline.py's export, made here when that cache is absent)."""
    if (lq.BUNDLE / "model.onnx").is_file():
        return
    from slimtune.export.lm_bundle import export_lm_bundle
    from slimtune.models.lm import lm_tokenizer

    export_lm_bundle(base, lm_tokenizer(base).tokenizer, lq.BUNDLE, windows=test_x[-4:, :64], force=True)


def merge(setup: dict[str, Any], row: dict[str, Any] | None, check: dict[str, Any] | None) -> None:
    path = lq.OUT / "lm_quant_peers.json"
    old = json.loads(path.read_text()) if path.is_file() else {}
    rows = [r for r in old.get("rows", []) if row is None or (r["grid"], r["peer"]) != (row["grid"], row["peer"])]
    result = {"setup": {**setup, "commit": commit()}, "rows": rows + ([row] if row else []),
              "ort_gptq_check": check if check is not None else old.get("ort_gptq_check")}  # fmt: skip
    ref = json.loads((lq.OUT / "lm_quantization.json").read_text())
    path.write_text(json.dumps(result, indent=2))
    (lq.OUT / "lm_quant_peers.md").write_text(render(result, ref))


def render(result: dict[str, Any], ours: dict[str, Any]) -> str:
    s = result["setup"]
    order = {g: i for i, g in enumerate(["int4-g128-sym", "int4-g64-sym", "int3-g64-asym"])}
    rows = sorted(result["rows"], key=lambda r: (order.get(r["grid"], 9), r.get("delta_pct", 1e9)))
    same = abs(s["fp32_perplexity"] - s["fp32_perplexity_lm_quantization"]) < 1e-3
    lines = [
        "# Peers' weight-only quantizers on SmolLM2-135M (beside lm_quantization.md)",
        "",
        f"fp32 perplexity {s['fp32_perplexity']:.2f} on the first {s['eval_tokens']} tokens of the Shakespeare test "
        f"plays (windows of {s['window']}), {'the same as' if same else 'DIFFERENT from'} lm_quantization.json "
        f"({s['fp32_perplexity_lm_quantization']:.2f}); {s['threads']} thread(s); commit {s['commit']}. Every Linear "
        "of the decoder blocks is quantized; embedding and tied lm_head stay fp32. MB: ORT: the .onnx file; others: "
        "computed as MatMulNBits would store them (packed codes, fp32 scales, zero points: packed integers, or fp32 "
        "for hqq's float zero points). Quantize s: wall time of the peer's quantize call alone on a shared 2-core "
        "machine (load average in the JSON): compare within a run only. Calibration: windows of the train plays.",
        "",
        "| grid | peer | implementation | perplexity | Δ vs fp32 | MB | quantize s | calib tokens | runs here? |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "perplexity" in r:
            lines.append(
                f"| {r['grid']} | {r['peer']} | {r['impl']} | {r['perplexity']:.2f} | {r['delta_pct']:+.1f}% "
                f"| {r['mb']:.1f} | {r['seconds']:.0f} | {r['calib_tokens']:,} | {r['runs_here']} |"
            )
        else:
            lines.append(f"| {r['grid']} | {r['peer']} | {r['impl']} | — | — | — | — | — | {r['runs_here']} |")
    best = {}
    for r in ours["rows"]:
        if r["grid"] not in best or r["delta_pct"] < best[r["grid"]]["delta_pct"]:
            best[r["grid"]] = r
    lines += [
        "",
        "slimtune's best per grid (lm_quantization.md): "
        + "; ".join(f"{g} {r['method']} ({r['impl']}) {r['delta_pct']:+.1f}%" for g, r in best.items())
        + ".",
    ]
    lines += ["", "## Notes (measured here)", "", *NOTES]
    settings = [f"- {r['grid']} {r['peer']}: {json.dumps(r['settings'])}" for r in rows if r.get("settings")]
    if settings:
        lines += ["", "Settings per row (peer defaults unless named):", "", *settings]
    check = result.get("ort_gptq_check")
    if check:
        lines += [
            "",
            "## Why ORT's GPTQ is worse than RTN",
            "",
            "ORT's `gptq()` (onnxruntime/quantization/neural_compressor/weight_only.py) on single SmolLM2 layers,"
            f" int4 g128 sym, Hessian of {s['ort_gptq_calib_tokens']} calibration tokens; layer output error "
            "tr(ΔW H ΔWᵀ) as a share of RTN on gptq()'s own grid (step 2·max|W|/15, zero point 8; 1.0 = no better"
            " than RTN). Cholesky row fixed: the same gptq() with the factor transposed (`upper_cholesky`).",
            "",
            "| layer | ORT gptq Q | ORT stored codes | Cholesky row fixed: Q | fixed, stored |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {n} | {c['ort_gptq_Q']:.3f} | {c['ort_gptq_stored']:.3f} | {c['fixed_gptq_Q']:.3f} | "
            f"{c['fixed_gptq_stored']:.3f} |"
            for n, c in check.items()
        ]
        lines += ["", *CAUSE]
    return "\n".join(lines) + "\n"


NOTES = [
    "- hqq is asymmetric only and keeps float zero points (its optimizer re-fits the zero as a float even with",
    "  round_zero). On this model float zero points are what costs most: the min/max control (optimize=False) is",
    "  plain float-zero RTN, while slimtune's RTN on the same range with an integer zero point gives +27.4% (int4",
    "  g128) / +176.8% (int3 g64) in lm_quantization.md. hqq's default axis=0 is its better setting here; its groups",
    "  then run strided down the flattened weight (not along a row's columns), a layout MatMulNBits cannot store.",
    "- gptqmodel 7.7.0 needs torch >= 2.14.1; 7.6.0 installs beside torch 2.13.0 CPU (its own venv, ~2.5 min). With",
    "  its defaults it refuses to start on this 2-core machine (its model-loader pool asks for 2 CPU workers, the",
    "  default gives (cores + 1) // 2 = 1); GPTQMODEL_CPU_WORKERS=2 runs it. Its defaults: act_group_aware ordering,",
    "  damp 0.05, no desc_act, and on CPU the model in bfloat16 (gptqmodel-2workers; -fp32 loads it in fp32). Its",
    "  weights come from its saved checkpoint, dequantized by its own torch kernel; that kernel's logits differ from",
    "  the dequantized fp32 model's by the max in the JSON (bf16 rows ~1.2-1.6, its bf16 arithmetic; fp32 rows,",
    "  reloaded in fp16 as its kernel refuses fp32, ~0.15): each row scores its codes.",
    "- llm-compressor 0.14 needs transformers 5.17 (slimtune's venv has 5.25), so it runs in its own venv. It refuses",
    "  groups of 128 on SmolLM2's 576 columns; with bypass_divisibility_checks its observer fails (error in the row).",
    "- Quantize times come from other runs and loads than lm_quantization.md's (load average per row in the JSON):",
    "  indicative only.",
]


CAUSE = [
    "Two defects, both in `weight_only.py`: (1) `gptq()` keeps W as [K, N] and takes `Hinv = cholesky(inv(H)).T`",
    "(upper triangular) but then propagates each column's error with `Hinv1[i:, i]` and `Hinv[i2:, i1:i2]` — the",
    "part below the diagonal, all zeros — so no error is ever fed forward and its output Q is RTN on GPTQ's grid",
    "(the reference reads the row, `Hinv1[i, i:]`); (2) `gptq_quantize` then re-quantizes Q into MatMulNBits codes",
    "with `quant_tensor(..., 'sym', 'uint')`, whose step is 2·max|Q|/15 — not GPTQ's 2·max|W|/15 — so with the",
    "symmetric scheme every weight is rounded a second time onto a grid ~1/15 off (asymmetric: the min/max of Q",
    "reproduce its grid when Q reaches both ends).",
]


if __name__ == "__main__":
    main()
