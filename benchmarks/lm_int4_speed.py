"""SmolLM2-135M int4 in ONNX Runtime's MatMulNBits vs fp32: bytes on disk, parity, decode and prefill tokens/s, and
a 4-bit bundle generating through `slimtune generate` with torch blocked.

Bundles (all through ``export_lm_bundle``, parity-checked): fp32; int4 RTN groups of 32 symmetric with
``accuracy_level`` 4 (int8 activations) and the same file set to 0 (fp32 activations). Timing: ``lm_bench`` at
batch 1 and 8, 2 threads, rounds interleaved (medians). Writes benchmarks/results/lm_int4_speed.{json,md}.
Run: ``PYTHONPATH=src python benchmarks/lm_int4_speed.py``.
"""

from __future__ import annotations

import copy
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from slimtune.export.lm_bundle import export_lm_bundle
from slimtune.export.lm_nbits import set_accuracy_level
from slimtune.export.lm_onnx import LMExportConfig
from slimtune.models.lm import lm_tokenizer, load_lm
from slimtune.quantize.weight_only import RTNConfig, quantize_lm_
from slimtune.runtime.lm_bench import lm_bench

BENCH = Path(__file__).resolve().parent
CACHE, RESULTS = BENCH / ".cache" / "int4", BENCH / "results"
PROMPT = "To be, or not to be, that is the question:"


def main() -> None:
    torch.set_num_threads(2)
    base = load_lm("smollm2-135m")
    tok = lm_tokenizer(base)
    text = " ".join(
        [PROMPT, "Whether 'tis nobler in the mind to suffer the slings and arrows of outrageous fortune"] * 8
    )
    ids = tok.encode(text)
    windows = torch.tensor([ids[i : i + 48] for i in (0, 48)])
    check = LMExportConfig(greedy_tokens=16, prompts=2, windows=2, window_length=48)
    bundles, reports, export_s = {}, {}, {}
    t0 = time.perf_counter()
    bundles["fp32"] = export_lm_bundle(base, tok.tokenizer, CACHE / "fp32", windows=windows, config=check, force=True)
    export_s["fp32"] = time.perf_counter() - t0
    model = copy.deepcopy(base)
    t0 = time.perf_counter()
    quantize_lm_(model, RTNConfig(bits=4, group_size=32, symmetric=True))
    bundles["int4-acc4"] = export_lm_bundle(model, tok.tokenizer, CACHE / "int4", windows=windows, config=check,
                                            force=True)  # fmt: skip
    export_s["int4-acc4"] = time.perf_counter() - t0
    shutil.rmtree(CACHE / "int4-acc0", ignore_errors=True)
    bundles["int4-acc0"] = Path(shutil.copytree(CACHE / "int4", CACHE / "int4-acc0"))
    set_accuracy_level(bundles["int4-acc0"] / "model.onnx", 0)
    for name, b in bundles.items():
        reports[name] = json.loads((b / "bundle.json").read_text())["parity"]
    runs: dict[str, list[dict]] = {k: [] for k in bundles}
    for _ in range(2):
        for name, b in bundles.items():
            runs[name].append(lm_bench(b, batch_sizes=(1, 8), prompt_tokens=32, new_tokens=32, threads=2, repeats=2))
    rows = []
    for name in bundles:
        files = runs[name][0]["model_bytes"]
        for i, batch in enumerate((1, 8)):
            decode = statistics.median(r["rows"][i]["decode_tokens_per_s"] for r in runs[name])
            prefill = statistics.median(r["rows"][i]["prefill_tokens_per_s"] for r in runs[name])
            rows.append({"bundle": name, "batch": batch, "bytes": files, "decode_tokens_per_s": decode,
                         "prefill_tokens_per_s": prefill})  # fmt: skip
    fp = {r["batch"]: r for r in rows if r["bundle"] == "fp32"}
    for r in rows:
        r["decode_vs_fp32"] = r["decode_tokens_per_s"] / fp[r["batch"]]["decode_tokens_per_s"]
        r["prefill_vs_fp32"] = r["prefill_tokens_per_s"] / fp[r["batch"]]["prefill_tokens_per_s"]
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from slimtune.cli.main import main\n"
        f"rc = main(['generate', {str(bundles['int4-acc4'])!r}, {PROMPT!r}, '--max-new-tokens', '32'])\n"
        "assert 'torch' not in [k for k, v in sys.modules.items() if v is not None]\n"
        "sys.exit(rc)\n"
    )
    gen = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    generated = {"rc": gen.returncode, "stdout": gen.stdout.strip(), "stderr": gen.stderr.strip()[-400:]}
    result = {"rows": rows, "parity": reports, "export_seconds": export_s, "generate": generated}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "lm_int4_speed.json").write_text(json.dumps(result, indent=2, default=str))
    lines = [
        "# SmolLM2-135M: int4 MatMulNBits vs fp32 in ONNX Runtime (2 threads, shared 2-core machine)",
        "",
        "| bundle | batch | MB on disk | decode tok/s | × fp32 | prefill tok/s | × fp32 |",
        "|---|---|---|---|---|---|---|",
        *(f"| {r['bundle']} | {r['batch']} | {r['bytes'] / 1e6:.1f} | {r['decode_tokens_per_s']:.1f} | "
          f"{r['decode_vs_fp32']:.2f} | {r['prefill_tokens_per_s']:.1f} | {r['prefill_vs_fp32']:.2f} |" for r in rows),
        "",
        "Parity (accuracy_level 0 check of the int4 codes, then the level set): "
        + "; ".join(f"{k}: max|Δlogit| {v['max_abs_diff']:.2g}, greedy identical {v['greedy_identical']}"
                    + (f", at level 4: max|Δ| {v['fast']['max_abs_diff']:.2g}, top-1 {v['fast']['top1_agreement']:.1%}"
                       if "fast" in v else "") for k, v in reports.items()),
        "",
        f"`slimtune generate` on the int4 bundle with torch blocked (exit {gen.returncode}):",
        "",
        "```",
        gen.stdout.strip(),
        "```",
    ]  # fmt: skip
    (RESULTS / "lm_int4_speed.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
